"""The house rules that a reader relies on: imports run one way (no module of semrec_jax imports,
directly or through others, a module that imports it), modules stay small, and importing the
library changes nothing outside it."""

import ast
import os
import subprocess
import sys

from tests.conftest import REPO

PACKAGE = os.path.join(REPO, "semrec_jax")
MAX_LINES = 450  # "small files, one job each": the largest today is lm/tasks.py (one builder a task)


def _modules() -> dict[str, str]:
  found = {}
  for folder, _, files in os.walk(PACKAGE):
    for name in files:
      if name.endswith(".py"):
        path = os.path.join(folder, name)
        module = os.path.relpath(path[:-3], REPO).replace(os.sep, ".")
        found[module.removesuffix(".__init__")] = path
  return found


def _imports(module: str, path: str, known: set[str]) -> set[str]:
  """The semrec_jax modules `module` imports anywhere in its body (deferred imports count)."""
  out = set()
  with open(path, encoding="utf-8") as f:
    tree = ast.parse(f.read())
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      out |= {a.name for a in node.names if a.name in known}
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      for alias in node.names:
        full = f"{node.module}.{alias.name}"
        out.add(full if full in known else node.module)
  return (out & known) - {module}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """Strongly connected components with more than one module (Tarjan)."""
  index, low, stack, on_stack, found = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in graph[v]:
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        found.append(sorted(component))

  for v in graph:
    if v not in index:
      visit(v)
  return found


def test_no_import_circles():
  modules = _modules()
  graph = {m: _imports(m, p, set(modules)) for m, p in modules.items()}
  # Packages re-export their modules (chat/__init__ imports chat.session): an __init__ is not a
  # cycle with its own members.
  for package in graph:
    graph[package] = {m for m in graph[package] if not m.startswith(package + ".")}
  assert _cycles(graph) == []
  assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_modules_stay_small():
  sizes = {}
  for module, path in _modules().items():
    with open(path, encoding="utf-8") as f:
      sizes[module] = sum(1 for _ in f)
  assert {m: n for m, n in sizes.items() if n > MAX_LINES} == {}


def test_importing_the_library_chooses_no_platform():
  """The platform is the commands' choice (backend.choose in console.parse_flags), not a side
  effect of importing the library or its Python API."""
  env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
  code = ("import os, semrec_jax, semrec_jax.chat, jax; assert 'JAX_PLATFORMS' not in os.environ; "
          "assert not jax.config.jax_platforms, jax.config.jax_platforms")
  subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, check=True, timeout=120)
