"""The stage framework: each stage owns a folder under the workdir, stamped with a fingerprint.

A stage writes into a scratch folder that replaces its output folder only on success, so a killed
run never leaves a half-written artifact that looks finished; re-running the same command reuses
that scratch folder, so training stages resume from the checkpoints they left in it. The fingerprint
(`fingerprint.json`) holds the config sections the stage reads, the fingerprints of the stages it
reads from and the version of the stage's code; a stage whose fingerprint matches is skipped, one
whose fingerprint differs is an error unless --overwrite. The same rule keeps interrupted work: a
scratch folder made with other settings (its marker holds the fingerprint it was made for) is
refused with the settings that differ unless --overwrite, which discards it; HOW_NOT_WHAT settings
are in no fingerprint, so changing them resumes.
"""

import dataclasses
import hashlib
import json
import os
import time
from typing import Callable

import jax
import ml_collections

from semrec_jax import console, multihost, storage
from semrec_jax.data.errors import DataError

FINGERPRINT = "fingerprint.json"


class StageError(RuntimeError):
  """A stage cannot run as asked (unknown name, stale artifacts, missing upstream)."""


class Interrupted(RuntimeError):
  """Ctrl-C (or SIGTERM) stopped a stage: what it wrote so far is kept for the next run."""

  def __init__(self, stage: str, scratch: str, detail: str = ""):
    super().__init__(f"interrupted during stage {stage!r}{' (' + detail + ')' if detail else ''}; "
                     f"its work so far is kept in {scratch} and running the same command again "
                     "resumes it")


@dataclasses.dataclass(frozen=True)
class Stage:
  name: str
  output: str  # folder under the workdir that holds the artifacts
  run: Callable  # run(config, workdir, out_dir) writes the stage's artifacts into out_dir
  config_keys: tuple[str, ...]  # top-level config sections the artifacts depend on
  depends_on: tuple[str, ...] = ()
  multihost: bool = False  # runs on every JAX process of a multi-host job (else on one process)
  # version(config): raised by hand when the code makes other artifacts from the same config and
  # inputs (for the configs it concerns), so a folder made before is refused rather than silently
  # reused, also as another stage's input (pipeline.py lists what changed).
  version: Callable = lambda config: 1


def read_fingerprint(workdir: str, stage: Stage) -> dict | None:
  path = os.path.join(workdir, stage.output, FINGERPRINT)
  return storage.read_json(path) if storage.exists(path) else None


# Settings that change how a stage runs, never what it writes (the tests check both ways give the
# same artifacts): left out of fingerprints, so changing them neither redoes nor refuses a stage.
HOW_NOT_WHAT = ("data.runner", "data.beam_options", "data.beam_kcore_rounds", "data.beam_dir",
                "lm.data_workers", "lm.preemption_check_every", "prefer.micro_batches")

# Settings added after folders were made without them, with the value that makes what those
# folders hold: left out of fingerprints at that value, so the folders stay valid (any other value
# is a config change as usual).
ADDED_AT_OLD_BEHAVIOUR = {"ids.last_level": "", "ids.collision_level": "always",
                          "baselines.sid_dim": 0, "prefer.supervised_weight": 0.0,
                          "embed.text_fields": ["title", "attributes", "categories",
                                                "description", "features"]}


def _plain(value):
  """A config value as JSON reads it back (a tuple becomes a list)."""
  return json.loads(json.dumps(value, default=str))


def fingerprint(config, workdir: str, stage: Stage, registry: dict[str, Stage]) -> dict:
  upstream = {}
  for dep in stage.depends_on:
    found = read_fingerprint(workdir, registry[dep])
    if found is None:
      raise StageError(f"stage {stage.name!r} needs the output of {dep!r}, which is not in "
                       f"{workdir}; run with --stages={dep},{stage.name}")
    names = list(registry)
    redo = ",".join(names[names.index(dep):names.index(stage.name) + 1])
    check_version(found, registry[dep], os.path.join(workdir, registry[dep].output),
                  f" --stages={redo}")
    upstream[dep] = found["sha256"]
  sections = {key: config[key].to_dict() if hasattr(config[key], "to_dict") else config[key]
              for key in stage.config_keys}
  for dotted in (*HOW_NOT_WHAT, *ADDED_AT_OLD_BEHAVIOUR):
    section, _, field = dotted.partition(".")
    values = sections.get(section)
    if isinstance(values, dict) and field in values and (
        dotted in HOW_NOT_WHAT or _plain(values[field]) == ADDED_AT_OLD_BEHAVIOUR[dotted]):
      del values[field]
  body = {"stage": stage.name, "config": sections, "upstream": upstream}
  version = stage.version(config)
  if version > 1:  # 1 is left out: folders made before versions existed stay valid
    body["version"] = version
  digest = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()
  return {**body, "sha256": digest}


def check_version(found: dict, stage: Stage, folder: str, redo: str = "") -> None:
  """Refuses a stage folder (`found`: its fingerprint) made by another version of the code than
  today's makes for the config the folder was made with (a config change is reported apart)."""
  made_with = ml_collections.ConfigDict(found["config"]) if found.get("config") else None
  made_by, now = found.get("version", 1), stage.version(made_with) if made_with else 1
  if made_by != now:
    raise StageError(f"stage {stage.name!r}: {folder} was made by version {made_by} of the "
                     f"stage's code, which is now version {now} (what changed: "
                     f"semrec_jax/pipeline.py); pass --overwrite{redo} to redo it")


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
  out = []
  for key in sorted(set(old) | set(new)):
    a, b = old.get(key), new.get(key)
    if isinstance(a, dict) and isinstance(b, dict):
      out += _differences(a, b, f"{prefix}{key}.")
    elif a != b:
      out.append(f"{prefix}{key}: {a!r} -> {b!r}")
  return out


def _as_set(fingerprint_body: dict) -> dict:
  """A fingerprint's config and upstream with each ADDED_AT_OLD_BEHAVIOUR setting it leaves out
  written back at that value, so a message names what the folder holds ('auto' -> 'always', not
  'auto' -> None)."""
  body = json.loads(json.dumps({k: fingerprint_body.get(k) for k in ("config", "upstream")},
                               default=str))  # a copy; tuples compare as saved lists
  for dotted, value in ADDED_AT_OLD_BEHAVIOUR.items():
    section, _, field = dotted.partition(".")
    values = (body["config"] or {}).get(section)
    if isinstance(values, dict) and field not in values:
      values[field] = value
  return body


def _changes(found: dict, wanted: dict) -> str:
  """The settings (and inputs) that differ between a saved fingerprint and the wanted one."""
  return "; ".join(_differences(_as_set(found), _as_set(wanted))[:10])


SCRATCH_MARKER = ".wanted_fingerprint"  # in a scratch folder: the fingerprint it is made for


def _scratch_marker(scratch: str) -> dict | None:
  """The fingerprint a scratch folder was made for; {"sha256": hash} from an older marker that
  holds only the hash; None without a marker (a folder nothing can resume from)."""
  marker = os.path.join(scratch, SCRATCH_MARKER)
  if not storage.exists(marker):
    return None
  raw = storage.read_text(marker).strip()
  try:
    found = json.loads(raw)
  except ValueError:
    found = None
  return found if isinstance(found, dict) and "sha256" in found else {"sha256": raw}


def _judge_scratch(scratch: str, stage: Stage, wanted: dict, overwrite: bool) -> str:
  """What to do with the scratch folder: "resume" one an interrupted run left with the same
  fingerprint, "discard" one made for other settings with --overwrite, or start a "new" one (no
  folder, or one without a marker: nothing can resume from it). Without --overwrite, other
  settings are refused rather than the work deleted by a config change."""
  found = _scratch_marker(scratch)
  if found is None:
    return "new"
  if found["sha256"] == wanted["sha256"]:
    return "resume"
  if overwrite:
    return "discard"
  if "config" in found:
    made_by, now = found.get("version", 1), wanted.get("version", 1)
    changes = _changes(found, wanted) or f"version {made_by} -> {now} of the stage's code"
  else:
    changes = "settings unknown: an older semrec_jax saved only their hash"
  raise StageError(f"stage {stage.name!r}: {scratch} holds an interrupted run's work, made with "
                   f"other settings ({changes}); run again with those settings to resume it, or "
                   "pass --overwrite to discard it")


def _scratch(workdir: str, stage: Stage, wanted: dict, overwrite: bool = False) -> tuple[str, bool]:
  """The stage's working folder: kept when an interrupted run with the same fingerprint left it
  (a training stage resumes from the checkpoints inside), refused when made for other settings
  (emptied with --overwrite). Every process judges it (all read the same workdir) before the
  primary changes it, so they agree and a refusal stops them all; then the primary prepares it
  while the others wait. Returns (folder, whether it is resumed)."""
  scratch = os.path.join(workdir, f".{stage.output}.incomplete")
  judged = _judge_scratch(scratch, stage, wanted, overwrite)
  multihost.sync(f"scratch-judged:{stage.name}")
  if multihost.is_primary():
    if judged == "resume":
      console.say(f"{stage.name}: resuming from {scratch}")
    else:
      if judged == "discard":
        console.say(f"{stage.name}: --overwrite: discarding {scratch} (an interrupted run's work "
                    "with other settings)")
      storage.remove_tree(scratch)
      storage.write_json(os.path.join(scratch, SCRATCH_MARKER), wanted, sort_keys=True,
                         default=str)
  multihost.sync(f"scratch:{stage.name}")
  return scratch, judged == "resume"


def check_plan(workdir: str, names: list[str], registry: dict[str, Stage],
               overwrite: bool = False) -> None:
  """Refuses, before anything runs, a list of stages one of which reads a stage it does not run
  whose folder is missing, or was made from other inputs than it will have (from an older `lm`
  than the one there now, or than the one this run redoes: `--stages=lm,eval` after a new `lm`
  would evaluate the old `prefer` checkpoint). Found at that stage's turn, either mistake would
  cost every stage before it (an hour of `lm` before `eval` finds no `prefer`)."""
  asked = [n for n in registry if n in names]
  found = {n: read_fingerprint(workdir, stage) for n, stage in registry.items()}  # read once
  missing, todo = [], list(asked)
  while todo:  # a missing stage's own inputs may be missing too
    for dep in registry[todo.pop()].depends_on:
      if dep not in asked and dep not in missing and found[dep] is None:
        missing.append(dep)
        todo.append(dep)
  if missing:
    needed = ", ".join(repr(n) for n in registry if n in missing)
    runs = ",".join(n for n in registry if n in asked or n in missing)
    raise StageError(f"the stages asked for need the output of {needed}, not found in "
                     f"{workdir}; run with --stages={runs}")
  redone = set()  # asked stages that will write their folder anew (one that differs refuses)
  for name in asked:
    if overwrite or found[name] is None or any(d in redone for d in registry[name].depends_on):
      redone.add(name)
  stale = {}
  for dep in {d for n in asked for d in registry[n].depends_on} - set(asked):
    for source, sha in (found[dep].get("upstream") or {}).items():
      now = found.get(source)
      if source in redone or (now is not None and now["sha256"] != sha):
        stale[dep] = source
        break
  if stale:
    runs = ",".join(n for n in registry if n in asked or n in stale)
    what = "; ".join(
        f"{d!r} was made from another {stale[d]!r} than "
        f"{'this run makes' if stale[d] in redone else 'the one there now'}"
        for d in registry if d in stale)
    raise StageError(f"the stages asked for read stages made from older inputs in {workdir} "
                     f"({what}); run with --stages={runs}")


def run(config, workdir: str, names: list[str], registry: dict[str, Stage],
        overwrite: bool = False) -> None:
  """Runs the named stages in pipeline order, skipping those whose artifacts are up to date."""
  check_plan(workdir, names, registry, overwrite)
  for name in [n for n in registry if n in names]:
    stage = registry[name]
    wanted = fingerprint(config, workdir, stage, registry)
    found = read_fingerprint(workdir, stage)
    out_dir = os.path.join(workdir, stage.output)
    if found and not overwrite:
      if found["sha256"] == wanted["sha256"]:
        console.say(f"{name}: up to date in {out_dir}, skipped")
        continue
      check_version(found, stage, out_dir)
      raise StageError(f"stage {name!r}: {out_dir} was made with a different config "
                       f"({_changes(found, wanted)}); pass --overwrite to redo it")
    if jax.process_count() > 1 and not stage.multihost:
      raise StageError(f"stage {name!r} runs in one process: run it on one worker first "
                       f"(WORKER=0 launch/tpu_vm.sh run ... --stages={name}), then the "
                       "multi-host stages on all workers")
    scratch, resumed = _scratch(workdir, stage, wanted, overwrite)
    console.say(f"{name}: running")
    started = time.time()
    try:
      stage.run(config, workdir, scratch)
    except KeyboardInterrupt as e:
      raise Interrupted(name, scratch, str(e).split(";")[0]) from None
    except (StageError, DataError):
      # Refused settings or input: a folder this run started holds nothing to resume, and left
      # it would refuse the corrected settings.
      if not resumed and multihost.is_primary():
        storage.remove_tree(scratch)
      raise
    multihost.sync(f"ran:{name}")
    if multihost.is_primary():
      # The fingerprint goes in last: only a finished folder has one. On a bucket the move is a
      # copy; one cut short leaves the scratch folder (and its marker) for the next run.
      storage.remove_tree(out_dir)
      storage.move(scratch, out_dir)
      storage.path(os.path.join(out_dir, SCRATCH_MARKER)).unlink()
      storage.write_json(os.path.join(out_dir, FINGERPRINT), wanted, sort_keys=True, default=str)
    multihost.sync(f"done:{name}")
    console.say(f"{name}: done in {console.duration(time.time() - started)} -> {out_dir}")
