"""Orbax checkpoint helpers: one manager per run folder, NNX state saved as plain nested dicts.

Saving converts an nnx.State to a pure dict of arrays; restoring builds the target from an
abstract state (shapes, dtypes and shardings of the *current* mesh), so a checkpoint restores onto
any mesh. Metadata (config, step counters) travel as JSON beside the arrays; a grain iterator
travels as grain's own checkpoint item, one JSON file per JAX process (each process reads its own
slice of the data, so each has its own position).
"""

import grain
import jax
import orbax.checkpoint as ocp
from flax import nnx

from semrec_jax import storage


def manager(directory, max_to_keep: int = 1, best_metric: str | None = None,
            async_save: bool = True, best_mode: str = "min") -> ocp.CheckpointManager:
  """A CheckpointManager on a local or remote (`gs://...`) folder; with best_metric it keeps the
  checkpoints with the lowest (best_mode "min") or highest ("max") `best_metric`.

  A save a kill cut short is Orbax's to ignore: it writes into a temporary folder that becomes the
  step folder only when complete (renamed, or marked committed where renames are not atomic), and
  cleans such folders up here.
  """
  path = storage.path(directory)
  options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep, create=True, enable_async_checkpointing=async_save,
      cleanup_tmp_directories=True,
      best_fn=(lambda metrics: metrics[best_metric]) if best_metric else None,
      best_mode=best_mode)
  return ocp.CheckpointManager(path, options=options)


def save(mngr: ocp.CheckpointManager, step: int, state: nnx.State, meta: dict | None = None,
         metrics: dict | None = None, data_iterator=None) -> None:
  args = {"state": ocp.args.StandardSave(nnx.to_pure_dict(state))}
  if meta is not None:
    args["meta"] = ocp.args.JsonSave(meta)
  if data_iterator is not None:
    args["data_iterator"] = grain.checkpoint.CheckpointSave(data_iterator)
  mngr.save(step, args=ocp.args.Composite(**args), metrics=metrics)


def restore(mngr: ocp.CheckpointManager, step: int, state: nnx.State,
            with_meta: bool = False, data_iterator=None):
  """Restores `step` into the structure, shardings and dtypes of `state` (which is not modified).

  Returns the restored nnx.State (and the JSON metadata when with_meta). A `data_iterator` given
  here is moved to this process's saved position in place.
  """
  target = jax.tree.map(ocp.utils.to_shape_dtype_struct, nnx.to_pure_dict(state))
  args = {"state": ocp.args.StandardRestore(target)}
  if with_meta:
    args["meta"] = ocp.args.JsonRestore()
  if data_iterator is not None:
    args["data_iterator"] = grain.checkpoint.CheckpointRestore(data_iterator)
  restored = mngr.restore(step, args=ocp.args.Composite(**args))
  new_state = jax.tree.map(lambda x: x, state)
  nnx.replace_by_pure_dict(new_state, restored["state"])
  return (new_state, restored["meta"]) if with_meta else new_state
