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


def test_a_cached_copy_is_remembered_until_this_process_writes_there(bucket, tmp_path,
                                                                      monkeypatch):
  monkeypatch.setenv("SEMREC_CACHE", str(tmp_path / "cache"))
  listings = []
  files = storage._files  # pylint: disable=protected-access
  monkeypatch.setattr(storage, "_files", lambda *a: listings.append(a) or files(*a))
  folder = f"{bucket}/remembered"
  storage.write_text(f"{folder}/part", "x")
  first = storage.cached_copy(folder)
  assert storage.cached_copy(folder) == first and storage.cached_copy(folder + "/") == first
  assert len(listings) == 1  # the bucket is listed once per process
  storage.copy_tree(first, f"{bucket}/elsewhere")  # a write outside the folder keeps it
  assert storage.cached_copy(folder) == first and len(listings) == 1
  storage.write_text(f"{folder}/part", "yy")  # a write inside: listed again, copied again
  second = storage.cached_copy(folder)
  assert second != first and len(listings) == 2
  with open(os.path.join(second, "part"), encoding="utf-8") as f:
    assert f.read() == "yy"


def test_a_mirror_uploads_what_changed_and_removes_its_folder(bucket):
  mirror = storage.Mirror(f"{bucket}/mirror")
  local = mirror.local
  with open(os.path.join(local, "events"), "w", encoding="utf-8") as f:
    f.write("a")
  mirror.sync()
  assert storage.read_text(f"{bucket}/mirror/events") == "a"
  storage.write_text(f"{bucket}/mirror/events", "changed on the bucket")
  mirror.sync()  # nothing changed locally: nothing sent
  assert storage.read_text(f"{bucket}/mirror/events") == "changed on the bucket"
  with open(os.path.join(local, "events"), "a", encoding="utf-8") as f:
    f.write("b")
  os.makedirs(os.path.join(local, "sub"))
  with open(os.path.join(local, "sub", "more"), "w", encoding="utf-8") as f:
    f.write("c")
  mirror.close()
  assert storage.read_text(f"{bucket}/mirror/events") == "ab"
  assert storage.read_text(f"{bucket}/mirror/sub/more") == "c"
  assert not os.path.exists(local)


def test_a_figure_is_saved_as_png(root):
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=import-outside-toplevel
  fig = plt.figure(figsize=(2, 1))
  storage.save_figure(fig, f"{root}/figs/f.png", dpi=50)
  plt.close(fig)
  data = storage.path(f"{root}/figs/f.png").read_bytes()
  assert data[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(data[16:20], "big") == 100  # 2 in x 50


def test_the_emulator_moves_objects_as_cloud_storage_does(bucket):
  """gcsfs renames through `moveTo` first: the emulator must answer it (not 501, which gcsfs
  retries for ~30 s), keep the object on a move onto itself and 404 a missing source."""
  import urllib.error  # pylint: disable=import-outside-toplevel
  import urllib.parse  # pylint: disable=import-outside-toplevel
  import urllib.request  # pylint: disable=import-outside-toplevel

  def move(source, dest):
    source, dest = (urllib.parse.quote(name, safe="") for name in (source, dest))
    url = (f"{os.environ['STORAGE_EMULATOR_HOST']}/storage/v1/b/{gcs_emulator.BUCKET}/o/"
           f"{source}/moveTo/o/{dest}")
    try:
      with urllib.request.urlopen(urllib.request.Request(url, data=b"", method="POST")) as r:
        return r.status
    except urllib.error.HTTPError as err:
      return err.code

  storage.write_text(f"{bucket}/m/a.txt", "moved")
  assert move("storage/m/a.txt", "storage/m/b.txt") == 200
  assert storage.read_text(f"{bucket}/m/b.txt") == "moved"
  assert not storage.exists(f"{bucket}/m/a.txt")
  assert move("storage/m/b.txt", "storage/m/b.txt") == 400
  assert storage.read_text(f"{bucket}/m/b.txt") == "moved"
  assert move("storage/m/a.txt", "storage/m/c.txt") == 404
