"""Gemma 3 4B on a Cloud TPU pod slice: as tpu_gemma3_1b, with the 4B model and half the batch
(16 x 1024 tokens per micro-batch) and the same remat (dots): per-chip memory on v5e-16 from
`python -m semrec_jax.aot` fits with dots and not without (docs/benchmarks.md).

  launch/tpu_vm.sh run --config=configs/tpu_gemma3_4b.py --workdir=/mnt/w \
      --config.data.path=/mnt/data/amazon18_games --config.lm.weights=safetensors:/mnt/gemma-3-4b-pt
"""

from configs import tpu_gemma3_1b


def get_config():
  config = tpu_gemma3_1b.get_config()
  config.lm.model = "gemma3_4b"
  config.lm.batch_size = 16
  return config
