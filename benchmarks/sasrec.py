r"""SASRec baselines (semrec_jax/baselines/): training sequences/s and full-catalog ranking
users/s; prints one JSON line.

  python benchmarks/sasrec.py --model=sasrec_id --loss=ce
  python benchmarks/sasrec.py --model=sasrec_sid --sid_model=composed --items=16859

Random weights, random histories of --max_len items over a random catalog of --items items (the
semantic-ID model gets random distinct 4-level codes); the default config.baselines sizes. Timed
after one compiling call each.
"""

import json
import time

import jax
import numpy as np
from absl import app, flags

from semrec_jax import backend, defaults, parallel
from semrec_jax.baselines import stage
from semrec_jax.baselines.trainer import Trainer

_MODEL = flags.DEFINE_enum("model", "sasrec_id", ["sasrec_id", "sasrec_sid"], "Baseline.")
_LOSS = flags.DEFINE_enum("loss", "ce", ["ce", "sampled", "bce"],
                          "Training loss of sasrec_id and of the composed sasrec_sid.")
_SID_MODEL = flags.DEFINE_enum("sid_model", "levels", list(stage.SID_MODELS),
                               "sasrec_sid: how codes make an item (config.baselines.sid_model).")
_ITEMS = flags.DEFINE_integer("items", 16_859, "Catalog size (default: the Games benchmark).")
_MAX_LEN = flags.DEFINE_integer("max_len", 50, "History items per row.")
_BATCH = flags.DEFINE_integer("batch_size", 128, "Training rows per step.")
_EVAL_BATCH = flags.DEFINE_integer("eval_batch_size", 256, "Rows per ranking call.")
_STEPS = flags.DEFINE_integer("steps", 20, "Timed training steps (and ranking calls).")


def main(argv):
  del argv
  c = defaults.base_config().baselines
  c.loss, c.max_len, c.batch_size = _LOSS.value, _MAX_LEN.value, _BATCH.value
  c.sid_model = _SID_MODEL.value
  sid = _MODEL.value == "sasrec_sid"
  rng = np.random.default_rng(0)
  codes = np.unique(rng.integers(0, 256, (int(_ITEMS.value * 1.05) + 16, 4)), axis=0)
  codes = codes[rng.permutation(len(codes))[:_ITEMS.value]]
  trainer = Trainer(stage.build(_MODEL.value, c, _ITEMS.value, codes), c, parallel.make_mesh())
  rows = rng.integers(0, _ITEMS.value, (_BATCH.value, c.max_len)).astype(np.int32)
  targets = rng.integers(0, _ITEMS.value, rows.shape).astype(np.int32)
  jax.block_until_ready(trainer.step(rows, targets, 0))  # compile
  start = time.perf_counter()
  for step in range(_STEPS.value):
    loss = trainer.step(rows, targets, step + 1)
  jax.block_until_ready(loss)
  train_s = (time.perf_counter() - start) / _STEPS.value
  users = rng.integers(0, _ITEMS.value, (_EVAL_BATCH.value, c.max_len)).astype(np.int32)
  wanted = np.zeros((len(users), 1), np.int64)
  trainer.rank(users, wanted, 20, _EVAL_BATCH.value)  # compile
  start = time.perf_counter()
  for _ in range(_STEPS.value):
    trainer.rank(users, wanted, 20, _EVAL_BATCH.value)
  rank_s = (time.perf_counter() - start) / _STEPS.value
  print(json.dumps({
      "benchmark": "sasrec", "model": _MODEL.value, "sid_model": c.sid_model if sid else None,
      "loss": "code cross-entropy" if sid and c.sid_model == "levels" else _LOSS.value,
      "items": _ITEMS.value, "max_len": c.max_len, "dim": c.dim, "layers": c.layers,
      "batch_size": _BATCH.value, "device": jax.devices()[0].device_kind,
      "devices": jax.device_count(), "train_step_ms": round(1000 * train_s, 1),
      "train_sequences_per_s": round(_BATCH.value / train_s, 1),
      "rank_users_per_s": round(_EVAL_BATCH.value / rank_s, 1)}))


if __name__ == "__main__":
  backend.choose()
  app.run(main)
