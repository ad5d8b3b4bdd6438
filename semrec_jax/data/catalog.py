"""The item catalog: one row of text fields and attributes per item, in input order."""

import dataclasses

TEXT_FIELDS = ("title", "description", "features", "categories", "store", "details")
ATTRIBUTE_FIELDS = ("platform", "brand", "product_type", "genre", "franchise", "hardware_type",
                    "multiplayer")
PRICE_FIELD = "price"  # US dollars as "19.99", '' where unknown (steering by price band)
FIELDS = TEXT_FIELDS + ATTRIBUTE_FIELDS + (PRICE_FIELD,)
# List-valued inputs (features, description paragraphs, categories) are joined with this separator;
# multi-valued attributes keep '|' between values.
LIST_SEPARATOR = "\n"


@dataclasses.dataclass
class Catalog:
  """Item ids and, for every name in FIELDS, a list of strings ('' where unknown)."""

  item_ids: list[str]
  fields: dict[str, list[str]]

  def __len__(self) -> int:
    return len(self.item_ids)

  def take(self, rows) -> "Catalog":
    rows = list(rows)
    return Catalog([self.item_ids[r] for r in rows],
                   {name: [column[r] for r in rows] for name, column in self.fields.items()})

  def row(self, r: int) -> dict[str, str]:
    return {"item_id": self.item_ids[r], **{name: col[r] for name, col in self.fields.items()}}


class CatalogBuilder:
  """Collects catalog rows; repeated ids keep the first row and are counted."""

  def __init__(self):
    self._rows: dict[str, dict[str, str]] = {}
    self.duplicates = 0

  def __contains__(self, item_id: str) -> bool:
    return item_id in self._rows

  def add(self, item_id: str, **fields: str) -> None:
    if item_id in self._rows:
      make_row(fields)  # still checks the field names
      self.duplicates += 1
      return
    self._rows[item_id] = make_row(fields)

  def update(self, item_id: str, **fields: str) -> None:
    """Fills empty fields of an existing row (used for side files such as extra attributes)."""
    fill_row(self._rows[item_id], fields)

  def build(self) -> Catalog:
    ids = list(self._rows)
    return Catalog(ids, {name: [self._rows[i][name] for i in ids] for name in FIELDS})


def make_row(fields: dict) -> dict[str, str]:
  """One catalog row: every name in FIELDS, cleaned ('' where absent)."""
  unknown = set(fields) - set(FIELDS)
  if unknown:
    raise KeyError(f"unknown catalog fields {sorted(unknown)}; known: {FIELDS}")
  return {name: clean(fields.get(name, "")) for name in FIELDS}


def fill_row(row: dict[str, str], fields: dict) -> None:
  """Fills the empty fields of `row` from `fields` (side files such as extra attributes)."""
  for name, value in fields.items():
    if not row[name]:
      row[name] = clean(value)


def price_text(value) -> str | None:
  """A raw price (19.99, "$1,299.00", None, "") as "19.99"; '' when absent, None when present but
  not a price (the reader counts it)."""
  if value is None or (isinstance(value, str) and value.strip() in ("", "None", "null", "-")):
    return ""
  try:
    price = float(str(value).replace("$", "").replace(",", "").strip())
  except ValueError:
    return None
  return f"{price:.2f}" if price >= 0 else None


def clean(value) -> str:
  """Normalises a raw field to one string: lists joined, None to '', whitespace trimmed.

  Text is kept verbatim otherwise: HTML entities and non-ASCII characters are not touched.
  """
  if value is None:
    return ""
  if isinstance(value, (list, tuple)):
    return LIST_SEPARATOR.join(s for s in (clean(v) for v in value) if s)
  return str(value).strip()
