"""Reader for the official Amazon Reviews 2023 files of one category.

Catalog: `meta_<Category>.jsonl[.gz]` (join key `parent_asin`). Interactions, by
`config.interactions`:
  'reviews'    `<Category>.jsonl[.gz]`: user_id, parent_asin, timestamp (ms), ...
  'benchmark'  `<Category>.{train,valid,test}.csv[.gz]` (user_id, parent_asin, rating, timestamp
               [, history]), in the folder or under 5core/timestamp_w_his or 5core/timestamp;
               all three files are pooled and re-split (the `history` column is not needed).
  'auto'       reviews when present, else the benchmark files.
Only metadata rows of items that occur in the interactions are kept.
"""

import csv
import json
import os

from semrec_jax.data import attributes
from semrec_jax.data.catalog import Catalog, price_text
from semrec_jax.data.errors import BadLines, DataError, DropLog
from semrec_jax.data.files import find, find_optional, json_lines, open_text, require_columns
from semrec_jax.data.interactions import Interactions
from semrec_jax.data.sources import Plan, read_local

_BENCHMARK_DIRS = ("", "5core/timestamp_w_his", "5core/timestamp", "0core/timestamp_w_his",
                   "0core/timestamp")


def layout(category: str) -> str:
  return (f"meta_{category}.jsonl[.gz] plus either {category}.jsonl[.gz] (reviews) or "
          f"{category}.{{train,valid,test}}.csv[.gz] (benchmark split)")


def read(config) -> tuple[Catalog, Interactions, DropLog]:
  return read_local(plan(config), config.max_bad_fraction)


def plan(config) -> Plan:
  """The files of one category and their parsers (see `semrec_jax.data.sources`)."""
  if not config.category:
    raise DataError("config.data.category is required for format 'amazon2023' (e.g. Video_Games)")
  folder, category = config.path, config.category
  meta_path = find(folder, [f"meta_{category}.jsonl"], layout(category))
  return Plan(interaction_files=tuple(_interaction_files(folder, category, config.interactions)),
              parse_interactions=parse_interactions, catalog_file=meta_path,
              parse_catalog=parse_meta, catalog_only_interacted=True)


def _interaction_files(folder: str, category: str, source: str) -> list[str]:
  if source not in ("auto", "reviews", "benchmark"):
    raise DataError(f"config.data.interactions must be auto, reviews or benchmark, not {source!r}")
  if source in ("auto", "reviews"):
    reviews = find_optional(folder, [f"{category}.jsonl"])
    if reviews:
      return [reviews]
    if source == "reviews":
      return [find(folder, [f"{category}.jsonl"], layout(category))]
  for sub in _BENCHMARK_DIRS:
    paths = [find_optional(os.path.join(folder, sub), [f"{category}.{split}.csv"])
             for split in ("train", "valid", "test")]
    if all(paths):
      return paths
    if any(paths):
      raise DataError(f"incomplete benchmark split in {os.path.join(folder, sub)!r}: found "
                      f"{[p for p in paths if p]}; expected {category}.{{train,valid,test}}.csv")
  raise DataError(f"no interactions found in {folder!r}; expected {layout(category)}")


def _parse_timestamp(value) -> int | None:
  try:
    return int(value)
  except (TypeError, ValueError):
    try:
      number = float(value)
    except (TypeError, ValueError):
      return None
    return int(number) if number == number and abs(number) != float("inf") else None


def parse_interactions(path: str, bad: BadLines):
  """(line, 0, user_id, parent_asin, timestamp) per usable row of a reviews or benchmark file."""
  if path.endswith((".csv", ".csv.gz")):
    yield from _parse_benchmark_csv(path, bad)
    return
  for line_number, record in json_lines(path, bad):
    row = _parse_row(record.get("user_id"), record.get("parent_asin"), record.get("timestamp"),
                     line_number, bad)
    if row:
      yield row


def _parse_benchmark_csv(path: str, bad: BadLines):
  with open_text(path) as f:
    reader = csv.DictReader(f)
    require_columns(reader.fieldnames, ["user_id", "parent_asin", "timestamp"], path)
    try:
      for row in reader:
        bad.total += 1
        if None in row:  # more fields than the header
          bad.add(reader.line_num, "malformed_csv", f"{len(row[None])} extra field(s)")
          continue
        parsed = _parse_row(row.get("user_id"), row.get("parent_asin"), row.get("timestamp"),
                            reader.line_num, bad)
        if parsed:
          yield parsed
    except csv.Error as e:
      raise DataError(f"{path}:{reader.line_num}: unreadable CSV ({e})") from e


def _parse_row(user, item, timestamp, line_number: int, bad: BadLines):
  user, item = str(user or "").strip(), str(item or "").strip()
  if not user:
    bad.add(line_number, "missing_user_id")
  elif not item:
    bad.add(line_number, "missing_parent_asin")
  else:
    ts = _parse_timestamp(timestamp)
    if ts is None:
      bad.add(line_number, "bad_timestamp", repr(timestamp))
    else:
      return line_number, 0, user, item, ts
  return None


def parse_meta(path: str, bad: BadLines):
  """(line, parent_asin, catalog fields, unparsed_price) per metadata row."""
  for line_number, meta in json_lines(path, bad):
    asin = str(meta.get("parent_asin") or "").strip()
    if not asin:
      bad.add(line_number, "missing_parent_asin")
      continue
    details = meta.get("details") or {}
    price = price_text(meta.get("price"))
    yield line_number, asin, dict(
        title=meta.get("title"), description=meta.get("description"),
        features=meta.get("features"), categories=meta.get("categories"),
        store=meta.get("store"),
        details=json.dumps(details, ensure_ascii=False) if details else "",
        price=price or "", **attributes.from_amazon2023(meta)), price is None
