r"""RQ-VAE training steps/s at a fixed batch (default 8192) on real item embeddings; one JSON line.

  python benchmarks/rqvae_step.py --workdir=W [--batch_size=8192 --steps=20 --repeats=3]

W must hold `embeddings/items.npy` (the embed stage). It times the step the ids stage runs
(`Trainer.train_rows`: embeddings resident on the device, each step takes its row indices; usage
EMA and dead-code restarts inside the step), including the host's index batches. The first step
(compilation) is not timed. `--repeats` times that many windows of `--steps` steps: on a shared
machine the best window is the least disturbed one. The seed's PyTorch step at the same shapes:
`benchmarks/rqvae_seed_torch.py` (run both in one session, alternating, to compare).
"""

import json
import os
import time

import jax
import numpy as np
from absl import app, flags

from semrec_jax import backend, defaults, parallel
from semrec_jax.ids import recipes
from semrec_jax.ids.train import Trainer

_WORKDIR = flags.DEFINE_string("workdir", None, "Workdir with embeddings/items.npy.")
_BATCH = flags.DEFINE_integer("batch_size", 8192, "Global batch size.")
_STEPS = flags.DEFINE_integer("steps", 20, "Timed steps per window.")
_REPEATS = flags.DEFINE_integer("repeats", 1, "Timed windows.")


def main(argv):
  del argv
  x = np.load(os.path.join(_WORKDIR.value, "embeddings", "items.npy"))
  c = defaults.base_config().ids
  mesh = parallel.make_mesh()
  trainer = Trainer(c, recipes.get(c.recipe), x.shape[1], mesh)
  data = trainer.put_data(x)
  rows = np.random.default_rng(0).choice(len(x), (_REPEATS.value * _STEPS.value + 1, _BATCH.value))
  trainer.state, losses = trainer.train_rows(trainer.state, data, trainer.put_rows(rows[0]))
  jax.block_until_ready(losses)
  rates = []
  for window in np.split(rows[1:], _REPEATS.value):
    start = time.perf_counter()
    for r in window:
      trainer.state, losses = trainer.train_rows(trainer.state, data, trainer.put_rows(r))
    jax.block_until_ready(losses)
    rates.append(_STEPS.value * _BATCH.value / (time.perf_counter() - start))
  print(json.dumps({
      "benchmark": "rqvae_train_step", "batch_size": _BATCH.value, "input_dim": x.shape[1],
      "levels": c.levels, "codebook_size": c.codebook_size, "hidden_dims": list(c.hidden_dims),
      "steps": _STEPS.value, "steps_per_s": round(max(rates) / _BATCH.value, 2),
      "examples_per_s": round(max(rates)), "examples_per_s_windows": [round(r) for r in rates],
      "compiles": trainer.train_rows._cache_size(),  # pylint: disable=protected-access
      "device": f"{jax.devices()[0].platform} x{jax.device_count()}",
      "cpu_cores": os.cpu_count()}))


if __name__ == "__main__":
  flags.mark_flags_as_required(["workdir"])
  backend.choose()
  app.run(main)
