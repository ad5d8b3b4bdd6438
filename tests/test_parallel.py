"""Activation sharding constraints by logical axis names."""

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P

from semrec_jax import parallel


def _compiled_output_spec(mesh, shape, *names):
  def f(x):
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
      return parallel.constrain(x * 2, *names)
  replicated = NamedSharding(mesh, P())
  x = jax.ShapeDtypeStruct(shape, jnp.float32, sharding=replicated)
  return jax.jit(f).lower(x).compile().output_shardings.spec


def test_constrain_shards_batch_and_vocab_by_the_rules():
  mesh = parallel.make_mesh(parallel.mesh_config(data=2, fsdp=2, tensor=2))
  assert _compiled_output_spec(mesh, (8, 16, 64), "batch", None, "vocab") == P(
      ("data", "fsdp"), None, "tensor")
  # A batch of 2 does not split 4 ways: it stays whole instead of failing.
  assert _compiled_output_spec(mesh, (2, 16, 64), "batch", None, "vocab") == P(None, None,
                                                                               "tensor")


def test_constrain_without_a_mesh_changes_nothing():
  x = jnp.ones((3, 5))
  assert parallel.constrain(x, "batch", None) is x
