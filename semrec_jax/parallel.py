"""Meshes, logical-axis rules and sharding helpers shared by every model and step function.

Parameters are created with logical axis names (`param_init`); the config's rules map those names
to the mesh axes ('data', 'fsdp', 'tensor'); `shard_model` places a model's state accordingly.
Batches are split over ('data', 'fsdp') along their first axis. Several TPU slices form a hybrid
mesh with only `data` across slices.
"""

import functools

import jax
import ml_collections
import numpy as np
from flax import nnx
from flax.core import spmd
from jax.experimental import mesh_utils
from jax.sharding import NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

# Logical name -> mesh axis. Models may use more names; unlisted names are replicated.
DEFAULT_RULES = (
    ("batch", BATCH_AXES),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("kv_heads", None),
    ("codebook", None),
    ("code_dim", None),
    ("layers", None),  # the stacked axis of scanned layer groups: every device holds all groups
)


def mesh_config(data: int = -1, fsdp: int = 1, tensor: int = 1, dcn_data: int = 1,
                dcn_fsdp: int = 1, dcn_tensor: int = 1) -> ml_collections.ConfigDict:
  """Mesh shape for the config: in-slice sizes (-1 takes the devices left over) and, for several
  TPU slices, sizes across slices (`dcn_*`; dcn_data=-1 takes one per slice). Only `data` may
  span slices: the data-center network between slices is too slow for FSDP's gathers or tensor
  parallelism, while data parallelism crosses it once per step (the gradient all-reduce)."""
  return ml_collections.ConfigDict({"data": data, "fsdp": fsdp, "tensor": tensor,
                                    "dcn_data": dcn_data, "dcn_fsdp": dcn_fsdp,
                                    "dcn_tensor": dcn_tensor})


def make_mesh(config: ml_collections.ConfigDict | None = None, devices=None,
              slice_of=None) -> jax.sharding.Mesh:
  """A ('data', 'fsdp', 'tensor') mesh over `devices` (default: all) with Auto axis types.

  Devices on several slices (`slice_of(device)`, default the device's `slice_index`) get a hybrid
  mesh: each slice holds a whole (data, fsdp, tensor) block and the slices are stacked along
  `data`, so slice 0's devices take the first rows of the data axis."""
  config = config or mesh_config()
  devices = list(jax.devices() if devices is None else devices)
  slice_of = slice_of or (lambda d: getattr(d, "slice_index", 0))
  num_slices = len({slice_of(d) for d in devices})
  dcn = _dcn_shape(config, num_slices)
  shape = _resolve([config.data, config.fsdp, config.tensor], len(devices) // num_slices,
                   len(devices), num_slices)
  axis_types = (jax.sharding.AxisType.Auto,) * len(MESH_AXES)
  if num_slices == 1:
    return jax.make_mesh(tuple(shape), MESH_AXES, devices=devices, axis_types=axis_types)
  views = [_SliceView(d, slice_of(d)) for d in devices]
  grid = mesh_utils.create_hybrid_device_mesh(
      shape, dcn, views, allow_split_physical_axes=devices[0].device_kind in _SPLIT_KINDS)
  return jax.sharding.Mesh(np.vectorize(lambda v: v.device, otypes=[object])(grid), MESH_AXES,
                           axis_types=axis_types)


_SPLIT_KINDS = ("TPU v5 lite", "TPU v5e")  # as jax.make_mesh: 2D tori whose axes may be split


class _SliceView:
  """A device seen with a chosen slice number (`create_hybrid_device_mesh` groups devices by a
  `slice_index` attribute, which CPU devices lack); everything else is the device's."""

  def __init__(self, device, slice_index: int):
    self.device, self.slice_index = device, slice_index

  def __getattr__(self, name):
    return getattr(self.device, name)


def _dcn_shape(config, num_slices: int) -> list[int]:
  dcn = [config.get("dcn_data", 1), config.get("dcn_fsdp", 1), config.get("dcn_tensor", 1)]
  if dcn[1] != 1 or dcn[2] != 1:
    raise ValueError(f"mesh.dcn_fsdp={dcn[1]}, mesh.dcn_tensor={dcn[2]}: only data parallelism "
                     "runs across slices; set mesh.dcn_data to the number of slices and keep "
                     "fsdp and tensor inside a slice")
  if dcn[0] == -1:
    dcn[0] = num_slices
  if dcn[0] != num_slices:
    raise ValueError(f"the devices span {num_slices} slice(s) but mesh.dcn_data={dcn[0]}; set "
                     f"--config.mesh.dcn_data={num_slices} (or -1: one per slice)")
  return dcn


def _resolve(shape: list[int], per_slice: int, total: int, num_slices: int) -> list[int]:
  """The in-slice shape with its -1 filled in from the devices of one slice."""
  where = f" per slice ({num_slices} slices)" if num_slices > 1 else ""
  if shape.count(-1) > 1:
    raise ValueError(f"at most one mesh axis may be -1, got {shape}")
  known = int(np.prod([s for s in shape if s != -1]))
  if -1 in shape:
    if per_slice % known or total % num_slices:
      raise ValueError(f"{per_slice} devices{where} do not split into mesh {shape}")
    shape[shape.index(-1)] = per_slice // known
  if int(np.prod(shape)) * num_slices != total:
    raise ValueError(f"mesh {dict(zip(MESH_AXES, shape))} needs {int(np.prod(shape))} "
                     f"devices{where}, have {per_slice}")
  return shape


def constrain(x: jax.Array, *names: str | None, rules=DEFAULT_RULES) -> jax.Array:
  """Pins an activation's sharding by logical axis names, under the mesh a step function set
  with `jax.sharding.use_abstract_mesh` (no mesh: unchanged). Without it XLA may leave large
  activations such as the logits unsharded along the batch. Axes that do not divide stay whole."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return x
  table = dict(rules)
  spec = []
  for size, name in zip(x.shape, names):
    axes = table.get(name)
    axes = (axes,) if isinstance(axes, str) else axes or ()
    whole = int(np.prod([mesh.shape[a] for a in axes]))
    spec.append(tuple(axes) if axes and size % whole == 0 else None)
  return jax.lax.with_sharding_constraint(x, P(*spec))


def param_init(initializer, *names: str | None):
  """Wraps an initializer so its parameter carries logical axis names (sharded later, not eagerly)."""
  return nnx.with_partitioning(initializer, names, eager_sharding=False)


def state_shardings(state, mesh: jax.sharding.Mesh, rules=DEFAULT_RULES):
  """NamedShardings for an nnx.State, from its logical axis names and the rules."""
  with spmd.logical_axis_rules(tuple(rules)):
    specs = nnx.get_partition_spec(state)
  return jax.tree.map(lambda spec: NamedSharding(mesh, spec), specs)


def shard_model(model: nnx.Module, mesh: jax.sharding.Mesh, rules=DEFAULT_RULES) -> nnx.Module:
  """Moves a model's state onto the mesh in place, following its logical axis names."""
  state = nnx.state(model)
  nnx.update(model, jax.device_put(state, state_shardings(state, mesh, rules)))
  return model


def batch_sharding(mesh: jax.sharding.Mesh, ndim: int = 1, batch_axis: int = 0) -> NamedSharding:
  """Splits the example axis (`batch_axis`, e.g. 1 for stacked micro-batches) over the
  data-parallel mesh axes."""
  spec = [None] * ndim
  spec[batch_axis] = BATCH_AXES
  return NamedSharding(mesh, P(*spec))


@functools.lru_cache(maxsize=None)
def input_shard(mesh: jax.sharding.Mesh) -> tuple[int, int]:
  """(index, count): this process supplies slice `index` of `count` equal slices of every global
  batch: the rows its devices hold under `batch_sharding`. Processes whose devices hold the same
  rows (a tensor or model axis spanning processes) read the same slice."""
  blocks = data_parallel_size(mesh)
  held: dict[int, set] = {}
  for device, index in batch_sharding(mesh).devices_indices_map((blocks,)).items():
    held.setdefault(device.process_index, set()).update(range(*index[0].indices(blocks)))
  return shard_of(held, blocks, jax.process_index(), str(dict(mesh.shape)))


def shard_of(held: dict[int, set], blocks: int, process: int, mesh_name: str = "the mesh"
             ) -> tuple[int, int]:
  """`input_shard` from {process: the data-parallel slices its devices hold}: a mesh where some
  process holds slices that are not one contiguous range, or where the processes' ranges are not
  equal and disjoint, cannot be fed by per-process readers and is refused."""
  spans = {}
  for p, rows in held.items():
    spans[p] = (min(rows), max(rows) + 1)
    if len(rows) != spans[p][1] - spans[p][0]:
      raise ValueError(f"mesh {mesh_name}: process {p}'s devices hold data-parallel slices "
                       f"{sorted(rows)}, not one contiguous range; order the devices so each "
                       "process's share of the batch is contiguous")
  distinct = sorted(set(spans.values()))
  bounds = [0] + [hi for _, hi in distinct]
  if [lo for lo, _ in distinct] != bounds[:-1] or bounds[-1] != blocks or \
      len({hi - lo for lo, hi in distinct}) != 1:
    raise ValueError(f"mesh {mesh_name}: the processes' shares of the batch {distinct} are not "
                     f"equal, disjoint slices of its {blocks} data-parallel slices")
  return distinct.index(spans[process]), len(distinct)


def global_batch(local: np.ndarray, mesh: jax.sharding.Mesh, batch_axis: int = 0) -> jax.Array:
  """This process's rows of a batch (its `input_shard` slice) -> one global array split over the
  data axes. Processes reading the same slice pass the same rows."""
  shape = list(np.shape(local))
  shape[batch_axis] *= input_shard(mesh)[1]
  return jax.make_array_from_process_local_data(
      batch_sharding(mesh, np.ndim(local), batch_axis), local, tuple(shape))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def data_parallel_size(mesh: jax.sharding.Mesh) -> int:
  return int(np.prod([mesh.shape[a] for a in BATCH_AXES]))
