"""The Beam prepare path (config.data.runner='beam') on the local runner (no --runner in
config.data.beam_options: FnApiRunner, the DirectRunner's Python engine): the same datasets and
stats.json as the in-process path, k-core to a fixed point over several pipeline runs."""

import importlib.util
import json
import logging
import os
import shutil
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from hypothesis import given, settings
from hypothesis import strategies as st

from semrec_jax import defaults
from semrec_jax.data import tfds_builders
from semrec_jax.data.errors import DataError
from semrec_jax.data.prepare import prepare
from semrec_jax.data.processing import length_summary
from tests.conftest import AMAZON2023

requires_beam = pytest.mark.skipif(
    importlib.util.find_spec("apache_beam") is None,
    reason="apache_beam is not installed (pip install 'semrec_jax[beam]'): the Beam prepare path "
           "cannot run")
TIMING_FIELDS = ("seconds",)

if importlib.util.find_spec("apache_beam") is not None:
  from apache_beam.io.localfilesystem import LocalFileSystem

  class FakeRemoteFileSystem(LocalFileSystem):
    """`fakegs:///abs/path` is the local /abs/path: a remote-scheme input without a network,
    read through Beam's FileSystems as gs:// would be (Beam finds it by its scheme)."""

    @classmethod
    def scheme(cls):
      return "fakegs"

    def exists(self, path):
      return super().exists(path[len("fakegs://"):])

    def open(self, path, *args, **kwargs):  # pylint: disable=arguments-differ
      return super().open(path[len("fakegs://"):], *args, **kwargs)


def _config(**data):
  config = defaults.base_config()
  for name, value in data.items():
    setattr(config.data, name, value)
  return config


def _prepare_both(tmp_path, **data) -> tuple[str, str]:
  """Prepares with both runners; returns their output folders."""
  folders = []
  for runner in ("local", "beam"):
    out = tmp_path / runner
    out.mkdir()
    prepare(_config(runner=runner, **data), str(out))
    folders.append(str(out))
  return folders[0], folders[1]


def _plain(example: dict) -> dict:
  return {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in example.items()}


def _assert_same_output(local: str, beam: str) -> dict:
  """Same features, splits and examples (in order), same stats.json apart from timing."""
  for name in (tfds_builders.ITEMS, tfds_builders.SEQUENCES):
    infos = [tfds.builder_from_directory(os.path.join(d, name, tfds_builders.VERSION)).info
             for d in (local, beam)]
    assert repr(infos[0].features) == repr(infos[1].features)
    assert ({s: infos[0].splits[s].num_examples for s in infos[0].splits}
            == {s: infos[1].splits[s].num_examples for s in infos[1].splits})
  sources = [tuple(tfds_builders.items_source(d) for d in (local, beam))]
  for split in tfds_builders.SPLITS:
    sources.append(tuple(tfds_builders.sequences_source(d, split) for d in (local, beam)))
  for a, b in sources:
    assert len(a) == len(b) > 0
    assert [_plain(a[i]) for i in range(len(a))] == [_plain(b[i]) for i in range(len(b))]
  stats = []
  for folder in (local, beam):
    with open(os.path.join(folder, "stats.json"), encoding="utf-8") as f:
      stats.append({k: v for k, v in json.load(f).items() if k not in TIMING_FIELDS})
  assert stats[0] == stats[1]
  assert not [n for n in os.listdir(beam) if n.startswith("_")]  # intermediate files removed
  return stats[0]


@requires_beam
@pytest.mark.slow
def test_sample_matches_in_process(tmp_path):
  # The bundled sample (already a 5-core: one round finds the fixed point; fewer rounds per run
  # keep the DirectRunner graph small).
  stats = _assert_same_output(*_prepare_both(tmp_path, beam_kcore_rounds=1))
  assert stats["num_users"] == 19_080


@requires_beam
@pytest.mark.slow
@pytest.mark.parametrize("layout", ["reviews", "benchmark"])
def test_amazon2023_fixtures_match_in_process(tmp_path, layout):
  folder = AMAZON2023
  if layout == "benchmark":  # the three CSVs (three input files: order across files matters)
    folder = tmp_path / "input"
    folder.mkdir()
    shutil.copy(os.path.join(AMAZON2023, "meta_Video_Games.jsonl.gz"), folder)
    shutil.copytree(os.path.join(AMAZON2023, "benchmark", "5core"), folder / "5core")
  stats = _assert_same_output(*_prepare_both(
      tmp_path, format="amazon2023", path=str(folder), category="Video_Games",
      interactions=layout, kcore=3, beam_kcore_rounds=2))
  assert stats["dropped"]["kcore_users"] > 0 and stats["dropped"]["kcore_items"] > 0


@requires_beam
@pytest.mark.slow
def test_remote_input_stage_folder_and_beam_dir_on_a_bucket(tmp_path, monkeypatch):
  """Input behind a remote scheme (read through Beam's FileSystems), the stage folder and
  config.data.beam_dir both on gs:// (a pod's workdir, a Dataflow job's files), against the
  in-memory emulator: Beam's intermediate files, TFDS's shards (ArrayRecord writes POSIX files:
  each shard is written locally and copied up) and the copy into the stage's folder all go
  through the bucket, the run's folder is removed after the copy, and the datasets equal the
  in-process ones."""
  pytest.importorskip("gcp_storage_emulator")
  pytest.importorskip("gcsfs")
  from semrec_jax import storage  # pylint: disable=import-outside-toplevel
  from tests import gcs_emulator  # pylint: disable=import-outside-toplevel
  server, env = gcs_emulator.start()
  for name, value in env.items():
    monkeypatch.setenv(name, value)
  monkeypatch.setenv("SEMREC_CACHE", str(tmp_path / "cache"))
  try:
    common = dict(format="amazon2023", path=AMAZON2023, category="Video_Games", kcore=2)
    (tmp_path / "local").mkdir()
    prepare(_config(**common), str(tmp_path / "local"))
    bucket = f"gs://{gcs_emulator.BUCKET}"
    prepare(_config(runner="beam", beam_dir=f"{bucket}/beam",
                    **{**common, "path": "fakegs://" + AMAZON2023}), f"{bucket}/w/data")
    shards = [p.name for p in storage.path(
        f"{bucket}/w/data/{tfds_builders.SEQUENCES}/{tfds_builders.VERSION}").iterdir()]
    assert any(".array_record-" in name for name in shards)
    assert not [n for n in shards if "incomplete" in n or n.startswith("tmp")]
    assert not list(storage.path(f"{bucket}/beam").glob("*"))  # the run's folder is removed
    storage.copy_tree(f"{bucket}/w/data", tmp_path / "downloaded")
    _assert_same_output(str(tmp_path / "local"), str(tmp_path / "downloaded"))
    source = tfds_builders.sequences_source(f"{bucket}/w/data", "test")  # read through the cache
    assert len(source) == len(tfds_builders.sequences_source(str(tmp_path / "local"), "test"))
  finally:
    server.stop()


def _write_generic(folder, items: list[dict], rows: list[tuple], extra_lines=()) -> None:
  folder.mkdir(exist_ok=True)
  with open(folder / "items.jsonl", "w", encoding="utf-8") as f:
    f.write("".join(json.dumps(item) + "\n" for item in items))
  with open(folder / "interactions.csv", "w", encoding="utf-8") as f:
    f.write("user_id,item_id,timestamp\n")
    f.write("".join(f"{u},{i},{t}\n" for u, i, t in rows))
    f.write("".join(line + "\n" for line in extra_lines))


def _chain_case():
  """A 2-core where each removal uncovers the next: one round of counting is not enough.

  Users need >= 3 interactions, items >= 2. Items a, b, c are shared by two users each; item z
  only by u0, so z goes in round 1, u0 (then with 2 items) in round 2, item a (then with one
  user) in round 3, u1 in round 4, and so on down the chain; the dense block of users v* and
  items x* survives. Also: duplicates (v2's x0 at t=5 is its first), an unknown item, an untitled
  item, a repeated catalog row, a price that is not a number, a bad line.
  """
  rows = [("u0", "z", 1), ("u0", "a", 2), ("u0", "b", 3),
          ("u1", "a", 1), ("u1", "c", 2), ("u1", "d", 3),
          ("u2", "c", 1), ("u2", "d", 2), ("u2", "e", 3),
          ("u3", "e", 1), ("u3", "b", 2), ("u3", "f", 3)]
  rows += [(f"v{u}", f"x{i}", 10 * u + i) for u in range(4) for i in range(4)]
  rows += [("v0", "x1", 99), ("v1", "ghost", 5), ("v2", "untitled", 5), ("v2", "x0", 5)]
  items = [{"item_id": i, "title": f"title {i}", "price": 1.5} for i in "zabcdef"]
  items += [{"item_id": f"x{i}", "title": f"x {i}", "platform": "PlayStation 4"}
            for i in range(3, -1, -1)]
  items += [{"item_id": "untitled", "title": ""}, {"item_id": "x2", "title": "again"},
            {"item_id": "g", "title": "g", "price": "n/a"}]
  return items, rows


@requires_beam
@pytest.mark.slow
def test_kcore_needs_several_rounds_and_runs(tmp_path, caplog):
  items, rows = _chain_case()
  _write_generic(tmp_path / "input", items, rows, extra_lines=["w,x1,not-a-time"])
  caplog.set_level(logging.INFO)
  local, beam = _prepare_both(tmp_path, format="generic", path=str(tmp_path / "input"), kcore=2,
                              max_bad_fraction=0.2, beam_kcore_rounds=1)
  stats = _assert_same_output(local, beam)
  source = tfds_builders.sequences_source(beam, "test")
  users = sorted(tfds_builders.text(source[i]["user_id"]) for i in range(len(source)))
  assert users == ["v0", "v1", "v2", "v3"]
  assert stats["dropped"]["kcore_users"] == 4 and stats["dropped"]["kcore_items"] == 7
  assert stats["dropped"]["duplicate_interactions"] == 2
  assert stats["dropped"]["items_missing_from_catalog"] == 1
  assert stats["dropped"]["items_without_title"] == 1
  assert stats["dropped"]["bad_line:bad_timestamp"] == 1
  assert stats["dropped"]["unparsed_price"] == 1
  assert stats["dropped"]["duplicate_item_rows"] == 1
  runs = [r.getMessage() for r in caplog.records if r.getMessage().startswith("beam prepare:")]
  rounds = int(runs[-1].split(", ")[1].split()[0])
  assert rounds >= 4  # one k-core round per pipeline run here, so several runs were needed


@requires_beam
def test_beam_reports_bad_input_like_in_process(tmp_path):
  items, rows = _chain_case()
  _write_generic(tmp_path / "input", items, rows, extra_lines=["w,x1,not-a-time"] * 10)
  errors = []
  for runner in ("local", "beam"):
    (tmp_path / runner).mkdir()
    with pytest.raises(DataError) as e:
      prepare(_config(format="generic", path=str(tmp_path / "input"), runner=runner),
              str(tmp_path / runner))
    errors.append(str(e.value))
  assert errors[0] == errors[1] and "max_bad_fraction" in errors[0]
  # A wrong header fails before any pipeline runs, with the same message.
  (tmp_path / "input" / "interactions.csv").write_text("user,item_id,timestamp\nu,x1,1\n")
  errors = []
  for runner in ("local", "beam"):
    with pytest.raises(DataError) as e:
      prepare(_config(format="generic", path=str(tmp_path / "input"), runner=runner),
              str(tmp_path / runner))
    errors.append(str(e.value))
  assert errors[0] == errors[1] and "missing column(s) ['user_id']" in errors[0]


def test_beam_runner_without_apache_beam_is_one_clear_line(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "apache_beam", None)  # import apache_beam -> ImportError
  with pytest.raises(DataError) as e:
    prepare(_config(runner="beam"), str(tmp_path))
  message = str(e.value)
  assert "\n" not in message
  assert "config.data.runner='beam' needs Apache Beam" in message
  assert "pip install 'semrec_jax[beam]'" in message


def test_unknown_runner_is_refused(tmp_path):
  with pytest.raises(DataError, match="unknown config.data.runner 'spark'"):
    prepare(_config(runner="spark"), str(tmp_path))


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.integers(1, 60), st.integers(1, 40), min_size=1, max_size=12))
def test_length_summary_equals_numpy(length_counts):
  """The histogram statistics of stats.json (all the Beam path has) equal numpy's."""
  lengths = np.repeat(list(length_counts), list(length_counts.values()))
  assert length_summary(length_counts) == {
      "min": int(lengths.min()), "max": int(lengths.max()),
      "mean": round(float(lengths.mean()), 3), "median": float(np.median(lengths)),
      "p90": float(np.percentile(lengths, 90))}
