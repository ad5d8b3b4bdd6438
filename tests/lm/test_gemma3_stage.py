"""The `lm` stage on the real pretrained base: Gemma 3 270M (GGUF) gains the semantic-ID tokens as
new rows, stage `new_rows` trains only those, stage `all` everything (FSDP over 8 CPU devices)."""

import json
import os

import numpy as np
import pytest

from configs import gemma3_270m_games
from semrec_jax.lm import tasks
from semrec_jax.lm import tokenizer as tokenizer_lib
from semrec_jax.lm.stage import train_lm

GEMMA_VOCAB = 262_144


@pytest.mark.slow
def test_gemma3_270m_two_stage_lm_run(lm_workdir):
  workdir, out = lm_workdir
  config = gemma3_270m_games.get_config()
  config.mesh.data, config.mesh.fsdp = 2, 4
  c = config.lm
  c.stage_steps, c.batch_size, c.seq_len = (1, 1), 8, 64
  c.eval_examples, c.eval_every, c.log_every, c.checkpoint_every = 4, 0, 1, 1
  info = train_lm(config, str(workdir), str(out))

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
  # the mean embedding) and improve as soon as the rows train.
  assert info["final"]["heldout/sid_to_text"] < 8.0
  first, second = held_out
  assert second["heldout/next_item"] < first["heldout/next_item"]
  assert sorted(os.listdir(out / "checkpoints")) == ["all", "new_rows"]
