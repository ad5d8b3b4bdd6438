"""The stage framework: each stage owns a folder under the workdir, stamped with a fingerprint.

A stage writes into a scratch folder that replaces its output folder only on success, so a killed
run never leaves a half-written artifact that looks finished; re-running the same command reuses
that scratch folder, so training stages resume from the checkpoints they left in it. The fingerprint (`fingerprint.json`)
holds the config sections the stage reads, the fingerprints of the stages it reads from and the
version of the stage's code; a stage whose fingerprint matches is skipped, one whose fingerprint
differs is an error unless --overwrite.
"""

import dataclasses
import hashlib
import json
import os
import time
from typing import Callable

import jax
import ml_collections
from absl import logging

from semrec_jax import console, multihost, storage

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
                "lm.data_workers", "lm.preemption_check_every")


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
  for dotted in HOW_NOT_WHAT:
    section, _, field = dotted.partition(".")
    if isinstance(sections.get(section), dict):
      sections[section].pop(field, None)
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


def _scratch(workdir: str, stage: Stage, wanted: dict) -> str:
  """The stage's working folder: kept when an interrupted run with the same fingerprint left it
  (a training stage resumes from the checkpoints inside), emptied otherwise. Prepared by the
  primary process while the others wait."""
  scratch = os.path.join(workdir, f".{stage.output}.incomplete")
  if multihost.is_primary():
    _prepare_scratch(scratch, stage, wanted)
  multihost.sync(f"scratch:{stage.name}")
  return scratch


def _prepare_scratch(scratch: str, stage: Stage, wanted: dict) -> None:
  marker = os.path.join(scratch, ".wanted_fingerprint")
  if storage.exists(marker) and storage.read_text(marker) == wanted["sha256"]:
    console.say(f"{stage.name}: resuming from {scratch}")
    return
  storage.remove_tree(scratch)
  storage.write_text(marker, wanted["sha256"])


def run(config, workdir: str, names: list[str], registry: dict[str, Stage],
        overwrite: bool = False) -> None:
  """Runs the named stages in pipeline order, skipping those whose artifacts are up to date."""
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
      as_saved = json.loads(json.dumps(wanted, default=str))  # tuples compare as saved lists
      changes = "; ".join(_differences({k: found.get(k) for k in ("config", "upstream")},
                                       {k: as_saved[k] for k in ("config", "upstream")})[:10])
      raise StageError(f"stage {name!r}: {out_dir} was made with a different config ({changes}); "
                       "pass --overwrite to redo it")
    if jax.process_count() > 1 and not stage.multihost:
      raise StageError(f"stage {name!r} runs in one process: run it on one worker first "
                       f"(WORKER=0 launch/tpu_vm.sh run ... --stages={name}), then the "
                       "multi-host stages on all workers")
    scratch = _scratch(workdir, stage, wanted)
    console.say(f"{name}: running")
    started = time.time()
    try:
      stage.run(config, workdir, scratch)
    except KeyboardInterrupt as e:
      raise Interrupted(name, scratch, str(e).split(";")[0]) from None
    multihost.sync(f"ran:{name}")
    if multihost.is_primary():
      # The fingerprint goes in last: only a finished folder has one. On a bucket the move is a
      # copy; one cut short leaves the scratch folder (and its marker) for the next run.
      storage.remove_tree(out_dir)
      storage.move(scratch, out_dir)
      storage.path(os.path.join(out_dir, ".wanted_fingerprint")).unlink()
      storage.write_json(os.path.join(out_dir, FINGERPRINT), wanted, sort_keys=True, default=str)
    multihost.sync(f"done:{name}")
    console.say(f"{name}: done in {console.duration(time.time() - started)} -> {out_dir}")
