r"""The LM trainer's step (forward, backward, clipped AdamW): tokens/s, model TFLOP/s and MFU;
prints one JSON line.

  python benchmarks/decoder_step.py --model=tiny --batch_size=8 --seq_len=256
  python benchmarks/decoder_step.py --model=gemma3_270m --batch_size=4 --seq_len=256 --dtype=bfloat16
  python benchmarks/decoder_step.py --model=gemma3_4b --batch_size=8 --seq_len=1024 \
      --dtype=bfloat16 --compile_only   # compile time only (an abstract model)

FLOPs and MFU as in semrec_jax/models/flops.py (MFU only on accelerators); compile_s is the step's
lowering and compilation.
Random weights: the speed does not depend on their values.
"""

import json
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags
from flax import nnx

from semrec_jax import backend, defaults, parallel
from semrec_jax.lm.input_pipeline import BATCH_KEYS
from semrec_jax.lm.trainer import LMTrainer
from semrec_jax.models import configs, flops
from semrec_jax.models.decoder import Decoder

_MODEL = flags.DEFINE_string("model", "tiny", "Named config.")
_BATCH = flags.DEFINE_integer("batch_size", 8, "Global batch (sequences).")
_SEQ = flags.DEFINE_integer("seq_len", 256, "Tokens per sequence.")
_STEPS = flags.DEFINE_integer("steps", 5, "Timed steps.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Activation dtype.")
_ANSWERS = flags.DEFINE_float("answer_share", 1.0, "Share of positions that are answer tokens "
                               "(the loss's targets; the demo mixture's is in lm_pipeline.py).")
_CHUNK = flags.DEFINE_integer("loss_token_chunk", 0, "config.lm.loss_token_chunk (0: auto).")
_KERNEL = flags.DEFINE_enum("loss_kernel", "xla", ["xla", "pallas"],
                            "config.lm.loss_kernel: chunked XLA loss or the fused Pallas kernel.")
_COMPILE_ONLY = flags.DEFINE_bool("compile_only", False, "Only lower and compile the step on an "
                                  "abstract model (no weights allocated: any size fits).")
_ATTENTION = flags.DEFINE_enum("attention", "auto", ["auto", "xla", "cudnn", "splash"],
                               "Attention kernel (config.lm.attention).")
_UNROLL = flags.DEFINE_bool("scan_unroll", None, "Unroll the layer scan (default: the named "
                             "config's choice).")
_REMAT = flags.DEFINE_enum("remat", "none", ["none", "dots", "full"],
                           "What a layer's backward recomputes (config.lm.remat).")

def main(argv):
  del argv
  unroll = {} if _UNROLL.value is None else {"scan_unroll": _UNROLL.value}
  c = configs.get(_MODEL.value, num_new_tokens=1027, attention=_ATTENTION.value,
                  remat=_REMAT.value, **unroll)
  dtype = jnp.bfloat16 if _DTYPE.value == "bfloat16" else jnp.float32
  mesh = parallel.make_mesh()
  step_config = ml_collections.ConfigDict({**defaults.base_config().lm.to_dict(),
                                           "learning_rate": 1e-4,
                                           "loss_token_chunk": _CHUNK.value,
                                           "loss_kernel": _KERNEL.value})
  if _COMPILE_ONLY.value:
    model = nnx.eval_shape(lambda: Decoder(c, nnx.Rngs(0), dtype=dtype))
    trainer = LMTrainer(model, step_config, "all", 100, mesh)
    batch = {k: jax.ShapeDtypeStruct((_BATCH.value, _SEQ.value), jnp.int32,
                                     sharding=parallel.batch_sharding(mesh, 2))
             for k in BATCH_KEYS}
    start = time.perf_counter()
    trainer.step.lower(trainer.state, batch).compile()
    print(json.dumps({"benchmark": "decoder_step_compile", "model": _MODEL.value,
                      "dtype": _DTYPE.value, "batch_size": _BATCH.value, "seq_len": _SEQ.value,
                      "remat": _REMAT.value, "scanned_groups": c.num_groups,
                      "compile_s": round(time.perf_counter() - start, 1),
                      "device": jax.devices()[0].device_kind, "cpu_cores": os.cpu_count()}))
    return
  model = parallel.shard_model(Decoder(c, nnx.Rngs(0), dtype=dtype), mesh)
  trainer = LMTrainer(model, step_config, "all", 100, mesh)  # the lm stage's own step
  rng = np.random.default_rng(0)
  shape = (_BATCH.value, _SEQ.value)
  batches = [trainer.put({"tokens": rng.integers(1, c.vocab_size, shape),
                          "mask": rng.random(shape) < _ANSWERS.value,
                          "segment_ids": np.ones(shape),
                          "positions": np.broadcast_to(np.arange(_SEQ.value), shape)})
             for _ in range(_STEPS.value + 1)]
  start = time.perf_counter()
  step = trainer.step.lower(trainer.state, batches[0]).compile()
  compile_s = time.perf_counter() - start
  trainer.state, metrics = step(trainer.state, batches[0])
  jax.block_until_ready(metrics["loss"])
  start = time.perf_counter()
  for batch in batches[1:]:
    trainer.state, metrics = step(trainer.state, batch)
  jax.block_until_ready(metrics["loss"])
  seconds = (time.perf_counter() - start) / _STEPS.value
  devices = jax.devices()
  memory = devices[0].memory_stats() or {}  # None on CPUs
  use = flops.utilisation(c, _BATCH.value, _SEQ.value, seconds)
  print(json.dumps({
      "benchmark": "decoder_train_step", "model": _MODEL.value, "dtype": _DTYPE.value,
      "batch_size": _BATCH.value, "seq_len": _SEQ.value, "attention": _ATTENTION.value,
      "remat": _REMAT.value, "scan_unroll": c.scan_unroll, "answer_share": _ANSWERS.value,
      "loss_token_chunk": trainer.loss_token_chunk(_BATCH.value, _SEQ.value),  # what it used
      "loss_kernel": _KERNEL.value,
      "params": int(sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))),
      "compile_s": round(compile_s, 1), "step_s": round(seconds, 4),
      "tokens_per_s_per_device": round(_BATCH.value * _SEQ.value / seconds / len(devices), 1),
      "model_tflops_per_device": use["tflops_per_device"], "mfu": use["mfu"],
      "peak_gib": (round(memory["peak_bytes_in_use"] / 2**30, 2)
                   if "peak_bytes_in_use" in memory else None),
      "device": devices[0].device_kind, "device_count": len(devices), "cpu_cores": os.cpu_count()}))


if __name__ == "__main__":
  backend.choose()
  app.run(main)
