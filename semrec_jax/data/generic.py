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
from semrec_jax.data.catalog import ATTRIBUTE_FIELDS, TEXT_FIELDS, Catalog, price_text
from semrec_jax.data.errors import BadLines, DataError, DropLog
from semrec_jax.data.files import find, json_lines, open_text, require_columns
from semrec_jax.data.interactions import Interactions
from semrec_jax.data.sources import Plan, read_local

LAYOUT = "items.jsonl[.gz] (item_id, title, ...) and interactions.csv[.gz] (user_id,item_id,timestamp)"


def read(config) -> tuple[Catalog, Interactions, DropLog]:
  return read_local(plan(config), config.max_bad_fraction)


def plan(config) -> Plan:
  """The two files and their parsers (see `semrec_jax.data.sources`)."""
  items_path = find(config.path, ["items.jsonl"], LAYOUT)
  interactions_path = find(config.path, ["interactions.csv"], LAYOUT)
  return Plan(interaction_files=(interactions_path,), parse_interactions=parse_interactions,
              catalog_file=items_path, parse_catalog=parse_items)


def parse_items(path: str, bad: BadLines):
  """(line, item_id, fields, unparsed_price) per row of items.jsonl."""
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
    fields["price"] = price or ""
    fields["platform"] = (attributes.canonical_platform(str(fields.get("platform", "")))
                          or str(fields.get("platform", "")))
    yield line_number, item_id, fields, price is None


def parse_interactions(path: str, bad: BadLines):
  """(line, 0, user_id, item_id, timestamp) per usable row of interactions.csv."""
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
            timestamp = int(row["timestamp"])
          except (TypeError, ValueError):
            bad.add(reader.line_num, "bad_timestamp", repr(row.get("timestamp")))
          else:
            yield reader.line_num, 0, user, item, timestamp
    except csv.Error as e:
      raise DataError(f"{path}:{reader.line_num}: unreadable CSV ({e})") from e
