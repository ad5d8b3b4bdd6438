"""Reader for the official Amazon Reviews 2023 files of one category.

Catalog: `meta_<Category>.jsonl[.gz]` (join key `parent_asin`). Interactions, by
`config.interactions`:
  'reviews'    `<Category>.jsonl[.gz]`: user_id, parent_asin, timestamp (ms), ...
  'benchmark'  `<Category>.{train,valid,test}.csv[.gz]` (user_id, parent_asin, rating, timestamp
               [, history]), in the folder or under 5core/timestamp_w_his or 5core/timestamp;
               all three files are pooled and re-split (the `history` column is not needed).
  'auto'       reviews when present, else the benchmark files.
Only metadata rows of items that occur in the interactions are kept in memory.
"""

import csv
import json
import os

from semrec_jax.data import attributes
from semrec_jax.data.catalog import Catalog, CatalogBuilder, price_text
from semrec_jax.data.errors import BadLines, DataError, DropLog
from semrec_jax.data.files import find, find_optional, json_lines, open_text, require_columns
from semrec_jax.data.interactions import InteractionBuffer, Interactions

_BENCHMARK_DIRS = ("", "5core/timestamp_w_his", "5core/timestamp", "0core/timestamp_w_his",
                   "0core/timestamp")


def layout(category: str) -> str:
  return (f"meta_{category}.jsonl[.gz] plus either {category}.jsonl[.gz] (reviews) or "
          f"{category}.{{train,valid,test}}.csv[.gz] (benchmark split)")


def read(config) -> tuple[Catalog, Interactions, DropLog]:
  if not config.category:
    raise DataError("config.data.category is required for format 'amazon2023' (e.g. Video_Games)")
  folder, category, drops = config.path, config.category, DropLog()
  meta_path = find(folder, [f"meta_{category}.jsonl"], layout(category))
  buffer = InteractionBuffer()
  for path in _interaction_files(folder, category, config.interactions):
    if path.endswith((".csv", ".csv.gz")):
      _read_benchmark_csv(path, buffer, config.max_bad_fraction, drops)
    else:
      _read_reviews(path, buffer, config.max_bad_fraction, drops)
  catalog = _read_meta(meta_path, set(buffer.item_vocab), config.max_bad_fraction, drops)
  return catalog, buffer.build(), drops


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


def _read_reviews(path: str, buffer: InteractionBuffer, max_bad_fraction: float,
                  drops: DropLog) -> None:
  bad = BadLines(path, max_bad_fraction)
  for line_number, record in json_lines(path, bad):
    _add_row(record.get("user_id"), record.get("parent_asin"), record.get("timestamp"),
             line_number, buffer, bad)
  bad.check()
  drops.merge_bad_lines(bad)


def _read_benchmark_csv(path: str, buffer: InteractionBuffer, max_bad_fraction: float,
                        drops: DropLog) -> None:
  bad = BadLines(path, max_bad_fraction)
  with open_text(path) as f:
    reader = csv.DictReader(f)
    require_columns(reader.fieldnames, ["user_id", "parent_asin", "timestamp"], path)
    try:
      for row in reader:
        bad.total += 1
        if None in row:  # more fields than the header
          bad.add(reader.line_num, "malformed_csv", f"{len(row[None])} extra field(s)")
          continue
        _add_row(row.get("user_id"), row.get("parent_asin"), row.get("timestamp"),
                 reader.line_num, buffer, bad)
    except csv.Error as e:
      raise DataError(f"{path}:{reader.line_num}: unreadable CSV ({e})") from e
  bad.check()
  drops.merge_bad_lines(bad)


def _add_row(user, item, timestamp, line_number: int, buffer: InteractionBuffer,
             bad: BadLines) -> None:
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
      buffer.add(user, item, ts)


def _read_meta(path: str, wanted: set[str], max_bad_fraction: float, drops: DropLog) -> Catalog:
  bad = BadLines(path, max_bad_fraction)
  catalog = CatalogBuilder()
  for line_number, meta in json_lines(path, bad):
    asin = str(meta.get("parent_asin") or "").strip()
    if not asin:
      bad.add(line_number, "missing_parent_asin")
      continue
    if asin not in wanted:
      continue  # an item nobody interacted with: not part of the dataset
    details = meta.get("details") or {}
    price = price_text(meta.get("price"))
    if price is None:
      drops["unparsed_price"] += 1  # the item stays, without a price
    catalog.add(
        asin, title=meta.get("title"), description=meta.get("description"),
        features=meta.get("features"), categories=meta.get("categories"),
        store=meta.get("store"),
        details=json.dumps(details, ensure_ascii=False) if details else "",
        price=price or "", **attributes.from_amazon2023(meta))
  bad.check()
  drops.merge_bad_lines(bad)
  drops["duplicate_item_rows"] += catalog.duplicates
  return catalog.build()
