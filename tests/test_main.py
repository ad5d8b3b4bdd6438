"""The absl entry point and the stage framework, end to end on the bundled sample."""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from semrec_jax import defaults, pipeline, stages
from semrec_jax.data import tfds_builders
from tests.conftest import REPO


def _main(*args, cwd=REPO):
  return subprocess.run([sys.executable, "-m", "semrec_jax.main", *args], cwd=cwd,
                        capture_output=True, text=True, timeout=300)


def _main_concurrently(*commands: list[str]) -> list[subprocess.CompletedProcess]:
  """Several `semrec_jax.main` commands at once (each mostly imports, then exits early)."""
  procs = [subprocess.Popen([sys.executable, "-m", "semrec_jax.main", *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for args in commands]
  return [subprocess.CompletedProcess(p.args, p.returncode, out, err)
          for p in procs for out, err in [p.communicate(timeout=300)]]


@pytest.fixture(scope="module")
def demo_workdir(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("demo"))
  result = _main("--config=configs/demo.py", f"--workdir={workdir}", "--stages=prepare")
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir


def test_prepare_writes_stats_and_datasets(demo_workdir):
  with open(os.path.join(demo_workdir, "data", "stats.json")) as f:
    stats = json.load(f)
  assert (stats["num_users"], stats["num_items"], stats["num_interactions"]) == (19_080, 2_000,
                                                                                  155_133)
  assert stats["min_user_interactions"] >= 5 and stats["min_item_interactions"] >= 5
  assert stats["sequence_length"]["min"] == 5 and stats["sequence_length"]["max"] == 213
  assert set(stats["dropped"]) >= {"duplicate_interactions", "kcore_interactions"}
  data_dir = os.path.join(demo_workdir, "data")
  items = tfds_builders.items_source(data_dir)
  assert len(items) == 2_000
  assert [int(items[i]["index"]) for i in (0, 1999)] == [0, 1999]
  for split in tfds_builders.SPLITS:
    assert len(tfds_builders.sequences_source(data_dir, split)) == 19_080
  test = tfds_builders.sequences_source(data_dir, "test")
  users = [int(test[i]["user_index"]) for i in range(len(test))]
  assert users == list(range(19_080))  # exactly one test example per user


def test_no_held_out_item_in_training_history(demo_workdir):
  data_dir = os.path.join(demo_workdir, "data")
  train, valid, test = (tfds_builders.sequences_source(data_dir, s) for s in tfds_builders.SPLITS)
  for u in range(0, 19_080, 7):
    seen = set(train[u]["history"].tolist()) | {int(train[u]["target"])}
    assert int(valid[u]["target"]) not in seen and int(test[u]["target"]) not in seen
    assert int(test[u]["target"]) not in set(valid[u]["history"].tolist())
    np.testing.assert_array_equal(test[u]["history"][-1:], [valid[u]["target"]])


def test_up_to_date_stage_is_skipped_and_changed_config_refused(demo_workdir):
  stamp = os.path.getmtime(os.path.join(demo_workdir, "data", "stats.json"))
  config = defaults.base_config()
  stages.run(config, demo_workdir, ["prepare"], pipeline.STAGES)
  assert os.path.getmtime(os.path.join(demo_workdir, "data", "stats.json")) == stamp
  # How a stage runs is not what it makes: another runner finds the same data up to date.
  config.data.runner, config.data.beam_kcore_rounds = "beam", 2
  stages.run(config, demo_workdir, ["prepare"], pipeline.STAGES)
  assert os.path.getmtime(os.path.join(demo_workdir, "data", "stats.json")) == stamp
  config.data.kcore = 6
  with pytest.raises(stages.StageError, match=r"kcore: 5 -> 6.*--overwrite"):
    stages.run(config, demo_workdir, ["prepare"], pipeline.STAGES)


def test_overwrite_replaces_and_ignores_a_half_written_run(tmp_path):
  workdir = str(tmp_path)
  os.makedirs(os.path.join(workdir, ".data.incomplete", "junk"))  # left by a killed run
  config = defaults.base_config()
  config.data.kcore = 8
  stages.run(config, workdir, ["prepare"], pipeline.STAGES)
  with open(os.path.join(workdir, "data", "stats.json")) as f:
    assert json.load(f)["min_user_interactions"] >= 8
  config.data.kcore = 10
  stages.run(config, workdir, ["prepare"], pipeline.STAGES, overwrite=True)
  with open(os.path.join(workdir, "data", "stats.json")) as f:
    stats = json.load(f)
  assert stats["min_user_interactions"] >= 10 and stats["min_item_interactions"] >= 10
  assert sorted(os.listdir(workdir)) == ["data"]


def test_cli_errors_are_clear(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("")
  bad_stage, missing, typo, unwritable, model, no_path, no_data = _main_concurrently(
      ["--config=configs/demo.py", f"--workdir={tmp_path}", "--stages=prepare,train"],
      ["--config=configs/nope.py", f"--workdir={tmp_path}"],
      ["--config=configs/demo.py", f"--workdir={tmp_path}", "--config.lm.stage_stepz=3"],
      ["--config=configs/demo.py", f"--workdir={blocker}/sub"],
      ["--config=configs/demo.py", f"--workdir={tmp_path}/m", "--config.lm.model=tinyy"],
      ["--config=configs/games.py", f"--workdir={tmp_path}/p", "--stages=prepare"],
      ["--config=configs/games.py", "--config.data.path=/nonexistent", f"--workdir={tmp_path}/w"])
  assert bad_stage.returncode != 0
  assert ("unknown stage(s) ['train']; known stages: ['prepare', 'embed', 'ids', 'baselines', "
          "'lm', 'prefer', 'eval', 'report']") in bad_stage.stderr
  assert missing.returncode != 0 and missing.stderr.strip().splitlines() == [
      "error: cannot load --config=configs/nope.py: [Errno 2] No such file or directory: "
      "'configs/nope.py'"]
  assert typo.returncode != 0 and typo.stderr.strip().splitlines() == [
      "error: unknown config field --config.lm.stage_stepz; did you mean "
      "--config.lm.stage_steps? (see --helpfull)"]
  assert unwritable.returncode != 0 and "is not a writable folder" in unwritable.stderr
  assert model.returncode == 1 and model.stderr.strip().splitlines() == [
      "error: unknown model config.lm.model='tinyy'; did you mean 'tiny'? (known: gemma3_1b, "
      "gemma3_270m, gemma3_4b, qwen3_0_6b, qwen3_8b, tiny)"]
  assert not os.path.exists(tmp_path / "m" / "data")  # refused before any stage ran
  assert no_path.stderr.strip().splitlines()[-1].startswith(
      "error: this config needs the data folder: add --config.data.path=FOLDER")
  assert no_data.returncode == 1
  assert "error: data folder '/nonexistent' does not exist; expected items.csv" in no_data.stderr


def test_helpfull_documents_the_flags():
  result = _main("--helpfull")
  for flag in ("--config", "--workdir", "--stages", "--overwrite", "--config.lm.stage_steps=(150,)",
               "--config.data.format='games_tsv'"):
    assert flag in result.stdout


def test_interrupted_stage_resumes_in_its_scratch_folder(tmp_path):
  """A stage killed mid-way finds what it left (e.g. checkpoints) when the same config re-runs it;
  a different config starts from an empty folder."""
  seen = []

  def flaky(config, workdir, out_dir):
    seen.append(sorted(os.listdir(out_dir)))
    with open(os.path.join(out_dir, "checkpoint"), "w") as f:
      f.write("step 10")
    if len(seen) == 1:
      raise KeyboardInterrupt  # killed

  registry = {"prepare": stages.Stage("prepare", output="data", run=flaky, config_keys=("data",))}
  config = defaults.base_config()
  with pytest.raises(stages.Interrupted, match="re-running|running the same command again"):
    stages.run(config, str(tmp_path), ["prepare"], registry)
  stages.run(config, str(tmp_path), ["prepare"], registry)
  assert seen == [[".wanted_fingerprint"], [".wanted_fingerprint", "checkpoint"]]
  assert sorted(os.listdir(tmp_path / "data")) == ["checkpoint", "fingerprint.json"]
  with pytest.raises(stages.Interrupted):
    config.data.kcore = 7
    seen.clear()
    stages.run(config, str(tmp_path), ["prepare"], registry, overwrite=True)
  config.data.kcore = 8
  stages.run(config, str(tmp_path), ["prepare"], registry, overwrite=True)
  assert seen[-1] == [".wanted_fingerprint"]  # another config: nothing reused


def test_a_workdir_made_by_another_version_of_a_stage_is_refused(tmp_path):
  """A stage whose code changes what it makes raises its version (for the configs it concerns):
  the same config no longer finds the old folder up to date, nor do the stages reading it, and
  --overwrite redoes it."""
  runs = []

  def make(config, workdir, out_dir):
    runs.append(out_dir)

  config, workdir = defaults.base_config(), str(tmp_path)
  old = {"prepare": stages.Stage("prepare", output="data", run=make, config_keys=("data",)),
         "embed": stages.Stage("embed", output="embeddings", run=make, config_keys=("embed",),
                               depends_on=("prepare",)),
         "ids": stages.Stage("ids", output="ids", run=make, config_keys=("ids",),
                             depends_on=("prepare",))}
  stages.run(config, workdir, ["prepare"], old)
  with open(tmp_path / "data" / "fingerprint.json") as f:
    assert "version" not in json.load(f)  # version 1: workdirs from before versions stay valid
  games_only = lambda c: 2 if c.data.format == "games_tsv" else 1
  new = {**old, "prepare": dataclasses.replace(old["prepare"], version=games_only)}
  with pytest.raises(stages.StageError, match=r"made by version 1 of the stage's code, which is "
                     r"now version 2.*--overwrite to redo it"):
    stages.run(config, workdir, ["prepare"], new)
  with pytest.raises(stages.StageError, match=r"'prepare': .* made by version 1 .* now version 2"
                     r".*--overwrite --stages=prepare,embed to"):
    stages.run(config, workdir, ["embed"], new)  # nor is it read as another stage's input
  with pytest.raises(stages.StageError, match="--overwrite --stages=prepare,embed,ids to"):
    stages.run(config, workdir, ["ids"], new)  # redo the stages between them too
  other = defaults.base_config()
  other.data.format = "generic"
  stages.run(other, str(tmp_path / "generic"), ["prepare", "embed"], old)
  stages.run(other, str(tmp_path / "generic"), ["prepare", "embed"], new)  # version 1 there
  assert len(runs) == 3
  stages.run(config, workdir, ["prepare"], new, overwrite=True)
  stages.run(config, workdir, ["prepare", "embed"], new)
  assert len(runs) == 5
  stages.run(config, workdir, ["prepare", "embed"], new)  # up to date now
  assert len(runs) == 5
  with pytest.raises(stages.StageError, match="made by version 2 .* now version 1"):
    stages.run(config, workdir, ["prepare"], old)  # an older checkout refuses it too
  # A folder of another format is a config change, whatever the versions of either format.
  with pytest.raises(stages.StageError, match=r"data.format: 'generic' -> 'games_tsv'"):
    stages.run(config, str(tmp_path / "generic"), ["prepare"], new)


@pytest.mark.parametrize("name", sorted(f[:-3] for f in os.listdir(os.path.join(REPO, "configs"))
                                        if f.endswith(".py") and f != "__init__.py"))
def test_every_config_loads_through_the_flag_parser(name):
  """Each configs/*.py parses with --config (as users run it) and has consistent LM stages."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  from ml_collections import config_flags  # pylint: disable=import-outside-toplevel
  holder = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=holder)
  holder(["prog", f"--config={os.path.join(REPO, 'configs', name + '.py')}"])
  config = holder.config
  assert config.data.kcore == 5 and config.ids.codebook_size == 256
  assert config.data.format in ("amazon2023", "games_tsv", "generic")
  assert len(config.lm.stages) == len(config.lm.stage_steps) == len(config.lm.stage_lr)
  assert set(config.lm.stages) <= {"new_rows", "embeddings", "all"}
