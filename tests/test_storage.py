"""storage: the same files on a local folder and on a bucket (the in-memory emulator)."""

import os

import numpy as np
import pytest

from semrec_jax import storage

pytest.importorskip("gcp_storage_emulator")
pytest.importorskip("gcsfs")
from tests import gcs_emulator  # noqa: E402  pylint: disable=wrong-import-position


@pytest.fixture(scope="module")
def bucket():
  server, env = gcs_emulator.start()
  saved = {k: os.environ.get(k) for k in env}
  os.environ.update(env)
  yield f"gs://{gcs_emulator.BUCKET}/storage"
  for k, v in saved.items():
    if v is None:
      os.environ.pop(k, None)
    else:
      os.environ[k] = v
  server.stop()


@pytest.fixture(params=["local", "bucket"])
def root(request, tmp_path):
  return str(tmp_path / "w") if request.param == "local" else request.getfixturevalue("bucket")


def test_files_round_trip_and_folders_move(root):
  storage.write_json(f"{root}/a/x.json", {"a": [1, 2]})
  storage.save_array(f"{root}/a/e.npy", np.arange(5, dtype=np.int32))
  storage.save_arrays(f"{root}/a/d/t.npz", compressed=True, x=np.ones(3), y=np.zeros(2))
  log = storage.Appender(f"{root}/a/m.jsonl")
  log.write("1\n")
  log.flush()
  log.close()
  log = storage.Appender(f"{root}/a/m.jsonl")  # a resumed run appends to what is there
  log.write("2\n")
  log.close()
  storage.move(f"{root}/a", f"{root}/b")
  assert not storage.exists(f"{root}/a")
  assert storage.read_json(f"{root}/b/x.json") == {"a": [1, 2]}
  np.testing.assert_array_equal(storage.load_array(f"{root}/b/e.npy"), np.arange(5))
  assert sorted(storage.load_array(f"{root}/b/d/t.npz")) == ["x", "y"]
  assert storage.read_text(f"{root}/b/m.jsonl") == "1\n2\n"
  with storage.local_folder(f"{root}/c") as local:  # a POSIX-only writer's output goes up
    with open(os.path.join(local, "f.txt"), "w", encoding="utf-8") as f:
      f.write("posix")
  assert storage.read_text(f"{root}/c/f.txt") == "posix"
  storage.remove_tree(f"{root}/b")
  assert not storage.exists(f"{root}/b/x.json")


def test_a_bucket_folder_is_cached_once_and_again_when_rewritten(bucket, tmp_path, monkeypatch):
  monkeypatch.setenv("SEMREC_CACHE", str(tmp_path / "cache"))
  folder = f"{bucket}/dataset"
  storage.write_json(f"{folder}/info.json", {"version": 1})
  storage.write_text(f"{folder}/shard/records", "abc")
  first = storage.cached_copy(folder)
  assert first.startswith(str(tmp_path / "cache"))
  with open(os.path.join(first, "shard", "records"), encoding="utf-8") as f:
    assert f.read() == "abc"
  assert storage.cached_copy(folder) == first  # same contents: the same copy
  storage.write_json(f"{folder}/info.json", {"version": 2})
  second = storage.cached_copy(folder)
  assert second != first and storage.read_json(os.path.join(second, "info.json"))["version"] == 2
  assert storage.cached_copy(str(tmp_path)) == str(tmp_path)  # local folders are read in place
