"""Finding and opening input files, plain or gzip-compressed."""

import gzip
import io
import json
import os

from semrec_jax.data.errors import BadLines, DataError


def find(folder: str, names: list[str], layout: str) -> str:
  """Returns the first of `names` (each tried as is and with .gz) that exists under `folder`.

  `layout` describes the expected files; it goes into the error when none is found. A remote
  folder (`gs://...`, for the Beam path) has no directories to check, only files.
  """
  remote = _is_remote(folder)
  if not remote and not os.path.isdir(folder):
    if not folder:
      raise DataError("this config needs the data folder: add --config.data.path=FOLDER "
                      f"(holding {layout})")
    raise DataError(f"data folder {folder!r} does not exist; expected {layout}")
  for name in names:
    for candidate in (name, name + ".gz"):
      path = _remote_join(folder, candidate) if remote else os.path.join(folder, candidate)
      if _remote_exists(path) if remote else os.path.isfile(path):
        return path
  tried = ", ".join(n + "[.gz]" for n in names)
  raise DataError(f"none of {tried} found in {folder!r}; expected {layout}")


def find_optional(folder: str, names: list[str]) -> str | None:
  try:
    return find(folder, names, layout="")
  except DataError:
    return None


def open_text(path: str) -> io.TextIOBase:
  """Opens a UTF-8 text file, transparently gunzipping `*.gz`; newline='' keeps CSV quoting intact."""
  if _is_remote(path):
    from apache_beam.io.filesystems import FileSystems  # pylint: disable=g-import-not-at-top
    from apache_beam.io.filesystem import CompressionTypes  # pylint: disable=g-import-not-at-top
    raw = FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    binary = gzip.GzipFile(fileobj=raw) if path.endswith(".gz") else raw
    return io.TextIOWrapper(binary, encoding="utf-8", newline="")
  if path.endswith(".gz"):
    return gzip.open(path, "rt", encoding="utf-8", newline="")
  return open(path, "r", encoding="utf-8", newline="")


def _is_remote(path: str) -> bool:
  """`gs://`, `s3://`, ... : read through Apache Beam's file systems (the Beam path only)."""
  return "://" in (path or "")


def _remote_join(folder: str, name: str) -> str:
  return folder.rstrip("/") + "/" + name


def _remote_exists(path: str) -> bool:
  try:
    from apache_beam.io.filesystems import FileSystems  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise DataError(f"{path}: remote input is read through Apache Beam: pip install "
                    "'semrec_jax[beam]' (with apache-beam[gcp] for gs://)") from e
  return FileSystems.exists(path)


def require_columns(fieldnames, required: list[str], path: str) -> None:
  """Raises DataError naming the file when a CSV header lacks a required column."""
  missing = [c for c in required if c not in (fieldnames or [])]
  if missing:
    raise DataError(f"{path}: missing column(s) {missing}; header is {fieldnames}")


def json_lines(path: str, bad: BadLines):
  """Yields (line_number, object) per JSON-object line; blank lines are skipped, malformed ones
  counted in `bad` (which also counts every non-blank line in its total)."""
  with open_text(path) as f:
    for line_number, line in enumerate(f, start=1):
      if not line.strip():
        continue
      bad.total += 1
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        bad.add(line_number, "malformed_json", str(e))
        continue
      if not isinstance(record, dict):
        bad.add(line_number, "malformed_json", "not a JSON object")
        continue
      yield line_number, record
