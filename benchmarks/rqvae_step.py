r"""RQ-VAE training steps/s at a fixed batch (default 8192) on real item embeddings; one JSON line.

  python benchmarks/rqvae_step.py --workdir=W [--batch_size=8192 --steps=20]

W must hold `embeddings/items.npy` (the embed stage). The first step (compilation) is not timed.
"""

import json
import os
import time

import jax
import numpy as np
from absl import app, flags

from semrec_jax import defaults, parallel
from semrec_jax.ids import recipes
from semrec_jax.ids.train import Trainer

_WORKDIR = flags.DEFINE_string("workdir", None, "Workdir with embeddings/items.npy.")
_BATCH = flags.DEFINE_integer("batch_size", 8192, "Global batch size.")
_STEPS = flags.DEFINE_integer("steps", 20, "Timed steps.")


def main(argv):
  del argv
  x = np.load(os.path.join(_WORKDIR.value, "embeddings", "items.npy"))
  c = defaults.base_config().ids
  mesh = parallel.make_mesh()
  trainer = Trainer(c, recipes.get(c.recipe), x.shape[1], mesh)
  rows = np.random.default_rng(0).choice(len(x), (_STEPS.value + 1, _BATCH.value))
  trainer.state, losses = trainer.train_step(trainer.state, trainer.put(x[rows[0]]))
  jax.block_until_ready(losses)
  start = time.perf_counter()
  for r in rows[1:]:
    trainer.state, losses = trainer.train_step(trainer.state, trainer.put(x[r]))
  jax.block_until_ready(losses)
  seconds = time.perf_counter() - start
  print(json.dumps({
      "benchmark": "rqvae_train_step", "batch_size": _BATCH.value, "input_dim": x.shape[1],
      "levels": c.levels, "codebook_size": c.codebook_size, "hidden_dims": list(c.hidden_dims),
      "steps_per_s": round(_STEPS.value / seconds, 2),
      "examples_per_s": round(_STEPS.value * _BATCH.value / seconds),
      "device": f"{jax.devices()[0].platform} x{jax.device_count()}",
      "cpu_cores": os.cpu_count()}))


if __name__ == "__main__":
  flags.mark_flags_as_required(["workdir"])
  app.run(main)
