r"""Runs pipeline stages for one experiment.

  python -m semrec_jax.main --config=configs/demo.py --workdir=/tmp/demo \
      [--stages=prepare] [--overwrite] [--config.data.kcore=10]

Multi-host (every worker runs the same command): --multihost on Cloud TPU / SLURM / Open MPI, or
--coordinator_address=HOST:PORT --num_processes=N --process_id=I anywhere (e.g. several
processes on one machine).
"""

import os
import sys
import tempfile

from absl import app, flags, logging
from ml_collections import config_flags

from semrec_jax import multihost, pipeline
from semrec_jax.data.errors import DataError
from semrec_jax.eval.restore import MissingArtifact
from semrec_jax.stages import StageError, run

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "ml_collections config file (configs/*.py); override fields with "
    "--config.<field>=<value>.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder for all artifacts of this experiment.")
_STAGES = flags.DEFINE_list(
    "stages", ",".join(pipeline.STAGES), f"Stages to run, from: {', '.join(pipeline.STAGES)}.")
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False, "Redo the stages even when their artifacts exist (and replace them).")
_MULTIHOST = flags.DEFINE_bool(
    "multihost", False, "Join a multi-host job described by the environment (Cloud TPU pods, "
    "SLURM, Open MPI) via jax.distributed.initialize().")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", "", "HOST:PORT of process 0, for a multi-process job described by "
    "flags (with --num_processes and --process_id).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 1, "Processes in the job.")
_PROCESS_ID = flags.DEFINE_integer("process_id", 0, "This process's index in the job.")
flags.mark_flags_as_required(["config", "workdir"])


def _writable_workdir(path: str) -> str:
  try:
    os.makedirs(path, exist_ok=True)
    with tempfile.TemporaryFile(dir=path):
      pass
  except OSError as e:
    raise app.UsageError(f"--workdir={path} is not a writable folder: {e.strerror}") from e
  return path


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  unknown = [s for s in _STAGES.value if s not in pipeline.STAGES]
  if unknown:
    raise app.UsageError(f"unknown stage(s) {unknown}; known stages: {list(pipeline.STAGES)}")
  if _COORDINATOR.value or _MULTIHOST.value:
    multihost.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  workdir = _writable_workdir(_WORKDIR.value)
  logging.info("config:\n%s", _CONFIG.value)
  try:
    run(_CONFIG.value, workdir, _STAGES.value, pipeline.STAGES, overwrite=_OVERWRITE.value)
  except (DataError, StageError, MissingArtifact) as e:
    logging.error("%s", e)
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  app.run(main)
