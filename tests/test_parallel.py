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


def _two_slices(device):
  """CPU devices have no slice_index: devices 0-3 play slice 0, 4-7 slice 1 (conftest's 8)."""
  return device.id // 4


def test_two_slices_make_a_hybrid_mesh_with_data_across_slices():
  assert jax.device_count() == 8
  mesh = parallel.make_mesh(parallel.mesh_config(data=-1, fsdp=2, tensor=1, dcn_data=2),
                            slice_of=_two_slices)
  assert isinstance(mesh, jax.sharding.Mesh) and mesh.axis_names == parallel.MESH_AXES
  assert all(isinstance(d, jax.Device) for d in mesh.devices.flat)  # the devices themselves
  assert dict(mesh.shape) == {"data": 4, "fsdp": 2, "tensor": 1}
  assert mesh.axis_types == (jax.sharding.AxisType.Auto,) * 3
  slices = [[_two_slices(d) for d in row.flat] for row in mesh.devices]
  # The data axis spans the slices: slice 0 holds its first half, slice 1 the second; fsdp and
  # tensor stay inside a slice.
  assert slices == [[0, 0], [0, 0], [1, 1], [1, 1]]
  # dcn_data=-1 takes one per slice; the in-slice -1 counts one slice's devices.
  assert dict(parallel.make_mesh(parallel.mesh_config(data=1, fsdp=-1, dcn_data=-1),
                                 slice_of=_two_slices).shape) == {"data": 2, "fsdp": 4,
                                                                  "tensor": 1}
  # The batch splits across slices first: slice 0 reads rows 0-3 of 8.
  rows = parallel.batch_sharding(mesh).devices_indices_map((8,))
  assert {d.id: rows[d][0] for d in mesh.devices.flat if _two_slices(d) == 0} == {
      i: slice(i, i + 1) for i in range(4)}


def test_only_data_parallelism_crosses_slices():
  with pytest.raises(ValueError, match="only data parallelism runs across slices"):
    parallel.make_mesh(parallel.mesh_config(fsdp=2, dcn_data=1, dcn_fsdp=2), slice_of=_two_slices)
  with pytest.raises(ValueError, match="only data parallelism runs across slices"):
    parallel.make_mesh(parallel.mesh_config(dcn_tensor=2))
  with pytest.raises(ValueError, match=r"span 2 slice\(s\) but mesh.dcn_data=1"):
    parallel.make_mesh(parallel.mesh_config(), slice_of=_two_slices)
  with pytest.raises(ValueError, match=r"span 1 slice\(s\) but mesh.dcn_data=2"):
    parallel.make_mesh(parallel.mesh_config(dcn_data=2))
  with pytest.raises(ValueError, match="needs 6 devices per slice"):
    parallel.make_mesh(parallel.mesh_config(data=3, fsdp=2, dcn_data=2), slice_of=_two_slices)
  # One slice: the same mesh as before dcn sizes existed.
  assert dict(parallel.make_mesh(parallel.mesh_config(data=2, fsdp=2, tensor=2)).shape) == {
      "data": 2, "fsdp": 2, "tensor": 2}
