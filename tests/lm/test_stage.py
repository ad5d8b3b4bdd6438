"""The `lm` stage end to end on the sample: tokenizer, mixture, training, held-out losses."""

import json
import os

from semrec_jax.lm import tasks
from semrec_jax.lm import tokenizer as tokenizer_lib


def test_lm_stage_trains_and_reports(trained_lm):
  workdir, _ = trained_lm
  out = workdir / "lm"
  with open(out / "info.json") as f:
    info = json.load(f)
  tokenizer = tokenizer_lib.Tokenizer(str(out / "tokenizer.model"))
  assert tokenizer.vocab_size == 4096 == info["vocab_size"]
  assert tokenizer.piece_id("<|sid_1023|>") == 4 + 3 + 1023  # reserved right after specials
  with open(out / "metrics.jsonl") as f:
    records = [json.loads(line) for line in f]
  train_records = [r for r in records if "loss" in r]
  assert [r["step"] for r in train_records] == [4, 8, 12]
  assert train_records[-1]["loss"] < 8.3  # below uniform guessing over 4,096 tokens
  assert all(r["tflops_per_device"] > 0 and r["mfu"] is None for r in train_records)  # CPU
  held_out_records = [r for r in records if "loss" not in r]
  assert [r["step"] for r in held_out_records] == [6, 12]  # every eval_every steps
  held_out = held_out_records[-1]
  assert set(held_out) == {"stage", "step", *(f"heldout/{t}" for t in tasks.TASKS)}
  assert all(0 < held_out[k] < 9 for k in held_out if k.startswith("heldout/"))
  assert info["final"] == {"stage": "all", **{k: v for k, v in held_out.items()
                                              if k.startswith("heldout/")}}
  assert sorted(os.listdir(out / "checkpoints" / "all")) == ["12", "6"]
  tags = _event_tags(out / "tensorboard")
  assert {"train/loss", "train/tokens_per_s", "heldout/next_item"} <= set(tags)
  assert tags["train/loss"] == [4, 8, 12]
  assert tags["heldout/next_item"] == [6, 12]


def _event_tags(folder) -> dict:
  """Scalar tags -> steps, read straight from the TFRecord-framed event files."""
  from tensorboardX.proto import event_pb2  # pylint: disable=import-outside-toplevel
  tags = {}
  for name in os.listdir(folder):
    data = (folder / name).read_bytes()
    offset = 0
    while offset < len(data):
      length = int.from_bytes(data[offset:offset + 8], "little")
      event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
      offset += 12 + length + 4
      for value in event.summary.value:
        tags.setdefault(value.tag, []).append(event.step)
  return tags
