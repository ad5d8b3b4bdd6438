"""Every stage on a `gs://` workdir, against an in-memory Cloud Storage emulator.

Three clients talk to the bucket (tests/gcs_emulator.py). Nothing may land on the local disk under
a `gs:` folder, which is what os.path calls on a bucket path silently do.
"""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytest.importorskip("gcp_storage_emulator")
from tests import gcs_emulator  # noqa: E402  pylint: disable=wrong-import-position

BUCKET = gcs_emulator.BUCKET


@pytest.fixture(scope="module")
def bucket_env():
  """Starts the emulator; returns the environment that sends every client to it."""
  server, env = gcs_emulator.start()
  yield env
  server.stop()


def _run(module, env, cwd, *args):
  return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd,
                        env={**os.environ, "PYTHONPATH": REPO, "SEMREC_CACHE": str(cwd / "cache"),
                             **env},
                        capture_output=True, text=True, timeout=900)


def _main(env, cwd, *args):
  return _run("semrec_jax.main", env, cwd, f"--config={REPO}/configs/demo.py", *args)


@pytest.mark.slow
def test_every_stage_runs_on_a_bucket(bucket_env, tmp_path, monkeypatch):
  workdir = f"gs://{BUCKET}/run"
  small = ["--config.data.kcore=10", "--config.ids.steps=30", "--config.ids.eval_every=15",
           "--config.baselines.steps=10", "--config.baselines.eval_every=5",
           "--config.baselines.val_users=50", "--config.baselines.max_users=50",
           "--config.baselines.sampled_negatives=50", "--config.lm.stage_steps=(10,)",
           "--config.lm.checkpoint_every=5", "--config.lm.eval_every=10",
           "--config.lm.eval_examples=8", "--config.eval.max_users=16",
           "--config.eval.steer_users=8", "--config.eval.explain_users=4",
           "--config.eval.max_bundles=4", "--config.eval.max_items=8",
           "--config.eval.sampled_users=4",
           "--config.eval.sampled_negatives=50", "--config.eval.batch_size=8"]
  run = _main(bucket_env, tmp_path, f"--workdir={workdir}", *small)
  assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
  assert not os.path.exists(tmp_path / "gs:"), "a stage wrote a bucket path to the local disk"
  assert "== semrec_jax: what this run made" in run.stdout
  assert len(os.listdir(tmp_path / "cache")) == 2  # the datasets, copied once for reading

  for name, value in bucket_env.items():
    monkeypatch.setenv(name, value)
  from semrec_jax import storage  # pylint: disable=import-outside-toplevel
  from semrec_jax.data import tfds_builders  # pylint: disable=import-outside-toplevel
  root = storage.path(workdir)
  stats = storage.read_json(root / "data" / "stats.json")
  assert len(tfds_builders.items_source(str(root / "data"))) == stats["num_items"]
  assert storage.load_array(root / "embeddings" / "items.npy").shape[0] == stats["num_items"]
  metrics = storage.read_json(root / "eval" / "metrics.json")
  assert metrics["invalid_rate"] == 0.0 and 0.0 <= metrics["test/recall@10"] <= 1.0
  lines = storage.read_text(root / "lm" / "metrics.jsonl").splitlines()
  assert [json.loads(line)["step"] for line in lines if '"loss"' in line][-1] == 10
  assert (root / "lm" / "checkpoints").is_dir() and (root / "report" / "report.html").exists()
  assert any(p.name.startswith("events.") for p in (root / "lm" / "tensorboard").iterdir())
  assert "lm: running" in storage.read_text(root / "logs" / "main.0.log")
  for stage in ("prepare", "embed", "ids", "baselines", "lm", "eval", "report"):
    assert not (root / f".{stage}.incomplete").exists()

  # The same command again finds every stage's fingerprint on the bucket and skips it.
  again = _main(bucket_env, tmp_path, f"--workdir={workdir}", *small)
  assert again.returncode == 0, again.stderr[-3000:]
  assert again.stdout.count("up to date") == 7, again.stdout

  # The chat restores the LM from the bucket too.
  chat = _run("semrec_jax.chat", bucket_env, tmp_path, f"--workdir={workdir}", "--json",
              "--prompt=I loved Splatoon; something for Wii U")
  assert chat.returncode == 0, chat.stderr[-3000:]
  assert len(json.loads(chat.stdout.splitlines()[-1])["items"]) == 5
