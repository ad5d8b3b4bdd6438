r"""The LM loss alone (`lm/loss.py`: value and gradients for the hidden states and the output
tables) on random inputs; prints one JSON line.

  python benchmarks/loss_step.py --batch_size=2 --seq_len=128 --embed_dim=640 --vocab=262144
  python benchmarks/loss_step.py --batch_size=8 --seq_len=256 --embed_dim=256 --vocab=8192
  python benchmarks/loss_step.py --kernel=pallas ...   # the fused kernel (interpreted off GPUs)

Two table parts (the vocabulary and 1,027 new tokens), every position an answer.
"""

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from semrec_jax import backend
from semrec_jax.lm import loss

_BATCH = flags.DEFINE_integer("batch_size", 2, "Rows.")
_SEQ = flags.DEFINE_integer("seq_len", 128, "Positions per row.")
_DIM = flags.DEFINE_integer("embed_dim", 640, "Hidden size (Gemma 3 270M: 640).")
_VOCAB = flags.DEFINE_integer("vocab", 262_144, "Rows of the pretrained table.")
_CHUNK = flags.DEFINE_integer("token_chunk", 64, "Answer positions per row in a chunk.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Hidden states' dtype.")
_KERNEL = flags.DEFINE_enum("kernel", "xla", ["xla", "pallas"], "config.lm.loss_kernel.")
_REPEATS = flags.DEFINE_integer("repeats", 7, "Timed calls (the best and the median reported).")


def main(argv):
  del argv
  rng = np.random.default_rng(0)
  shape = (_BATCH.value, _SEQ.value)
  hidden = jnp.asarray(rng.normal(size=(*shape, _DIM.value)), _DTYPE.value)
  tables = tuple(jnp.asarray(rng.normal(size=(rows, _DIM.value)) * 0.02, jnp.float32)
                 for rows in (_VOCAB.value, 1027))
  targets = jnp.asarray(rng.integers(0, _VOCAB.value + 1027, shape), jnp.int32)
  valid = jnp.ones(shape, bool)
  score = (loss.fused_cross_entropy if _KERNEL.value == "pallas" else
           lambda h, t, targets, valid: loss.chunked_cross_entropy(h, t, targets, valid,
                                                                   _CHUNK.value))
  step = jax.jit(jax.value_and_grad(lambda h, t: score(h, t, targets, valid), argnums=(0, 1)))
  jax.block_until_ready(step(hidden, tables))
  seconds = []
  for _ in range(_REPEATS.value):
    start = time.perf_counter()
    jax.block_until_ready(step(hidden, tables))
    seconds.append(time.perf_counter() - start)
  seconds.sort()
  print(json.dumps({"benchmark": "loss_step", "batch_size": _BATCH.value, "seq_len": _SEQ.value,
                    "embed_dim": _DIM.value, "vocab": _VOCAB.value + 1027,
                    "token_chunk": _CHUNK.value, "kernel": _KERNEL.value, "dtype": _DTYPE.value,
                    "best_s": round(seconds[0], 3), "median_s": round(seconds[len(seconds) // 2], 3),
                    "device": jax.devices()[0].device_kind, "cpu_cores": os.cpu_count()}))


if __name__ == "__main__":
  backend.choose()
  app.run(main)
