"""The text an item is embedded from (template version 1).

  <title> | Platform: <platform> | Brand: <brand> | Type: <product_type> | Genre: <genre> |
  Franchise: <franchise> | Hardware: <hardware_type> | Multiplayer: <multiplayer> |
  Categories: <categories joined by ' > '>
  <description>
  <features>

Fields that are empty are left out. Title and attributes come first because the encoder truncates
long texts (256 tokens for all-MiniLM-L6-v2), and descriptions are the longest part.
`config.embed.text_fields` picks the parts and their order (FIELDS is the template above): the
short parts (title, attributes, categories) that follow each other share a line joined by " | ",
description and features take a line each.
"""

from semrec_jax.data.tfds_builders import text

TEMPLATE_VERSION = 1
FIELDS = ("title", "attributes", "categories", "description", "features")
_SHORT = ("title", "attributes", "categories")
_ATTRIBUTE_LABELS = (("platform", "Platform"), ("brand", "Brand"), ("product_type", "Type"),
                     ("genre", "Genre"), ("franchise", "Franchise"), ("hardware_type", "Hardware"),
                     ("multiplayer", "Multiplayer"))


def check_fields(fields) -> None:
  """Raises ValueError naming what is wrong with a config.embed.text_fields value."""
  fields = tuple(fields)
  unknown = [f for f in fields if f not in FIELDS]
  if not fields or unknown or len(set(fields)) != len(fields):
    raise ValueError(f"config.embed.text_fields: {list(fields)} must name each of {list(FIELDS)} "
                     f"at most once, at least one" + (f" (unknown: {unknown})" if unknown else ""))


def _parts(item: dict, field: str) -> list[str]:
  if field == "title":
    return [text(item["title"])]
  if field == "attributes":
    return [f"{label}: {text(item[key]).replace('|', ', ')}" for key, label in _ATTRIBUTE_LABELS
            if text(item.get(key))]
  if field == "categories":
    categories = text(item.get("categories"))
    return ["Categories: " + categories.replace("\n", " > ")] if categories else []
  value = text(item.get(field))
  return [value.replace("\n", " ")] if value else []


def item_text(item: dict, fields=FIELDS) -> str:
  """Builds the embedding text from one catalog row (str or bytes values, as TFDS returns them)."""
  lines, line = [], []
  for field in fields:
    if field in _SHORT:
      line += _parts(item, field)
      continue
    if line:
      lines.append(" | ".join(line))
      line = []
    lines += _parts(item, field)
  if line:
    lines.append(" | ".join(line))
  return "\n".join(lines)
