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

from semrec_jax import console, defaults, multihost, pipeline, storage
from semrec_jax.data.errors import DataError
from semrec_jax.eval.restore import MissingArtifact
from semrec_jax.stages import Interrupted, StageError, run

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "ml_collections config file (configs/*.py); override fields with "
    "--config.<field>=<value>. Fields and their defaults (semrec_jax/defaults.py):\n" +
    console.config_help(defaults.base_config()), lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder for all artifacts of this experiment.")
_STAGES = flags.DEFINE_list(
    "stages", ",".join(pipeline.STAGES), f"Stages to run, from: {', '.join(pipeline.STAGES)}.")
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False, "Redo the stages even when their artifacts exist (and replace them).")
flags.mark_flags_as_required(["config", "workdir"])


def _writable_workdir(path: str) -> str:
  if storage.is_remote(path):
    return _writable_bucket(path)
  try:
    os.makedirs(path, exist_ok=True)
    with tempfile.TemporaryFile(dir=path):
      pass
  except OSError as e:
    raise app.UsageError(f"--workdir={path} is not a writable folder: {e.strerror}") from e
  return path


def _writable_bucket(path: str) -> str:
  """A remote workdir (gs://BUCKET/...): one probe object written and removed."""
  probe = os.path.join(path, f".probe.{os.getpid()}")
  try:
    storage.write_text(probe, "")
    storage.path(probe).unlink()
  except ImportError as e:
    raise app.UsageError(f"--workdir={path} needs the client for its filesystem ({e.name} is "
                         "not installed): pip install 'semrec_jax[gcs]'") from e
  except Exception as e:  # pylint: disable=broad-except  (any client's error: one line)
    raise app.UsageError(f"--workdir={path} is not writable: "
                         f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
  return path


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  unknown = [s for s in _STAGES.value if s not in pipeline.STAGES]
  if unknown:
    raise app.UsageError(f"unknown stage(s) {unknown}; known stages: {list(pipeline.STAGES)}")
  console.setup()
  config = console.config_value(_CONFIG)
  multihost.initialize_from_flags()
  workdir = _writable_workdir(_WORKDIR.value)
  console.log_to(os.path.join(workdir, "logs", f"main.{jax_process()}.log"))
  logging.info("config:\n%s", config)
  if multihost.is_primary():
    storage.write_json(os.path.join(workdir, "config.json"), config.to_dict(), sort_keys=True,
                       default=str)
  try:
    pipeline.check(config, _STAGES.value)
    run(config, workdir, _STAGES.value, pipeline.STAGES, overwrite=_OVERWRITE.value)
  except (DataError, StageError, MissingArtifact, Interrupted) as e:
    logging.info("error: %s", e)  # the log file; the terminal gets the one line below
    sys.exit(f"error: {e}")
  except KeyboardInterrupt:
    sys.exit("interrupted; nothing was half-written (re-run the same command to go on)")
  summary = os.path.join(workdir, "report", "summary.txt")
  if "report" in _STAGES.value and multihost.is_primary() and storage.exists(summary):
    print(storage.read_text(summary), end="", flush=True)


def jax_process() -> int:
  import jax  # pylint: disable=import-outside-toplevel
  return jax.process_index()


if __name__ == "__main__":
  app.run(main, flags_parser=console.parse_flags)
