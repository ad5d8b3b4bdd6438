"""Finding and opening input files, plain or gzip-compressed."""

import gzip
import io
import json
import os

from semrec_jax.data.errors import BadLines, DataError


def find(folder: str, names: list[str], layout: str) -> str:
  """Returns the first of `names` (each tried as is and with .gz) that exists under `folder`.

  `layout` describes the expected files; it goes into the error when none is found.
  """
  if not os.path.isdir(folder):
    if not folder:
      raise DataError("this config needs the data folder: add --config.data.path=FOLDER "
                      f"(holding {layout})")
    raise DataError(f"data folder {folder!r} does not exist; expected {layout}")
  for name in names:
    for candidate in (name, name + ".gz"):
      path = os.path.join(folder, candidate)
      if os.path.isfile(path):
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
  if path.endswith(".gz"):
    return gzip.open(path, "rt", encoding="utf-8", newline="")
  return open(path, "r", encoding="utf-8", newline="")


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
