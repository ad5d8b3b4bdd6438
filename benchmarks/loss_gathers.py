r"""What the LM loss gathers across devices: the all-gathers in the compiled loss and gradients
(`lm/loss.py`) on simulated CPU meshes; prints one JSON line per mesh.

  python benchmarks/loss_gathers.py [--vocab=32768 --embed_dim=256]

An all-gather with the vocabulary's row count means a device held the whole output table.
"""

import json
import os
import re

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax  # noqa: E402  (after XLA_FLAGS)
import jax.numpy as jnp  # noqa: E402
from absl import app, flags  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: E402

from semrec_jax import backend, parallel  # noqa: E402
from semrec_jax.lm import loss  # noqa: E402

_VOCAB = flags.DEFINE_integer("vocab", 32768, "Rows of the output table.")
_DIM = flags.DEFINE_integer("embed_dim", 256, "Width of the table.")
MESHES = ({"data": 4, "tensor": 2}, {"data": 2, "fsdp": 2, "tensor": 2}, {"data": 2, "fsdp": 4})


def main(argv):
  del argv
  for shape in MESHES:
    mesh = parallel.make_mesh(parallel.mesh_config(**shape))
    rows = NamedSharding(mesh, P(parallel.BATCH_AXES))
    args = (jax.ShapeDtypeStruct((8, 64, _DIM.value), jnp.float32, sharding=rows),
            jax.ShapeDtypeStruct((_VOCAB.value, _DIM.value), jnp.float32,
                                 sharding=NamedSharding(mesh, P("tensor", "fsdp"))),
            jax.ShapeDtypeStruct((8, 64), jnp.int32, sharding=rows),
            jax.ShapeDtypeStruct((8, 64), jnp.bool_, sharding=rows))

    def grads(hidden, table, targets, valid):
      with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
        return jax.value_and_grad(
            lambda h, t: loss.chunked_cross_entropy(h, (t,), targets, valid, 16),
            argnums=(0, 1))(hidden, table)

    text = jax.jit(grads).lower(*args).compile().as_text()
    gathered = sorted(set(re.findall(r"= \w+\[([0-9,]*)\][^ ]* all-gather", text)))
    print(json.dumps({"benchmark": "loss_gathers", "mesh": shape, "vocab": _VOCAB.value,
                      "embed_dim": _DIM.value, "all_gather_shapes": gathered,
                      "whole_vocabulary_gathered": any(str(_VOCAB.value) in g.split(",")
                                                       for g in gathered)}))


if __name__ == "__main__":
  backend.choose()
  app.run(main)
