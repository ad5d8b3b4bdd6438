"""Attribute extraction: platform, brand and product type from titles, categories and details.

Platforms are normalised to the short names used by the Games benchmark ('PS4', 'Xbox 360', '3DS',
'Switch', ...), so attributes from different sources (a title, 2023 categories, LLM-extracted
attributes) compare equal.
"""

import json
import re

# canonical name -> aliases (matched case-insensitively as whole words; longest alias wins).
_PLATFORMS = {
    "PS5": ["ps5", "playstation 5", "playstation5"],
    "PS4": ["ps4", "playstation 4", "playstation4"],
    "PS3": ["ps3", "playstation 3", "playstation3"],
    "PS2": ["ps2", "playstation 2", "playstation2"],
    "PS1": ["ps1", "psx", "playstation 1", "playstation one", "psone", "ps one"],
    "PS Vita": ["ps vita", "playstation vita", "psvita", "vita"],
    "PSP": ["psp", "sony psp", "playstation portable"],
    "Xbox Series X": ["xbox series x", "xbox series s", "xbox series x/s", "xbox series x|s"],
    "Xbox One": ["xbox one", "xbox one x", "xbox one s"],
    "Xbox 360": ["xbox 360", "xbox360", "x360"],
    "Xbox": ["xbox", "original xbox"],
    "Switch": ["nintendo switch", "switch", "switch lite", "switch oled"],
    "Wii U": ["wii u", "nintendo wii u", "wiiu"],
    "Wii": ["wii", "nintendo wii"],
    "3DS": ["3ds", "nintendo 3ds", "3ds xl", "new 3ds", "2ds"],
    "DS": ["nintendo ds", "ds", "nds", "ds lite", "dsi"],
    "GameCube": ["gamecube", "nintendo gamecube", "game cube", "ngc"],
    "N64": ["n64", "nintendo 64"],
    "SNES": ["snes", "super nintendo", "super nes", "super nintendo entertainment system"],
    "NES": ["nes", "nintendo nes", "nintendo entertainment system"],
    "GBA": ["gba", "game boy advance", "gameboy advance"],
    "GBC": ["gbc", "game boy color", "gameboy color"],
    "Game Boy": ["game boy", "gameboy"],
    "Dreamcast": ["dreamcast", "sega dreamcast"],
    "Genesis": ["genesis", "sega genesis", "mega drive"],
    "Saturn": ["sega saturn"],
    "PC": ["pc", "windows", "pc game", "pc games", "computer", "pc download"],
    "Mac": ["mac", "macintosh", "mac os", "macos"],
    "Linux": ["linux"],
}
_ALIAS_TO_PLATFORM = {a: name for name, aliases in _PLATFORMS.items() for a in aliases}
_ALIAS_RE = re.compile(
    r"(?<![a-z0-9])(" + "|".join(re.escape(a) for a in sorted(_ALIAS_TO_PLATFORM, key=len,
                                                              reverse=True)) + r")(?![a-z0-9])")
# In titles only unambiguous aliases count: a bare "switch", "vita" or "computer" says little.
_TITLE_UNSAFE = {"vita", "switch", "computer", "genesis", "mac", "windows"}
# ... except a bare "switch" listed after another platform ("for Wii U, PC USB and Switch"); a
# keyboard's "Cherry MX Red Switch", an "RF Switch" or the game "Kill Switch" are not the console.
_SAFE_ALIASES = [a for a in _ALIAS_TO_PLATFORM if a not in _TITLE_UNSAFE]
_LISTED_AFTER_A_PLATFORM = re.compile(
    r"(?<![a-z0-9])(?:" + "|".join(re.escape(a) for a in _SAFE_ALIASES)
    + r")(?: [a-z0-9]+)?\s*(?:,|&|/|\band)\s*$")

_PRODUCT_TYPES = {
    "games": "Game", "game": "Game", "accessories": "Accessory", "accessory": "Accessory",
    "consoles": "Console", "console": "Console", "downloadable content": "DLC", "dlc": "DLC",
    "bundles": "Bundle", "bundle": "Bundle", "virtual reality": "Accessory",
    "gaming mice": "Accessory", "gaming keyboards": "Accessory", "headsets": "Accessory",
    "controllers": "Accessory",
}


def canonical_platform(text: str) -> str:
  """Maps a platform mention ('PlayStation 4', 'Nintendo DS|PC') to its canonical name, or ''."""
  for part in re.split(r"[|,/]", text or ""):
    name = _ALIAS_TO_PLATFORM.get(part.strip().lower())
    if name:
      return name
  match = _ALIAS_RE.search((text or "").lower())
  return _ALIAS_TO_PLATFORM[match.group(1)] if match else ""


def platform_mentions(text: str) -> list[tuple[str, str]]:
  """(alias as written, canonical platform) of every platform named in `text`, longest first."""
  return [(m.group(1), _ALIAS_TO_PLATFORM[m.group(1)])
          for m in _ALIAS_RE.finditer((text or "").lower())]


def title_platforms(title: str) -> list[str]:
  """The platforms a title names unambiguously, in order ('Adapter for Wii U, PC and Switch' ->
  ['Wii U', 'PC', 'Switch'])."""
  text = (title or "").lower()
  return [_ALIAS_TO_PLATFORM[m.group(1)] for m in _ALIAS_RE.finditer(text)
          if m.group(1) not in _TITLE_UNSAFE
          or (m.group(1) == "switch" and _LISTED_AFTER_A_PLATFORM.search(text[:m.start()]))]


def platform_from_title(title: str) -> str:
  """The first unambiguous platform named in a title ('... - PlayStation 4' -> 'PS4'), or ''."""
  return next(iter(title_platforms(title)), "")


# A console family's first member, as the Games column reads any "PlayStation", "Xbox" or "DS" ->
# the later members a title may name instead ("PlayStation Portable", "Xbox360", "Nintendo 2DS").
_LATER_MEMBERS = {"PS1": ("PS2", "PS3", "PS4", "PS5", "PSP", "PS Vita"),
                  "Xbox": ("Xbox 360", "Xbox One", "Xbox Series X"), "DS": ("3DS",)}


def column_platform(column: str, title: str) -> str:
  """The platform of a Games items.csv row: its `platform_from_title` column, corrected by what
  the title names (else the title's first platform, or ''). The column reads any "switch" as the
  console ("Cherry MX Red Switch", "Kill Switch"), so its Switch needs the console in the title;
  and it reads a family's later console as the first ("PlayStation Portable" as PS1, "Xbox one" as
  Xbox, "Nintendo 2DS" as DS), so the member the title names wins."""
  platform, named = canonical_platform(column), title_platforms(title)
  if platform == "Switch" and "Switch" not in named:
    platform = ""
  elif platform in _LATER_MEMBERS and platform not in named:
    platform = next((p for p in named if p in _LATER_MEMBERS[platform]), platform)
  return platform or next(iter(named), "")


def from_amazon2023(meta: dict) -> dict[str, str]:
  """Platform, brand and product type from one Amazon 2023 metadata record.

  Sources in order of trust: `details` (Platform, Brand, Manufacturer), the category path
  ('Video Games > PlayStation 4 > Accessories > Controllers'), `store`, then the title.
  """
  details = meta.get("details") or {}
  if isinstance(details, str):
    try:
      details = json.loads(details)
    except json.JSONDecodeError:
      details = {}
  categories = [str(c) for c in (meta.get("categories") or [])]
  platform = canonical_platform(str(details.get("Platform", "")))
  for category in categories:
    platform = platform or canonical_platform(category)
  platform = platform or platform_from_title(str(meta.get("title") or ""))
  product_type = ""
  for category in categories:
    product_type = product_type or _PRODUCT_TYPES.get(category.strip().lower(), "")
  brand = str(details.get("Brand") or details.get("Manufacturer") or meta.get("store") or "")
  return {"platform": platform, "brand": brand.strip(), "product_type": product_type}
