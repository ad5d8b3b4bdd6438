"""The docs stay true to the code: the README's test command is what CI runs, and every config
file, module, script, path, config override and command-line flag that README.md and docs/*.md
name exists. Reads files and configs only (no JAX computation)."""

import ast
import glob
import importlib
import os
import re
import subprocess

import ml_collections
import pytest

from tests.conftest import REPO

DOCS = ["README.md"] + sorted(os.path.relpath(p, REPO)
                              for p in glob.glob(os.path.join(REPO, "docs", "*.md")))
# Docs whose config overrides must resolve: the user's guide and the design. docs/benchmarks.md
# records commands as they were run, some with fields since renamed or placeholders (<task>).
CURRENT_DOCS = ["README.md", "docs/design.md"]
README_MAX_LINES = 330
DEFAULT_CONFIG = "configs/demo.py"  # what a command without --config= is checked against

# Flags absl itself defines for every absl command (absl.app and absl.logging).
ABSL_FLAGS = {"help", "helpshort", "helpfull", "helpxml", "flagfile", "undefok", "verbosity", "v",
              "logtostderr", "alsologtostderr", "log_dir", "stderrthreshold", "showprefixforinfo",
              "logger_levels", "only_check_args", "pdb", "pdb_post_mortem", "run_with_pdb",
              "run_with_profiling", "profile_file", "use_cprofile_for_profiling"}
# (script, flag) pairs the docs may name though the script no longer defines them, with the reason.
REMOVED_FLAGS = {
    ("benchmarks/decoder_step.py", "loss_vocab_tile"):
        "docs/benchmarks.md records a GPU row measured with it before it was removed",
}

# The development machine keeps its data one folder above the checkout; nothing in the repository
# may point there (a clone has no such folder). Built in two parts so this file does not match.
OUTSIDE = "../" + "shared"
# Files allowed to name it anyway, with the reason.
OUTSIDE_ALLOWED = {
    "tests/data/test_generic_and_games.py":
        "a test that skips without the full Games folder; the path is its skip reason",
}


def _read(relpath: str) -> str:
  with open(os.path.join(REPO, relpath), encoding="utf-8") as f:
    return f.read()


def _lines(text: str) -> list[str]:
  """Logical lines: a line ending in a backslash continues on the next."""
  out, current = [], ""
  for line in text.splitlines():
    if line.rstrip().endswith("\\"):
      current += line.rstrip()[:-1] + " "
    else:
      out.append(current + line)
      current = ""
  return out + ([current] if current else [])


def _expand(path: str) -> list[str]:
  """`a_{1b,4b}.py` -> [a_1b.py, a_4b.py] (one brace group)."""
  match = re.search(r"\{([^{}]*)\}", path)
  if not match:
    return [path]
  return [path[:match.start()] + part + path[match.end():] for part in match.group(1).split(",")]


# --- config files ------------------------------------------------------------------------------

def _missing_configs(text: str) -> list[str]:
  names = re.findall(r"(?<![\w/])configs/[\w{},]+\.py", text)
  return sorted({path for name in names for path in _expand(name)
                 if not os.path.isfile(os.path.join(REPO, path))})


# --- modules, scripts and repository paths ------------------------------------------------------

def _module_files(module: str) -> list[str] | None:
  """The files `python -m module` runs (package __init__s first), or None when there is none."""
  parts = module.split(".")
  base = os.path.join(REPO, *parts)
  inits = [os.path.join(REPO, *parts[:i], "__init__.py") for i in range(1, len(parts))]
  for candidate in (base + ".py", os.path.join(base, "__main__.py")):
    if os.path.isfile(candidate) and all(os.path.isfile(p) for p in inits):
      return inits + ([os.path.join(base, "__init__.py")] if candidate.endswith("__main__.py")
                      else []) + [candidate]
  return None


def _commands(text: str) -> list[tuple[str, str]]:
  """(kind, name) of every `python -m semrec_jax...` module and `python benchmarks/...` script."""
  found = [("module", m) for m in re.findall(r"python3? -m (semrec_jax(?:\.\w+)*)", text)]
  found += [("script", s) for s in re.findall(r"python3? (benchmarks/\w+\.py)", text)]
  return found


def _missing_commands(text: str) -> list[str]:
  missing = []
  for kind, name in _commands(text):
    exists = (_module_files(name) is not None if kind == "module"
              else os.path.isfile(os.path.join(REPO, name)))
    if not exists:
      missing.append(name)
  return sorted(set(missing))


_PATH = re.compile(r"(?<![\w/.:-])((?:semrec_jax|configs|launch|benchmarks|tests|docs)"
                   r"(?:/(?:[\w.*-]|\{[\w,]+\})+)+/?)")


def _missing_paths(text: str) -> list[str]:
  """Repository paths the text names (`semrec_jax/lm/tasks.py`, `tests/fixtures/make_*.py`)."""
  missing = set()
  for raw in _PATH.findall(text):
    for path in _expand(raw.rstrip(".")):
      if not glob.glob(os.path.join(REPO, path)):
        missing.add(path)
  return sorted(missing)


def _layout_problems(readme: str) -> list[str]:
  """The README's layout block names every top-level module and package of semrec_jax, and
  every name it gives exists."""
  block = readme.split("\n## Code layout", 1)[1].split("```", 2)[1]
  named_files, named_dirs, problems = set(), set(), []
  in_package = False
  for line in block.splitlines():
    top = re.match(r"^([\w.]+)/\s", line)
    sub = re.match(r"^  (\w+)/\s", line)
    if top:
      in_package = top.group(1) == "semrec_jax"
      if not os.path.isdir(os.path.join(REPO, top.group(1))):
        problems.append(f"{top.group(1)}/ (no such folder)")
    elif sub:
      in_package = False
      named_dirs.add(sub.group(1))
    if in_package:
      named_files.update(re.findall(r"\b(\w+\.py)\b", line))
  package = os.path.join(REPO, "semrec_jax")
  files = {f for f in os.listdir(package) if f.endswith(".py") and not f.startswith("_")}
  dirs = {d for d in os.listdir(package)
          if os.path.isfile(os.path.join(package, d, "__init__.py"))}
  problems += [f"semrec_jax/{f} (named, not there)" for f in sorted(named_files - files)]
  problems += [f"semrec_jax/{d}/ (named, not there)" for d in sorted(named_dirs - dirs)]
  problems += [f"semrec_jax/{f} (there, not named)" for f in sorted(files - named_files)]
  problems += [f"semrec_jax/{d}/ (there, not named)" for d in sorted(dirs - named_dirs)]
  return problems


# --- config overrides ----------------------------------------------------------------------------

_CONFIGS = {}


def _config(path: str) -> ml_collections.ConfigDict:
  """A config file's get_config(), imported as semrec_jax.main's --config does (configs/ is a
  package at the repository root, which pytest puts on sys.path)."""
  if path not in _CONFIGS:
    module = importlib.import_module(path[:-len(".py")].replace("/", "."))
    _CONFIGS[path] = module.get_config()
  return _CONFIGS[path]


def _resolves(config, dotted: str) -> bool:
  node = config
  for part in dotted.split("."):
    if not isinstance(node, (ml_collections.ConfigDict, dict)) or part not in node:
      return False
    node = node[part]
  return True


def _unresolved_overrides(text: str) -> list[str]:
  """`--config.a.b` (with or without a value) on a line, checked against that line's
  --config=configs/X.py (else configs/demo.py); bare `config.a.b` against the base config."""
  bad = []
  for line in _lines(text):
    files = re.findall(r"--config=(configs/\w+\.py)", line)
    config = _config(files[0] if files else DEFAULT_CONFIG)
    for dotted in re.findall(r"--config\.([A-Za-z_][\w.]*)", line):
      dotted = dotted.rstrip(".")
      if not _resolves(config, dotted):
        bad.append(f"--config.{dotted} (against {files[0] if files else DEFAULT_CONFIG})")
    for dotted in re.findall(r"(?<![\w.-])config\.([a-z_]+(?:\.[a-z_]\w*)+)", line):
      if not _resolves(_config(DEFAULT_CONFIG), dotted.rstrip(".")):
        bad.append(f"config.{dotted}")
  return sorted(set(bad))


# --- command-line flags --------------------------------------------------------------------------

_FLAG_DEFINITION = re.compile(r"""(?:DEFINE_\w+|add_argument)\(\s*["']-*(\w+)["']""")
_DEFINED = {}


def _imports(path: str) -> list[str]:
  """Files of the semrec_jax modules `path` imports (anywhere in it, lazy imports included)."""
  tree = ast.parse(_read(path))
  modules = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      modules += [a.name for a in node.names if a.name.startswith("semrec_jax")]
    elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("semrec_jax"):
      modules.append(node.module)
      modules += [f"{node.module}.{a.name}" for a in node.names]
  files = []
  for module in modules:
    base = os.path.join(REPO, *module.split("."))
    files += [p for p in (base + ".py", os.path.join(base, "__init__.py")) if os.path.isfile(p)]
  return files


def _defined_flags(files: list[str]) -> set[str]:
  """Flags defined by these files and every semrec_jax module they import, plus absl's own."""
  key = tuple(files)
  if key not in _DEFINED:
    seen, todo, names = set(), list(files), set(ABSL_FLAGS)
    while todo:
      path = todo.pop()
      if path in seen:
        continue
      seen.add(path)
      names.update(_FLAG_DEFINITION.findall(_read(path)))
      todo += _imports(path)
    _DEFINED[key] = names
  return _DEFINED[key]


def _arguments(rest: str) -> list[str]:
  """Shell words up to the first unquoted operator or the end of the inline code span."""
  words, word, quote = [], "", None
  for char in rest:
    if quote:
      if char == quote:
        quote = None
      else:
        word += char
    elif char in "\"'":
      quote = char
    elif char in "`><;|&#":
      break
    elif char.isspace():
      if word:
        words.append(word)
      word = ""
    else:
      word += char
  return words + ([word] if word else [])


def _unknown_flags(text: str) -> list[str]:
  bad = []
  for line in _lines(text):
    for match in re.finditer(r"python3? (?:-m (semrec_jax(?:\.\w+)*)|(benchmarks/\w+\.py))", line):
      module, script = match.groups()
      files = (_module_files(module) if module else
               [os.path.join(REPO, script)] if os.path.isfile(os.path.join(REPO, script)) else None)
      if files is None:
        continue  # reported by test_commands_exist
      defined = _defined_flags(files)
      for word in _arguments(line[match.end():]):
        word = word.strip("[]")
        if not word.startswith("--"):
          continue
        name = word[2:].split("=", 1)[0]
        if name.startswith("config.") or name in defined or (
            name.startswith("no") and name[2:] in defined) or (script, name) in REMOVED_FLAGS:
          continue
        bad.append(f"{module or script} --{name}")
  return sorted(set(bad))


# --- the tests ------------------------------------------------------------------------------------

def test_ci_runs_the_readme_test_command():
  with open(os.path.join(REPO, ".ci", "run")) as f:
    ci_command = [line for line in f if line.startswith("python3 -m venv")][0].strip()
  with open(os.path.join(REPO, "README.md")) as f:
    readme = f.read()
  first_block = readme.split("```bash", 1)[1].split("```", 1)[0]
  commands = [line for line in first_block.splitlines() if line and not line.startswith("#")]
  assert len(commands) == 2
  assert commands[1] == ci_command
  assert "semrec_jax.main --config=configs/demo.py" in commands[0]


@pytest.mark.parametrize("doc", DOCS)
def test_named_configs_exist(doc):
  assert _missing_configs(_read(doc)) == []


@pytest.mark.parametrize("doc", DOCS)
def test_commands_exist(doc):
  text = _read(doc)
  assert _missing_commands(text) == []
  if doc == "README.md":
    assert {"semrec_jax.main", "semrec_jax.chat"} <= {name for _, name in _commands(text)}


@pytest.mark.parametrize("doc", DOCS)
def test_named_paths_exist(doc):
  assert _missing_paths(_read(doc)) == []


def test_readme_layout_matches_the_package():
  assert _layout_problems(_read("README.md")) == []


@pytest.mark.parametrize("doc", CURRENT_DOCS)
def test_config_overrides_resolve(doc):
  assert _unresolved_overrides(_read(doc)) == []


@pytest.mark.parametrize("doc", DOCS)
def test_command_flags_are_defined(doc):
  assert _unknown_flags(_read(doc)) == []


def test_readme_is_a_guide_not_a_log():
  readme = _read("README.md")
  assert len(readme.splitlines()) <= README_MAX_LINES
  for doc in DOCS:
    assert not re.search(r"\bissue \d+", _read(doc), flags=re.I), doc


def test_nothing_points_outside_the_repository():
  try:
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True,
                            check=True).stdout.decode().split("\0")
  except (OSError, subprocess.CalledProcessError):
    pytest.skip("not a git checkout")
  offenders = []
  for path in filter(None, listed):
    full = os.path.join(REPO, path)
    if path in OUTSIDE_ALLOWED or not os.path.isfile(full):
      continue
    with open(full, "rb") as f:
      data = f.read()
    if b"\0" not in data and OUTSIDE.encode() in data:
      offenders.append(path)
  assert not offenders, f"these files name {OUTSIDE}, which a clone does not have: {offenders}"


# The checks above must be able to fail: each finds the fault planted in a line of its own.
@pytest.mark.parametrize("check,text", [
    (_missing_configs, "python -m semrec_jax.main --config=configs/no_such_config.py"),
    (_missing_configs, "configs/tpu_gemma3_{1b,9b}.py"),
    (_missing_commands, "python -m semrec_jax.no_such_module --workdir=W"),
    (_missing_commands, "python benchmarks/no_such_benchmark.py"),
    (_missing_paths, "see `semrec_jax/no_such_module.py`"),
    (_unresolved_overrides,
     "python -m semrec_jax.main --config=configs/games.py --config.lm.no_such_field=1"),
    (_unresolved_overrides, "--config.data.no_such_field=1"),
    (_unresolved_overrides, "the field `config.lm.no_such_field`"),
    (_unknown_flags, "python -m semrec_jax.main --config=configs/demo.py --no_such_flag"),
    (_unknown_flags, "python -m semrec_jax.chat --workdir=W \\\n    --stages=lm"),
    (_unknown_flags, "`python benchmarks/decoder_step.py --model=tiny --no_such_flag=1`"),
    (_layout_problems, "\n## Code layout\n\n```\nsemrec_jax/    main.py, no_such.py\n```\n"),
])
def test_the_checks_find_a_planted_fault(check, text):
  assert check(text) != []


def test_the_checks_accept_what_the_commands_take():
  line = ("python -m semrec_jax.main --config=configs/tpu_gemma3_1b.py --multihost --verbosity=0 "
          "--config.lm.task_weights.next_item=0.0 "
          "\"--config.data.beam_options=--runner=X --project=P\" "
          ">> logs/worker.log --not_a_main_flag")
  assert _unknown_flags(line) == [] and _unresolved_overrides(line) == []
  chat = "python -m semrec_jax.chat --workdir=W --json --prompt \"why #2?\" --k=3"
  assert _unknown_flags(chat) == []
