r"""AOT-compiles the LM trainer's step for a TPU slice on this CPU (libtpu from PyPI, no TPU) and
reports per-chip memory; prints one JSON line.

  pip install libtpu==0.0.42.1   # the version jax[tpu] pins for jax 0.10.2
  python benchmarks/tpu_memory.py --config=configs/tpu_gemma3_1b.py --topology=v5e:4x4

The state is abstract (nnx.eval_shape): nothing of the model's size is ever allocated here. The
compiled step is the `all` stage's (every parameter trained, full Adam state), the heavier one.
"""

import json
import os
import sys

import jax
import jax.numpy as jnp
import ml_collections
from absl import app, flags
from flax import nnx
from jax.experimental import topologies
from ml_collections import config_flags

from semrec_jax import parallel
from semrec_jax.lm.pipeline import BATCH_KEYS
from semrec_jax.lm.trainer import LMTrainer
from semrec_jax.models import configs
from semrec_jax.models.decoder import Decoder

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/*.py with an lm section.")
_TOPOLOGY = flags.DEFINE_string("topology", "v5e:4x4", "TPU topology, e.g. v5e:4x4, v5p:2x2x2.")
_NEW_TOKENS = flags.DEFINE_integer("new_tokens", 1027, "Semantic-ID and control tokens added.")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # configs/
HBM_GIB = {"TPU v5 lite": 16, "TPU v5": 95, "TPU v4": 32, "TPU v6 lite": 32}


def main(argv):
  del argv
  config = _CONFIG.value
  c = ml_collections.ConfigDict({**config.lm.to_dict(), "learning_rate": 1e-4})
  topology = topologies.get_topology_desc(platform="tpu", topology_name=_TOPOLOGY.value)
  mesh = parallel.make_mesh(config.mesh, devices=topology.devices)
  model_config = configs.get(c.model, num_new_tokens=_NEW_TOKENS.value, attention=c.attention)
  model = nnx.eval_shape(lambda: Decoder(model_config, nnx.Rngs(0), dtype=jnp.dtype(c.dtype)))
  trainer = LMTrainer(model, c, "all", 1000, mesh)
  shape, sharding = (c.batch_size, c.seq_len), parallel.batch_sharding(mesh, 2)
  if c.grad_accum > 1:  # one step takes the update's micro-batches stacked
    shape, sharding = (c.grad_accum, *shape), parallel.batch_sharding(mesh, 3, batch_axis=1)
  batch = {k: jax.ShapeDtypeStruct(shape, jnp.int32, sharding=sharding) for k in BATCH_KEYS}
  compiled = trainer.step.lower(trainer.state, batch).compile()
  memory = compiled.memory_analysis()
  gib = 1024 ** 3
  per_chip = (memory.argument_size_in_bytes + memory.output_size_in_bytes
              - memory.alias_size_in_bytes + memory.temp_size_in_bytes) / gib
  kind = topology.devices[0].device_kind
  print(json.dumps({
      "benchmark": "tpu_memory", "model": c.model, "topology": _TOPOLOGY.value, "device": kind,
      "chips": len(topology.devices), "mesh": dict(mesh.shape), "batch_size": c.batch_size,
      "grad_accum": c.grad_accum, "seq_len": c.seq_len, "dtype": c.dtype,
      "attention": c.attention,
      "params": int(sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))),
      "arguments_gib_per_chip": round(memory.argument_size_in_bytes / gib, 3),
      "temp_gib_per_chip": round(memory.temp_size_in_bytes / gib, 3),
      "total_gib_per_chip": round(per_chip, 3), "hbm_gib_per_chip": HBM_GIB.get(kind),
      "fits": per_chip <= HBM_GIB[kind] if kind in HBM_GIB else None}))


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
