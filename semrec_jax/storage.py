"""Files under a workdir that is a local folder or a bucket (`gs://...`, shared by a pod's workers).

Every stage reads and writes through `etils.epath` with these helpers. The few writers that need a
POSIX file (ArrayRecord through TFDS, sentencepiece training, tensorboard event files, the log
file) write into a local folder that is copied up (`local_folder`, `Mirror`); files that grow by
appending (metrics.jsonl) are rewritten whole on a bucket, which has no append (`Appender`).
"""

import contextlib
import hashlib
import io
import json
import os
import shutil
import tempfile

import numpy as np
from etils import epath


def is_remote(path) -> bool:
  return "://" in str(path)


def path(where) -> epath.Path:
  """An epath.Path: remote paths as given, local ones made absolute."""
  return epath.Path(where if is_remote(where) else os.path.abspath(where))


def exists(where) -> bool:
  return path(where).exists()


def read_text(where) -> str:
  return path(where).read_text(encoding="utf-8")


def write_text(where, text: str) -> None:
  target = path(where)
  _forget_cached(target)
  target.parent.mkdir(parents=True, exist_ok=True)
  target.write_text(text, encoding="utf-8")


def read_json(where):
  return json.loads(read_text(where))


def write_json(where, value, **dump_args) -> None:
  dump_args.setdefault("indent", 2)
  write_text(where, json.dumps(value, **dump_args))


def save_array(where, array: np.ndarray) -> None:
  """np.save to a local or remote path."""
  buffer = io.BytesIO()
  np.save(buffer, np.asarray(array), allow_pickle=False)
  write_bytes(where, buffer.getvalue())


def save_arrays(where, compressed: bool = False, **arrays) -> None:
  """np.savez (or np.savez_compressed) to a local or remote path."""
  buffer = io.BytesIO()
  (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
  write_bytes(where, buffer.getvalue())


def load_array(where):
  """np.load of a .npy (an array) or .npz (a dict of arrays), local or remote; no pickles."""
  source = io.BytesIO(path(where).read_bytes()) if is_remote(where) else where
  loaded = np.load(source, allow_pickle=False)
  if isinstance(loaded, np.lib.npyio.NpzFile):
    with loaded:
      return {name: loaded[name] for name in loaded.files}
  return loaded


def write_bytes(where, data: bytes) -> None:
  target = path(where)
  _forget_cached(target)
  target.parent.mkdir(parents=True, exist_ok=True)
  target.write_bytes(data)


def save_figure(fig, where, dpi: int) -> None:
  """A matplotlib figure as a PNG at a local or remote path."""
  png = io.BytesIO()
  fig.savefig(png, format="png", dpi=dpi)
  write_bytes(where, png.getvalue())


def copy_tree(source, destination) -> None:
  """Copies every file under `source` to the same relative path under `destination`."""
  source, destination = path(source), path(destination)
  _forget_cached(destination)
  destination.mkdir(parents=True, exist_ok=True)
  for entry in source.iterdir():
    if entry.is_dir():
      copy_tree(entry, destination / entry.name)
    else:
      entry.copy(destination / entry.name, overwrite=True)


def remove_tree(where) -> None:
  target = path(where)
  _forget_cached(target)
  if target.exists():
    target.rmtree()


def move(source, destination) -> None:
  """Renames a folder (on a bucket: copy then delete, as buckets have no folders to rename)."""
  source, destination = path(source), path(destination)
  _forget_cached(destination)
  if is_remote(source):
    copy_tree(source, destination)
    source.rmtree()
  else:
    source.rename(destination)


@contextlib.contextmanager
def local_folder(where):
  """Yields a local folder for writers that need POSIX files: `where` itself when it is local,
  else a temporary folder copied to `where` when the block succeeds."""
  if not is_remote(where):
    os.makedirs(where, exist_ok=True)
    yield str(where)
    return
  scratch = tempfile.mkdtemp(prefix="semrec_upload_")
  try:
    yield scratch
    copy_tree(scratch, where)
  finally:
    shutil.rmtree(scratch, ignore_errors=True)


def _files(folder: epath.Path, prefix: str = ""):
  """(relative name, Path) of every file under `folder`, sorted."""
  out = []
  for entry in sorted(folder.iterdir(), key=lambda p: p.name):
    if entry.is_dir():
      out += _files(entry, f"{prefix}{entry.name}/")
    else:
      out.append((prefix + entry.name, entry))
  return out


_CACHED: dict[str, str] = {}  # remote folder -> its local copy, for this process


def _forget_cached(where) -> None:
  """Drops the remembered copies of folders this process is writing into (above or under
  `where`): their next `cached_copy` looks at the bucket again."""
  written = str(where).rstrip("/") + "/"
  for key in [k for k in _CACHED if written.startswith(k + "/") or (k + "/").startswith(written)]:
    del _CACHED[key]


def cached_copy(where) -> str:
  """A local copy of a folder that does not change once written (a prepared dataset): `where`
  itself when local. On a bucket, ArrayRecord reads one request per record, so the folder is
  copied once per machine into $SEMREC_CACHE (default ~/.cache/semrec_jax), under a key of its
  path, file sizes and JSON metadata: a rewritten folder gets a new copy. The answer is
  remembered for the process (the bucket is listed once), until this process writes there."""
  if not is_remote(where):
    return str(where)
  memo = str(path(where)).rstrip("/")
  remembered = _CACHED.get(memo)
  if remembered and os.path.isdir(remembered):
    return remembered
  files = _files(path(where))
  key = hashlib.sha256(str(where).encode())
  for name, entry in files:
    key.update(f"{name}:{entry.stat().length}".encode())
    if name.endswith(".json"):
      key.update(entry.read_bytes())
  root = os.environ.get("SEMREC_CACHE") or os.path.expanduser("~/.cache/semrec_jax")
  local = os.path.join(root, key.hexdigest()[:24])
  if not os.path.isdir(local):
    os.makedirs(root, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix=".incoming_", dir=root)
    for name, entry in files:
      target = epath.Path(scratch) / name
      target.parent.mkdir(parents=True, exist_ok=True)
      entry.copy(target, overwrite=True)
    try:
      os.rename(scratch, local)  # another process on this machine may have won the race
    except OSError:
      shutil.rmtree(scratch, ignore_errors=True)
  _CACHED[memo] = local
  return local


class Mirror:
  """A local folder whose files are copied to a remote `where` by `sync()` (for writers that keep
  files open, like tensorboard's): only files that changed since the last sync; `close()` syncs
  and removes the local folder. For a local `where`, the folder itself and no copying."""

  def __init__(self, where):
    self.remote = where if is_remote(where) else None
    self.local = tempfile.mkdtemp(prefix="semrec_mirror_") if self.remote else str(where)
    os.makedirs(self.local, exist_ok=True)
    self._sent: dict[str, tuple[int, int]] = {}  # relative name -> (size, mtime_ns) uploaded

  def sync(self) -> None:
    if not self.remote or not os.path.isdir(self.local):
      return
    for folder, _, names in os.walk(self.local):
      for name in names:
        local = os.path.join(folder, name)
        relative = os.path.relpath(local, self.local)
        stat = os.stat(local)
        if self._sent.get(relative) == (stat.st_size, stat.st_mtime_ns):
          continue
        target = path(self.remote) / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        epath.Path(local).copy(target, overwrite=True)
        self._sent[relative] = (stat.st_size, stat.st_mtime_ns)

  def close(self) -> None:
    self.sync()
    if self.remote:
      shutil.rmtree(self.local, ignore_errors=True)


class Appender:
  """A text file that grows line by line (metrics.jsonl): appended to when local; on a bucket,
  which cannot append, kept in memory with what was there and rewritten whole on `flush()`."""

  def __init__(self, where):
    self.where = path(where)
    self.where.parent.mkdir(parents=True, exist_ok=True)
    if is_remote(where):
      self._lines = [self.where.read_text(encoding="utf-8")] if self.where.exists() else []
      self._file = None
    else:
      self._file = open(self.where, "a", encoding="utf-8")  # pylint: disable=consider-using-with

  def write(self, text: str) -> None:
    if self._file is not None:
      self._file.write(text)
    else:
      self._lines.append(text)

  def flush(self) -> None:
    if self._file is not None:
      self._file.flush()
    else:
      self.where.write_text("".join(self._lines), encoding="utf-8")

  def close(self) -> None:
    self.flush()
    if self._file is not None:
      self._file.close()
