"""The `lm` stage on the real pretrained base: Gemma 3 270M (GGUF) gains the semantic-ID tokens as
new rows, stage `new_rows` trains only those, stage `all` everything.

It runs `semrec_jax.main` in a child process on one CPU device: full Adam state for 270M
parameters plus XLA's per-device buffers on 8 simulated devices would not fit this machine's
memory beside the rest of the suite (sharding is tested on smaller models and, for Gemma 3
1B/4B, by AOT compilation in semrec_jax/aot.py)."""

import json
import os
import resource
import subprocess
import sys

import numpy as np
import pytest

from semrec_jax.lm import tasks
from semrec_jax.lm import tokenizer as tokenizer_lib

GEMMA_VOCAB = 262_144
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_gemma3_270m_two_stage_lm_run(main_workdir):
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
  flags = {"stage_steps": "(1,1)", "batch_size": 2, "seq_len": 80, "eval_examples": 4,
           "eval_every": 0, "log_every": 1, "checkpoint_every": 1}
  run = subprocess.run(
      [sys.executable, "-m", "semrec_jax.main", "--config=configs/gemma3_270m_games.py",
       f"--workdir={main_workdir}", "--stages=lm",
       *(f"--config.lm.{k}={v}" for k, v in flags.items())],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
  assert run.returncode == 0, run.stderr[-4000:]
  print("child peak RSS GiB:", resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20)
  out = main_workdir / "lm"
  with open(out / "info.json") as f:
    info = json.load(f)

  tokenizer = tokenizer_lib.Tokenizer(str(out / "tokenizer.model"))
  assert info["vocab_size"] == tokenizer.vocab_size == GEMMA_VOCAB + 1027
  assert tokenizer.piece_id("<|sid_start|>") >= GEMMA_VOCAB  # new rows, after Gemma's own
  assert tokenizer.encode("a racing game for PS4")[0] < GEMMA_VOCAB
  with open(out / "metrics.jsonl") as f:
    records = [json.loads(line) for line in f]
  train_records = [r for r in records if "loss" in r]
  assert [(r["stage"], r["step"]) for r in train_records] == [("new_rows", 1), ("all", 1)]
  assert all(np.isfinite(r["loss"]) and r["tflops_per_device"] > 0 for r in train_records)
  held_out = [r for r in records if "loss" not in r]
  assert [r["stage"] for r in held_out] == ["new_rows", "all"]
  assert set(info["final"]) == {"stage", *(f"heldout/{t}" for t in tasks.TASKS)}
  assert all(np.isfinite(v) for k, v in info["final"].items() if k.startswith("heldout/"))
  # The pretrained model already writes English titles far better than uniform guessing over
  # 263,171 tokens (ln = 12.5); answers in semantic IDs start far worse (the new rows begin as
  # the mean embedding: config.lm.sid_init `auto` leaves pretrained models' rows as they are)
  # and improve as soon as the rows train.
  assert info["final"]["heldout/sid_to_text"] < 8.0
  first, second = held_out
  assert second["heldout/next_item"] < first["heldout/next_item"]
  assert sorted(os.listdir(out / "checkpoints")) == ["all", "new_rows"]
  assert (out / "fingerprint.json").exists()  # the stage finished and was stamped
