"""Reader for the Games benchmark layout (Amazon 2018 Video_Games 5-core).

Files in the folder (each optionally gzipped):
  items.csv                 item_id, asin, title, platform_from_title, ... (one row per item)
  sequences.tsv             user_id <TAB> space-separated ASINs in chronological order
  items_2023_llm_attrs.csv  optional: parent_asin, genre, brand, product_type, platform, ...

The sequences carry no timestamps: an interaction's position in its user's line is its timestamp.
"""

import csv

from semrec_jax.data import attributes
from semrec_jax.data.catalog import ATTRIBUTE_FIELDS, Catalog
from semrec_jax.data.errors import BadLines, DropLog
from semrec_jax.data.files import find, find_optional, open_text, require_columns
from semrec_jax.data.interactions import Interactions
from semrec_jax.data.sources import Plan, read_local

LAYOUT = ("items.csv[.gz] (item_id,asin,title,...), sequences.tsv[.gz] (user_id<TAB>asin asin ...), "
          "optional items_2023_llm_attrs.csv[.gz]")


def read(config) -> tuple[Catalog, Interactions, DropLog]:
  return read_local(plan(config), config.max_bad_fraction)


def plan(config) -> Plan:
  """The files of the folder and their parsers (see `semrec_jax.data.sources`)."""
  folder = config.path
  items_path = find(folder, ["items.csv"], LAYOUT)
  sequences_path = find(folder, ["sequences.tsv"], LAYOUT)
  return Plan(interaction_files=(sequences_path,), parse_interactions=parse_sequences,
              catalog_file=items_path, parse_catalog=parse_items,
              attribute_file=find_optional(folder, ["items_2023_llm_attrs.csv"]),
              parse_attributes=parse_attributes, catalog_first=True)


def parse_items(path: str, bad: BadLines):
  """(line, asin, fields, False) per row of items.csv."""
  with open_text(path) as f:
    reader = csv.DictReader(f)
    require_columns(reader.fieldnames, ["asin", "title"], path)
    for row in reader:
      bad.total += 1
      asin = (row.get("asin") or "").strip()
      if not asin:
        bad.add(reader.line_num, "missing_asin")
        continue
      title = row.get("title") or ""
      platform = attributes.column_platform(row.get("platform_from_title") or "", title)
      yield reader.line_num, asin, dict(title=title, platform=platform), False


def parse_attributes(path: str, bad: BadLines):
  """(line, parent_asin, attributes) per row of the LLM-extracted side file; they only fill empty
  fields, so the title's platform keeps priority."""
  with open_text(path) as f:
    reader = csv.DictReader(f)
    require_columns(reader.fieldnames, ["parent_asin"], path)
    for row in reader:
      bad.total += 1
      asin = (row.get("parent_asin") or "").strip()
      if not asin:
        bad.add(reader.line_num, "missing_parent_asin")
        continue
      values = {k: (row.get(k) or "") for k in ATTRIBUTE_FIELDS if k in row}
      if "platform" in values:
        values["platform"] = attributes.canonical_platform(values["platform"])
      yield reader.line_num, asin, values


def parse_sequences(path: str, bad: BadLines):
  """(line, position, user_id, asin, position) per interaction: the position is the timestamp."""
  with open_text(path) as f:
    for line_number, line in enumerate(f, start=1):
      line = line.rstrip("\r\n")
      if line_number == 1 and line.startswith("user_id\t"):
        continue  # header
      if not line.strip():
        continue
      bad.total += 1
      parts = line.split("\t")
      if len(parts) != 2:
        bad.add(line_number, "malformed_line", f"expected 2 tab-separated fields, got {len(parts)}")
        continue
      user, asins = parts[0].strip(), parts[1].split()
      if not user:
        bad.add(line_number, "missing_user_id")
        continue
      if not asins:
        bad.add(line_number, "empty_sequence")
        continue
      for position, asin in enumerate(asins):
        yield line_number, position, user, asin, position
