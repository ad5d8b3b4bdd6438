"""Shared test setup: 8 simulated CPU devices (before JAX loads), one persistent compilation cache
for the session and its child processes, and data fixtures."""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
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


@pytest.fixture(scope="session")
def demo_workdir(tmp_path_factory):
  """A workdir with the bundled sample prepared and embedded (shared by the whole session)."""
  from semrec_jax import pipeline, stages  # pylint: disable=import-outside-toplevel
  workdir = str(tmp_path_factory.mktemp("demo"))
  stages.run(defaults.base_config(), workdir, ["prepare", "embed"], pipeline.STAGES)
  return workdir


@pytest.fixture(scope="session")
def demo_ids(demo_workdir, tmp_path_factory):
  """The `ids` stage on the sample's embeddings, briefly trained (40 steps); returns its folder."""
  from configs import demo  # pylint: disable=import-outside-toplevel
  from semrec_jax.ids.stage import semantic_ids  # pylint: disable=import-outside-toplevel
  config = demo.get_config()
  config.ids.steps, config.ids.eval_every = 40, 20
  out = str(tmp_path_factory.mktemp("ids"))
  semantic_ids(config, demo_workdir, out)
  return out


@pytest.fixture
def data_config():
  """A fresh `config.data` section; tests set format and path."""
  return defaults.base_config().data


@pytest.fixture(scope="session")
def trained_lm(demo_workdir, demo_ids, tmp_path_factory):
  """(workdir, config) with the sample's data and IDs and a briefly trained `tiny` LM in lm/ (12
  steps on the 8-device mesh; checkpoints at steps 6 and 12), shared by the lm and eval tests."""
  import shutil  # pylint: disable=import-outside-toplevel
  from configs import demo  # pylint: disable=import-outside-toplevel
  from semrec_jax.lm.stage import train_lm  # pylint: disable=import-outside-toplevel
  workdir = tmp_path_factory.mktemp("trained")
  os.symlink(os.path.join(demo_workdir, "data"), workdir / "data")
  shutil.copytree(demo_ids, workdir / "ids")
  (workdir / "lm").mkdir()
  config = demo.get_config()
  config.lm.stage_steps, config.lm.log_every, config.lm.checkpoint_every = (12,), 4, 6
  config.lm.eval_examples, config.lm.eval_every = 16, 6
  config.lock()
  train_lm(config, str(workdir), str(workdir / "lm"))
  return workdir, config
