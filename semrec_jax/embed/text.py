"""The text an item is embedded from (template version 1).

  <title> | Platform: <platform> | Brand: <brand> | Type: <product_type> | Genre: <genre> |
  Franchise: <franchise> | Hardware: <hardware_type> | Multiplayer: <multiplayer> |
  Categories: <categories joined by ' > '>
  <description>
  <features>

Fields that are empty are left out. Title and attributes come first because the encoder truncates
long texts (256 tokens for all-MiniLM-L6-v2), and descriptions are the longest part.
"""

from semrec_jax.data.tfds_builders import text

TEMPLATE_VERSION = 1
_ATTRIBUTE_LABELS = (("platform", "Platform"), ("brand", "Brand"), ("product_type", "Type"),
                     ("genre", "Genre"), ("franchise", "Franchise"), ("hardware_type", "Hardware"),
                     ("multiplayer", "Multiplayer"))


def item_text(item: dict) -> str:
  """Builds the embedding text from one catalog row (str or bytes values, as TFDS returns them)."""
  head = [text(item["title"])]
  head += [f"{label}: {text(item[key]).replace('|', ', ')}" for key, label in _ATTRIBUTE_LABELS
           if text(item.get(key))]
  categories = text(item.get("categories"))
  if categories:
    head.append("Categories: " + categories.replace("\n", " > "))
  lines = [" | ".join(head)]
  lines += [text(item.get(k)).replace("\n", " ") for k in ("description", "features")
            if text(item.get(k))]
  return "\n".join(lines)
