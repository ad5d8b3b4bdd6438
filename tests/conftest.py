"""Shared test setup: 8 simulated CPU devices (before JAX loads), one persistent compilation cache
for the session and its child processes, and data fixtures."""

import atexit
import fcntl
import json
import os
import pathlib
import shutil
import tempfile

# Tests compile many small programs and run each a few times: XLA's CPU backend without LLVM's
# optimisation passes compiles them in about 60% of the time, and every tolerance still holds.
# Child processes that set their own device count add it too; the Gemma 3 270M stage, which
# computes more than it compiles, does not.
FAST_COMPILE = "--xla_backend_optimization_level=0"
os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count=8 {FAST_COMPILE}")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Programs compiled once are read back, in this process (a new jit of the same step) and in the
# child processes that inherit the environment (two-process runs, relaunches, CLIs). A fresh folder
# per session unless SEMREC_TEST_JAX_CACHE names one to keep between sessions.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _CACHE = os.environ.get("SEMREC_TEST_JAX_CACHE") or tempfile.mkdtemp(prefix="semrec_jax_cache_")
  if "SEMREC_TEST_JAX_CACHE" not in os.environ:
    atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
# Compile-only TPU topologies (AOT tests) load libtpu in more than one test process at a time.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

import pytest  # noqa: E402

from semrec_jax import defaults  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(REPO, "tests", "fixtures")
AMAZON2023 = os.path.join(FIXTURES, "amazon2023")
SHARED_GAMES = os.path.join(REPO, "..", "shared", "data", "amazon18_games")


def pytest_collection_modifyitems(items):
  """Files with end-to-end (`slow`) tests first: the two workers start on the long ones and finish
  on short ones, instead of one long file running alone at the end."""
  slow_files = {item.path for item in items if item.get_closest_marker("slow")}
  items.sort(key=lambda item: item.path not in slow_files)  # stable: file order kept otherwise


def _built_once(tmp_path_factory, name: str, build) -> pathlib.Path:
  """The folder `name`, made by build(folder) once per test run: test workers (pytest-xdist)
  share it, the first to ask builds it while the others wait on a lock."""
  root = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    root = root.parent  # the run's folder, above each worker's own
  folder, done = root / name, root / f"{name}.done"
  with open(root / f"{name}.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not done.exists():
      shutil.rmtree(folder, ignore_errors=True)
      folder.mkdir()
      build(folder)
      done.touch()
  return folder


@pytest.fixture(scope="session")
def demo_workdir(tmp_path_factory):
  """A workdir with the bundled sample prepared and embedded (shared by the whole run)."""
  from semrec_jax import pipeline, stages  # pylint: disable=import-outside-toplevel
  return str(_built_once(tmp_path_factory, "demo", lambda folder: stages.run(
      defaults.base_config(), str(folder), ["prepare", "embed"], pipeline.STAGES)))


@pytest.fixture(scope="session")
def demo_ids(demo_workdir, tmp_path_factory):
  """The `ids` stage on the sample's embeddings, briefly trained (40 steps); returns its folder."""
  from configs import demo  # pylint: disable=import-outside-toplevel
  from semrec_jax.ids.stage import semantic_ids  # pylint: disable=import-outside-toplevel
  config = demo.get_config()
  config.ids.steps, config.ids.eval_every = 40, 20
  return str(_built_once(tmp_path_factory, "ids",
                         lambda folder: semantic_ids(config, demo_workdir, str(folder))))


@pytest.fixture
def data_config():
  """A fresh `config.data` section; tests set format and path."""
  return defaults.base_config().data


@pytest.fixture(scope="session")
def trained_lm(demo_workdir, demo_ids, tmp_path_factory):
  """(workdir, config) with the sample's data and IDs and a briefly trained `tiny` LM in lm/ (12
  steps on the 8-device mesh; checkpoints at steps 6 and 12), shared by the lm and eval tests."""
  from configs import demo  # pylint: disable=import-outside-toplevel
  from semrec_jax.lm.stage import train_lm  # pylint: disable=import-outside-toplevel
  config = demo.get_config()
  config.lm.stage_steps, config.lm.log_every, config.lm.checkpoint_every = (12,), 4, 6
  config.lm.eval_examples, config.lm.eval_every = 16, 6
  config.lock()

  def build(workdir):
    os.symlink(os.path.join(demo_workdir, "data"), workdir / "data")
    shutil.copytree(demo_ids, workdir / "ids")
    (workdir / "lm").mkdir()
    train_lm(config, str(workdir), str(workdir / "lm"))

  return _built_once(tmp_path_factory, "trained", build), config


# The eval stage's budget in tests: few users, bundles and items, a small batch.
SMALL_EVAL = {"max_users": 24, "steer_users": 8, "explain_users": 4, "max_bundles": 4,
              "max_items": 8, "sampled_negatives": 100, "batch_size": 8}


def small_eval(config):
  """`config` (locked or not) with the eval stage at SMALL_EVAL."""
  config = config.copy_and_resolve_references()
  config.unlock()
  config.eval.update(SMALL_EVAL)
  return config


@pytest.fixture(scope="session")
def evaluated_lm(trained_lm, tmp_path_factory):
  """The eval stage on `trained_lm` at SMALL_EVAL, run once per test run (the eval tests and the
  two-process eval compare with it): (metrics, the stage's folder)."""
  from semrec_jax.eval import stage  # pylint: disable=import-outside-toplevel
  workdir, config = trained_lm

  def build(out):
    found = stage.evaluate(small_eval(config), str(workdir), str(out))
    with open(out / "metrics.json") as f:
      assert json.load(f) == found, "metrics.json differs from what evaluate returned"

  out = _built_once(tmp_path_factory, "evaluated", build)
  with open(out / "metrics.json") as f:
    return json.load(f), out
