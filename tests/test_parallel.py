"""Activation sharding constraints by logical axis names."""

import jax
import jax.numpy as jnp
import pytest
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


def test_input_shards_follow_the_rows_each_process_holds():
  # 4 processes, data=4: one slice each.
  assert [parallel.shard_of({p: {p} for p in range(4)}, 4, p) for p in range(4)] == [
      (0, 4), (1, 4), (2, 4), (3, 4)]
  # tensor pairs across processes 0/1 and 2/3: two input shards, each read by two processes.
  held = {0: {0, 1}, 1: {0, 1}, 2: {2, 3}, 3: {2, 3}}
  assert [parallel.shard_of(held, 4, p) for p in range(4)] == [(0, 2), (0, 2), (1, 2), (1, 2)]
  # every process holds every row: one shard.
  assert parallel.shard_of({0: {0, 1}, 1: {0, 1}}, 2, 1) == (0, 1)
  # process 0 holds slices 0 and 2: no reader can feed that.
  with pytest.raises(ValueError, match="not one contiguous range"):
    parallel.shard_of({0: {0, 2}, 1: {1, 3}}, 4, 0)
  with pytest.raises(ValueError, match="not equal, disjoint"):
    parallel.shard_of({0: {0, 1}, 1: {1, 2}}, 3, 0)


def test_a_single_process_reads_the_whole_batch():
  mesh = parallel.make_mesh(parallel.mesh_config(data=2, fsdp=2, tensor=2))
  assert parallel.input_shard(mesh) == (0, 1)
  stacked = parallel.global_batch(jnp.zeros((3, 8, 5), jnp.int32), mesh, batch_axis=1)
  assert stacked.shape == (3, 8, 5)
  assert stacked.sharding.spec == P(None, ("data", "fsdp"), None)
