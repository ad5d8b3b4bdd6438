"""Gemma 3 1B on a Cloud TPU pod slice: official Hugging Face weights (safetensors +
tokenizer.model, copied to every worker), FSDP over the slice, bfloat16 activations.

  launch/tpu_vm.sh run --config=configs/tpu_gemma3_1b.py --workdir=/mnt/w \
      --config.data.path=/mnt/data/amazon18_games --config.lm.weights=safetensors:/mnt/gemma-3-1b-pt
"""

from semrec_jax import defaults


def get_config():
  config = defaults.base_config()
  config.data.path = ""
  config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 1, -1, 1
  config.embed.batch_size = 1024
  config.lm.model = "gemma3_1b"
  config.lm.weights = "safetensors:"  # + the folder, see above
  config.lm.dtype = "bfloat16"
  config.lm.stages = ("new_rows", "all")
  config.lm.stage_steps = (125, 750)  # updates, each of grad_accum micro-batches
  config.lm.stage_lr = (1e-3, 2e-5)
  config.lm.seq_len = 1024
  # 32 x 1024 tokens per micro-batch (2 sequences per chip on v5e-16), 8 micro-batches per
  # update = 256 sequences; per-chip memory: `python -m semrec_jax.aot` (docs/benchmarks.md).
  config.lm.batch_size = 32
  config.lm.grad_accum = 8
  # Scanned layers keep every activation for the backward pass unless told otherwise: dots halves
  # the per-chip memory (python -m semrec_jax.aot; docs/benchmarks.md).
  config.lm.remat = "dots"
  # Adam's first moment in bfloat16 (the second stays float32): a sixth less state per chip.
  config.lm.adam_mu_dtype = "bfloat16"
  config.lm.data_workers = 4  # per host: one process tokenizes and packs ~70-100k tokens/s
  config.lm.warmup_steps = 20  # updates
  config.lm.checkpoint_every = 500
  config.lm.log_every = 50
  return config
