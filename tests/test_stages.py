"""Interrupted work in a stage's scratch folder is never deleted by a config change: a re-run with
other settings refuses in one line naming them, the same settings (or ones that change how, not
what) resume, and --overwrite discards it."""

import dataclasses
import json
import os
import socket
import subprocess
import sys

import pytest

from configs import demo
from semrec_jax import defaults, pipeline, stages, storage
from tests.conftest import FAST_COMPILE, REPO


def _interrupted_once(seen: list):
  """A stage's run() that records what its scratch folder holds, writes a checkpoint and is killed
  on its first call (as Ctrl-C stops a training stage)."""

  def run(config, workdir, out_dir):
    seen.append(sorted(os.listdir(out_dir)))
    with open(os.path.join(out_dir, "checkpoint"), "w") as f:
      f.write(f"step {10 * len(seen)}")
    if len(seen) == 1:
      raise KeyboardInterrupt

  return run


def _lm_like(seen: list) -> dict[str, stages.Stage]:
  return {"lm": stages.Stage("lm", output="lm", run=_interrupted_once(seen), config_keys=("lm",))}


def _interrupt(workdir: str, config, registry) -> str:
  with pytest.raises(stages.Interrupted):
    stages.run(config, workdir, ["lm"], registry)
  scratch = os.path.join(workdir, ".lm.incomplete")
  assert sorted(os.listdir(scratch)) == [stages.SCRATCH_MARKER, "checkpoint"]
  return scratch


def test_interrupted_work_of_other_settings_is_refused_not_deleted(tmp_path):
  seen, workdir, config = [], str(tmp_path), defaults.base_config()
  registry = _lm_like(seen)
  scratch = _interrupt(workdir, config, registry)
  changed = defaults.base_config()
  changed.lm.seq_len, changed.lm.max_history = 256, 10
  with pytest.raises(stages.StageError) as refused:
    stages.run(changed, workdir, ["lm"], registry)
  assert str(refused.value) == (
      f"stage 'lm': {scratch} holds an interrupted run's work, made with other settings "
      "(config.lm.max_history: 20 -> 10; config.lm.seq_len: 128 -> 256); run again with those "
      "settings to resume it, or pass --overwrite to discard it")
  assert sorted(os.listdir(scratch)) == [stages.SCRATCH_MARKER, "checkpoint"]
  with open(os.path.join(scratch, "checkpoint")) as f:
    assert f.read() == "step 10"
  assert len(seen) == 1 and not os.path.exists(tmp_path / "lm")

  stages.run(config, workdir, ["lm"], registry)  # the old settings resume it
  assert seen[1] == [stages.SCRATCH_MARKER, "checkpoint"]
  assert sorted(os.listdir(tmp_path / "lm")) == ["checkpoint", "fingerprint.json"]
  assert not os.path.exists(scratch)


def test_how_not_what_settings_resume_and_overwrite_discards(tmp_path, capsys):
  seen, workdir, config = [], str(tmp_path), defaults.base_config()
  registry = _lm_like(seen)
  _interrupt(workdir, config, registry)
  how = defaults.base_config()
  how.lm.data_workers, how.lm.preemption_check_every = 2, 5  # how it runs, not what it makes
  stages.run(how, workdir, ["lm"], registry)
  assert seen[1] == [stages.SCRATCH_MARKER, "checkpoint"]

  seen.clear()
  other = str(tmp_path / "other")
  scratch = _interrupt(other, config, registry)
  changed = defaults.base_config()
  changed.lm.seq_len = 256
  capsys.readouterr()
  stages.run(changed, other, ["lm"], registry, overwrite=True)
  assert seen[1] == [stages.SCRATCH_MARKER]  # discarded: the stage was redone from nothing
  assert capsys.readouterr().out.startswith(f"lm: --overwrite: discarding {scratch} (an "
                                            "interrupted run's work with other settings)\n")
  assert not os.path.exists(scratch)
  with open(tmp_path / "other" / "lm" / "checkpoint") as f:
    assert f.read() == "step 20"


def test_same_settings_resume_even_with_overwrite(tmp_path):
  """--overwrite discards work of other settings; the same command that was interrupted (its
  message says re-running it resumes) still resumes."""
  seen, workdir, config = [], str(tmp_path), defaults.base_config()
  registry = _lm_like(seen)
  _interrupt(workdir, config, registry)
  stages.run(config, workdir, ["lm"], registry, overwrite=True)
  assert seen[1] == [stages.SCRATCH_MARKER, "checkpoint"]


def test_a_marker_holding_only_a_hash_still_resumes_or_says_settings_are_unknown(tmp_path):
  """Scratch folders left by an older semrec_jax hold only the fingerprint's sha256."""
  seen, workdir, config = [], str(tmp_path), defaults.base_config()
  registry = _lm_like(seen)
  scratch = _interrupt(workdir, config, registry)
  marker = os.path.join(scratch, stages.SCRATCH_MARKER)
  wanted = stages.fingerprint(config, workdir, registry["lm"], registry)
  with open(marker, "w") as f:
    f.write(wanted["sha256"])
  changed = defaults.base_config()
  changed.lm.seq_len = 256
  with pytest.raises(stages.StageError, match=r"with other settings \(settings unknown: an older "
                     r"semrec_jax saved only their hash\); run again with those settings to "
                     r"resume it, or pass --overwrite to discard it"):
    stages.run(changed, workdir, ["lm"], registry)
  assert sorted(os.listdir(scratch)) == [stages.SCRATCH_MARKER, "checkpoint"]
  stages.run(config, workdir, ["lm"], registry)
  assert seen[1] == [stages.SCRATCH_MARKER, "checkpoint"]


def _interrupted_lm_workdir(workdir: str) -> str:
  """A workdir whose (stand-in) upstream stages are finished and whose real `lm` stage was
  interrupted with configs/demo.py and config.lm.seq_len=256; returns its scratch folder."""
  config = demo.get_config()
  for name in ("prepare", "embed", "ids"):
    stage = pipeline.STAGES[name]
    fingerprint = stages.fingerprint(config, workdir, stage, pipeline.STAGES)
    os.makedirs(os.path.join(workdir, stage.output))
    storage.write_json(os.path.join(workdir, stage.output, stages.FINGERPRINT), fingerprint,
                       sort_keys=True, default=str)
  config.lm.seq_len = 256
  registry = {**pipeline.STAGES, "lm": dataclasses.replace(
      pipeline.STAGES["lm"], run=_interrupted_once([]))}
  return _interrupt(workdir, config, registry)


def _main_command(workdir) -> list[str]:
  return [sys.executable, "-m", "semrec_jax.main", "--config=configs/demo.py",
          f"--workdir={workdir}", "--stages=lm"]


def test_the_cli_refuses_in_one_line(tmp_path):
  scratch = _interrupted_lm_workdir(str(tmp_path))
  result = subprocess.run(_main_command(tmp_path), cwd=REPO, capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines() == [
      f"error: stage 'lm': {scratch} holds an interrupted run's work, made with other settings "
      "(config.lm.seq_len: 256 -> 128); run again with those settings to resume it, or pass "
      "--overwrite to discard it"]
  assert sorted(os.listdir(scratch)) == [stages.SCRATCH_MARKER, "checkpoint"]


@pytest.mark.slow
def test_every_process_of_a_multi_host_job_refuses(tmp_path):
  """Each process judges the scratch folder before the primary touches it, so a refusal stops
  them all rather than leaving the others waiting for the primary."""
  scratch = _interrupted_lm_workdir(str(tmp_path))
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count=2 {FAST_COMPILE}",
         "JAX_PLATFORMS": "cpu"}
  procs = [subprocess.Popen(
      _main_command(tmp_path) + [f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
                                 f"--process_id={i}"],
      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  for i, p in enumerate(procs):
    _, err = p.communicate(timeout=120)
    assert p.returncode == 1, f"process {i}: {err[-3000:]}"
    assert err.strip().splitlines()[-1].startswith(f"error: stage 'lm': {scratch} holds an "
                                                   "interrupted run's work"), err[-3000:]
  assert sorted(os.listdir(scratch)) == [stages.SCRATCH_MARKER, "checkpoint"]


def test_a_refused_run_leaves_no_scratch_folder_but_keeps_an_interrupted_one(tmp_path):
  """A stage that refuses its settings or input (StageError, DataError) in a folder it started
  leaves nothing to resume, so the corrected settings are not refused; a resumed folder stays."""
  calls = []

  def refuse(config, workdir, out_dir):
    calls.append(sorted(os.listdir(out_dir)))
    if len(calls) == 1:
      with open(os.path.join(out_dir, "checkpoint"), "w") as f:
        f.write("step 10")
      raise KeyboardInterrupt
    raise stages.StageError("config.lm.seq_len is too small")

  registry = {"lm": stages.Stage("lm", output="lm", run=refuse, config_keys=("lm",))}
  workdir, config = str(tmp_path), defaults.base_config()
  with pytest.raises(stages.Interrupted):
    stages.run(config, workdir, ["lm"], registry)
  with pytest.raises(stages.StageError, match="too small"):
    stages.run(config, workdir, ["lm"], registry)  # resumed, then refused: the work stays
  assert sorted(os.listdir(tmp_path / ".lm.incomplete")) == [stages.SCRATCH_MARKER, "checkpoint"]
  config.lm.seq_len = 24
  with pytest.raises(stages.StageError, match="too small"):
    stages.run(config, workdir, ["lm"], registry, overwrite=True)
  assert calls[-1] == [stages.SCRATCH_MARKER] and not os.path.exists(tmp_path / ".lm.incomplete")


def test_a_missing_input_stage_is_refused_before_any_stage_runs(tmp_path):
  """`--stages=lm,eval` on a workdir without `prefer` stops before `lm` trains (not after it),
  naming the stage and the list that would run."""
  seen, workdir = [], _with_inputs_of(tmp_path, pipeline.STAGES["ids"])
  _made(workdir, "ids", "ids")
  registry = {name: dataclasses.replace(stage, run=lambda *args, n=name: seen.append(n))
              for name, stage in pipeline.STAGES.items()}
  with pytest.raises(stages.StageError) as refused:
    stages.run(defaults.base_config(), workdir, ["eval", "lm"], registry)
  assert str(refused.value) == (
      f"the stages asked for need the output of 'prefer', not found in {workdir}; run with "
      "--stages=lm,prefer,eval")
  assert not seen and not os.path.exists(tmp_path / ".lm.incomplete")
  with pytest.raises(stages.StageError, match="output of 'embed', 'ids', 'lm', 'prefer', not"):
    stages.run(defaults.base_config(), str(tmp_path / "new"), ["prepare", "eval"], registry)
  stages.run(defaults.base_config(), workdir, ["lm", "prefer", "eval"], registry)
  assert seen == ["lm", "prefer", "eval"]


def _made(workdir: str, name: str, sha: str, **upstream: str) -> None:
  """A finished folder of stage `name` whose fingerprint says it was made from `upstream`."""
  os.makedirs(os.path.join(workdir, pipeline.STAGES[name].output), exist_ok=True)
  storage.write_json(os.path.join(workdir, pipeline.STAGES[name].output, stages.FINGERPRINT),
                     {"sha256": sha, "upstream": upstream})


def _with_inputs_of(tmp_path, stage: stages.Stage) -> str:
  """A workdir with fingerprints of the stages `stage` reads."""
  for name in stage.depends_on:
    _made(str(tmp_path), name, name)
  return str(tmp_path)


# Each setting added after folders were made, with its stage and a value other than the old one.
_ADDED = {"ids.last_level": ("ids", "nearest"), "ids.collision_level": ("ids", "auto"),
          "baselines.sid_dim": ("baselines", 128), "embed.text_fields": ("embed", ("title",)),
          "prefer.supervised_weight": ("prefer", 0.5)}


def test_every_setting_added_at_its_old_behaviour_is_probed():
  from semrec_jax.embed import text  # pylint: disable=import-outside-toplevel
  assert set(_ADDED) == set(stages.ADDED_AT_OLD_BEHAVIOUR)
  assert stages.ADDED_AT_OLD_BEHAVIOUR["embed.text_fields"] == list(text.FIELDS)
  # Folders made before collision_level all hold the collision level; the default may drop it, so
  # they are redone under the default, not read as if made without it.
  assert defaults.base_config().ids.collision_level == _ADDED["ids.collision_level"][1]


@pytest.mark.parametrize("dotted", sorted(_ADDED))
def test_a_setting_added_at_its_old_behaviour_keeps_folders_made_before_it(tmp_path, dotted):
  """A folder made before the setting existed keeps its fingerprint under the setting's old value
  (what the folder holds); any other value is a config change."""
  (name, other), (section, field) = _ADDED[dotted], dotted.split(".")
  stage = pipeline.STAGES[name]
  workdir = _with_inputs_of(tmp_path, stage)

  def fingerprint_with(value):
    config = defaults.base_config()
    if value is None:
      del config[section][field]
    else:
      config[section][field] = value
    return stages.fingerprint(config, workdir, stage, pipeline.STAGES)

  before = fingerprint_with(None)
  old = stages.ADDED_AT_OLD_BEHAVIOUR[dotted]
  assert fingerprint_with(tuple(old) if isinstance(old, list) else old) == before
  changed = fingerprint_with(other)
  assert changed["sha256"] != before["sha256"]
  assert json.dumps(changed["config"][section][field]) == json.dumps(other)


@pytest.mark.parametrize("made, asked", [("auto", "always"), ("always", "auto")])
def test_a_refusal_names_the_old_behaviour_value_a_fingerprint_leaves_out(tmp_path, made, asked):
  """`always` is left out of fingerprints (older folders hold it); a refusal still names it, not
  None, both ways."""
  stage = pipeline.STAGES["ids"]
  workdir = _with_inputs_of(tmp_path, stage)
  configs = {value: defaults.base_config() for value in (made, asked)}
  for value, config in configs.items():
    config.ids.collision_level = value
  os.makedirs(tmp_path / stage.output)
  storage.write_json(os.path.join(workdir, stage.output, stages.FINGERPRINT),
                     stages.fingerprint(configs[made], workdir, stage, pipeline.STAGES))
  with pytest.raises(stages.StageError,
                     match=rf"\(config\.ids\.collision_level: '{made}' -> '{asked}'\);"):
    stages.run(configs[asked], workdir, ["ids"], pipeline.STAGES)


def test_a_stage_made_from_older_inputs_is_refused_as_an_input_before_anything_runs(tmp_path):
  """`eval` reads `prefer`: one made from another `lm` than the one there now, or than the one
  this run redoes, is refused up front, naming the --stages= that remakes it."""
  workdir, seen = str(tmp_path), []
  registry = {name: dataclasses.replace(stage, run=lambda *args, n=name: seen.append(n))
              for name, stage in pipeline.STAGES.items()}
  _made(workdir, "prepare", "p")
  _made(workdir, "ids", "i", prepare="p")
  _made(workdir, "lm", "lm-new", prepare="p", ids="i")
  _made(workdir, "prefer", "f", prepare="p", ids="i", lm="lm-old")
  with pytest.raises(stages.StageError, match=r"'prefer' was made from another 'lm' than the one "
                     r"there now\); run with --stages=prefer,eval$"):
    stages.run(defaults.base_config(), workdir, ["eval"], registry)
  _made(workdir, "prefer", "f", prepare="p", ids="i", lm="lm-new")
  with pytest.raises(stages.StageError, match=r"'prefer' was made from another 'lm' than this "
                     r"run makes\); run with --stages=lm,prefer,eval$"):
    stages.run(defaults.base_config(), workdir, ["lm", "eval"], registry, overwrite=True)
  assert not seen
  stages.run(defaults.base_config(), workdir, ["eval"], registry)  # inputs agree
  assert seen == ["eval"]
