r"""Wall time and quality of the whole `ids` stage (train + assign + metrics); one JSON line.

  python benchmarks/ids_stage.py --workdir=W [--recipe=default|seed]

W must hold the prepare and embed outputs (e.g. the Games data). Target (issue 3): under 3 minutes
on the 2-core CPU machine.
"""

import json
import os
import tempfile
import time

import jax
from absl import app, flags

from semrec_jax import backend, defaults
from semrec_jax.ids.stage import semantic_ids

_WORKDIR = flags.DEFINE_string("workdir", None, "Workdir with data/ and embeddings/.")
_RECIPE = flags.DEFINE_string("recipe", "default", "config.ids.recipe")


def main(argv):
  del argv
  config = defaults.base_config()
  config.ids.recipe = _RECIPE.value
  with tempfile.TemporaryDirectory() as out:
    start = time.perf_counter()
    m = semantic_ids(config, _WORKDIR.value, out)
    seconds = time.perf_counter() - start
  print(json.dumps({
      "benchmark": "ids_stage", "recipe": m["recipe"], "items": m["num_items"],
      "steps": config.ids.steps, "batch_size": config.ids.batch_size,
      "seconds": round(seconds, 1), "recon_mse": m["recon_mse"],
      "collision_rate": m["collision_rate"], "prefix_purity": m["prefix_purity"],
      "codebook_usage": m["codebook_usage"],
      "device": f"{jax.devices()[0].platform} x{jax.device_count()}",
      "cpu_cores": os.cpu_count()}))


if __name__ == "__main__":
  flags.mark_flags_as_required(["workdir"])
  backend.choose()
  app.run(main)
