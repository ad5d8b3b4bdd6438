"""Several JAX processes (TPU pod workers, GPU hosts) running one job: start-up, and the rule that
one process (the primary) does the file-system bookkeeping while the others wait for it."""

import jax
import numpy as np
from absl import flags
from jax.experimental import multihost_utils

_MULTIHOST = flags.DEFINE_bool(
    "multihost", False, "Join a multi-host job described by the environment (Cloud TPU pods, "
    "SLURM, Open MPI) via jax.distributed.initialize().")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", "", "HOST:PORT of process 0, for a multi-process job described by "
    "flags (with --num_processes and --process_id).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 1, "Processes in the job.")
_PROCESS_ID = flags.DEFINE_integer("process_id", 0, "This process's index in the job.")


def initialize_from_flags() -> None:
  """Joins the job that --multihost or --coordinator_address describe (the commands' flags)."""
  if _COORDINATOR.value or _MULTIHOST.value:
    initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)


def initialize(coordinator_address: str = "", num_processes: int = 0, process_id: int = -1,
               cpu_collectives: str = "gloo") -> None:
  """jax.distributed.initialize with explicit arguments (any cluster, or several processes on one
  machine), or without (Cloud TPU, SLURM and Open MPI describe the cluster themselves). Must run
  before anything touches a JAX backend."""
  # Cross-process collectives for CPU devices (ignored by TPU and GPU backends).
  jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
  if coordinator_address:
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)
  else:
    jax.distributed.initialize()


def is_primary() -> bool:
  return jax.process_index() == 0


def max_over_processes(values) -> np.ndarray:
  """The element-wise maximum of `values` over all processes (what every process agrees on)."""
  values = np.asarray(values)
  if jax.process_count() == 1:
    return values
  return np.max(multihost_utils.process_allgather(values), axis=0)


def sync(name: str) -> None:
  """Every process waits here until all have arrived (no-op with one process)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)
