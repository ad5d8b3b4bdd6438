"""Reader for the generic layout, for catalogs that are neither Amazon 2023 nor Games.

  items.jsonl[.gz]       one JSON object per line: `item_id` and `title` (required); optional
                         `description`, `features`, `categories` (string or list of strings),
                         `store`, `details` (object), and attributes `platform`, `brand`,
                         `product_type`, `genre`, `franchise`, `hardware_type`, `multiplayer`,
                         either top-level or inside an `attributes` object; `price` (US dollars,
                         a number or "$19.99").
  interactions.csv[.gz]  header `user_id,item_id,timestamp`; timestamp is any integer that orders
                         events (seconds or milliseconds).
"""

import csv
import json

from semrec_jax.data import attributes
from semrec_jax.data.catalog import (ATTRIBUTE_FIELDS, TEXT_FIELDS, Catalog, CatalogBuilder,
                                     price_text)
from semrec_jax.data.errors import BadLines, DataError, DropLog
from semrec_jax.data.files import find, json_lines, open_text, require_columns
from semrec_jax.data.interactions import InteractionBuffer, Interactions

LAYOUT = "items.jsonl[.gz] (item_id, title, ...) and interactions.csv[.gz] (user_id,item_id,timestamp)"


def read(config) -> tuple[Catalog, Interactions, DropLog]:
  drops = DropLog()
  items_path = find(config.path, ["items.jsonl"], LAYOUT)
  interactions_path = find(config.path, ["interactions.csv"], LAYOUT)
  interactions = _read_interactions(interactions_path, config.max_bad_fraction, drops)
  catalog = _read_items(items_path, config.max_bad_fraction, drops)
  return catalog, interactions, drops


def _read_items(path: str, max_bad_fraction: float, drops: DropLog) -> Catalog:
  bad = BadLines(path, max_bad_fraction)
  catalog = CatalogBuilder()
  for line_number, record in json_lines(path, bad):
    item_id = str(record.get("item_id") or "").strip()
    if not item_id:
      bad.add(line_number, "missing_item_id")
      continue
    fields = {k: record[k] for k in TEXT_FIELDS + ATTRIBUTE_FIELDS if record.get(k)}
    nested = record.get("attributes")
    if isinstance(nested, dict):
      fields.update({k: nested[k] for k in ATTRIBUTE_FIELDS if nested.get(k)})
    if isinstance(fields.get("details"), dict):
      fields["details"] = json.dumps(fields["details"], ensure_ascii=False)
    price = price_text(record.get("price"))
    if price is None:
      drops["unparsed_price"] += 1  # the item stays, without a price
    fields["price"] = price or ""
    fields["platform"] = (attributes.canonical_platform(str(fields.get("platform", "")))
                          or str(fields.get("platform", "")))
    catalog.add(item_id, **fields)
  bad.check()
  drops.merge_bad_lines(bad)
  drops["duplicate_item_rows"] += catalog.duplicates
  return catalog.build()


def _read_interactions(path: str, max_bad_fraction: float, drops: DropLog) -> Interactions:
  bad = BadLines(path, max_bad_fraction)
  buffer = InteractionBuffer()
  with open_text(path) as f:
    reader = csv.DictReader(f)
    require_columns(reader.fieldnames, ["user_id", "item_id", "timestamp"], path)
    try:
      for row in reader:
        bad.total += 1
        user = (row.get("user_id") or "").strip()
        item = (row.get("item_id") or "").strip()
        if None in row:
          bad.add(reader.line_num, "malformed_csv", "more fields than the header")
        elif not user:
          bad.add(reader.line_num, "missing_user_id")
        elif not item:
          bad.add(reader.line_num, "missing_item_id")
        else:
          try:
            buffer.add(user, item, int(row["timestamp"]))
          except (TypeError, ValueError):
            bad.add(reader.line_num, "bad_timestamp", repr(row.get("timestamp")))
    except csv.Error as e:
      raise DataError(f"{path}:{reader.line_num}: unreadable CSV ({e})") from e
  bad.check()
  drops.merge_bad_lines(bad)
  return buffer.build()
