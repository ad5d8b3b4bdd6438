"""Reader for the Games benchmark layout (Amazon 2018 Video_Games 5-core, as in ../shared/data).

Files in the folder (each optionally gzipped):
  items.csv                 item_id, asin, title, platform_from_title, ... (one row per item)
  sequences.tsv             user_id <TAB> space-separated ASINs in chronological order
  items_2023_llm_attrs.csv  optional: parent_asin, genre, brand, product_type, platform, ...

The sequences carry no timestamps: an interaction's position in its user's line is its timestamp.
"""

import csv

from semrec_jax.data import attributes
from semrec_jax.data.catalog import ATTRIBUTE_FIELDS, Catalog, CatalogBuilder
from semrec_jax.data.errors import BadLines, DropLog
from semrec_jax.data.files import find, find_optional, open_text, require_columns
from semrec_jax.data.interactions import InteractionBuffer, Interactions

LAYOUT = ("items.csv[.gz] (item_id,asin,title,...), sequences.tsv[.gz] (user_id<TAB>asin asin ...), "
          "optional items_2023_llm_attrs.csv[.gz]")


def read(config) -> tuple[Catalog, Interactions, DropLog]:
  folder = config.path
  drops = DropLog()
  items_path = find(folder, ["items.csv"], LAYOUT)
  sequences_path = find(folder, ["sequences.tsv"], LAYOUT)
  catalog = _read_items(items_path, config.max_bad_fraction, drops)
  attrs_path = find_optional(folder, ["items_2023_llm_attrs.csv"])
  if attrs_path:
    _read_attributes(attrs_path, catalog, config.max_bad_fraction, drops)
  interactions = _read_sequences(sequences_path, config.max_bad_fraction, drops)
  return catalog.build(), interactions, drops


def _read_items(path: str, max_bad_fraction: float, drops: DropLog) -> CatalogBuilder:
  bad = BadLines(path, max_bad_fraction)
  catalog = CatalogBuilder()
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
      platform = attributes.canonical_platform(row.get("platform_from_title") or "")
      catalog.add(asin, title=title, platform=platform or attributes.platform_from_title(title))
  bad.check()
  drops.merge_bad_lines(bad)
  drops["duplicate_item_rows"] += catalog.duplicates
  return catalog


def _read_attributes(path: str, catalog: CatalogBuilder, max_bad_fraction: float,
                     drops: DropLog) -> None:
  """Fills attributes from the LLM-extracted side file; titles keep priority for the platform."""
  bad = BadLines(path, max_bad_fraction)
  with open_text(path) as f:
    reader = csv.DictReader(f)
    require_columns(reader.fieldnames, ["parent_asin"], path)
    for row in reader:
      bad.total += 1
      asin = (row.get("parent_asin") or "").strip()
      if not asin:
        bad.add(reader.line_num, "missing_parent_asin")
        continue
      if asin not in catalog:
        drops["attribute_rows_for_unknown_items"] += 1
        continue
      values = {k: (row.get(k) or "") for k in ATTRIBUTE_FIELDS if k in row}
      if "platform" in values:
        values["platform"] = attributes.canonical_platform(values["platform"])
      catalog.update(asin, **values)
  bad.check()
  drops.merge_bad_lines(bad)


def _read_sequences(path: str, max_bad_fraction: float, drops: DropLog) -> Interactions:
  bad = BadLines(path, max_bad_fraction)
  buffer = InteractionBuffer()
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
        buffer.add(user, asin, position)
  bad.check()
  drops.merge_bad_lines(bad)
  return buffer.build()

