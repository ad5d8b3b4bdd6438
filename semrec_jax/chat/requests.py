"""Requests in plain words ("something for Wii U, not a racing game", "under $20", "an accessory")
read into constraints on catalog attributes, the phrase the LM was taught for them, and the set of
items that meet them.

A clause with "not", "no", "without" or "except" negates the values it names. Platforms are
matched through their aliases ("PlayStation 4" = "PS4"), other kinds by their catalog values as
whole words, longest first. A series (franchise) is named before "games" or "series" ("Zelda
games", "the Mario series"), so a bare "Splatoon" stays the item of that title. The model is asked
with the taught phrase of the first wish (phrasing.constraint); decoding is restricted to items
meeting all of them (Recommender.recommend)."""

import dataclasses
import re

import numpy as np

from semrec_jax.chat.items import Catalog, words
from semrec_jax.data import attributes
from semrec_jax.lm import phrasing

STEER_KINDS = phrasing.STEER_KINDS
_NEGATION = re.compile(r"\b(not|no|without|except|nothing|avoid|never|don ?t|isn ?t)\b")
_CLAUSES = re.compile(r"[,;.!?]|\bbut\b|\bexcept\b(?=.)")
_PRODUCT_WORDS = {"accessory": "Accessory", "accessories": "Accessory", "game": "Game",
                  "games": "Game", "bundle": "Bundle", "bundles": "Bundle", "hardware": "Hardware",
                  "console": "Hardware", "consoles": "Hardware", "dlc": "DLC", "add on": "DLC"}
_UNDER = re.compile(r"(?:under|below|less than|cheaper than|at most|up to|max(?:imum)?|within)\s*"
                    r"\$?\s*(\d+(?:\.\d+)?)|\$\s*(\d+(?:\.\d+)?)\s*(?:or less|or under|max)")
_OVER = re.compile(r"(?:over|above|more than|at least)\s*\$\s*(\d+(?:\.\d+)?)")
_SERIES_CUES = ("games", "game", "series", "franchise")
_CHEAP = re.compile(r"\b(cheap|cheaper|inexpensive|budget|affordable|not too expensive|"
                    r"not expensive|low price)\b")


class NothingMatches(ValueError):
  """No catalog item meets the request (outside the history)."""


@dataclasses.dataclass
class Request:
  """Wanted and unwanted attribute values per kind, and a price band."""
  wanted: dict[str, set[str]] = dataclasses.field(default_factory=dict)
  unwanted: dict[str, set[str]] = dataclasses.field(default_factory=dict)
  max_price: float | None = None
  min_price: float | None = None
  order: list[str] = dataclasses.field(default_factory=list)  # kinds in the order asked
  absent: list[str] = dataclasses.field(default_factory=list)  # platforms the catalog lacks

  def __bool__(self) -> bool:
    return bool(self.wanted or self.unwanted or self.max_price is not None
                or self.min_price is not None)

  def merge(self, newer: "Request") -> "Request":
    """A follow-up: a newer wish for a kind replaces the older one; exclusions add up, and an
    exclusion takes back an older wish for the same values ("Zelda games", then "not Zelda")."""
    out = Request({**self.wanted, **newer.wanted}, {k: set(v) for k, v in self.unwanted.items()},
                  self.max_price, self.min_price,
                  [k for k in self.order if k not in newer.order] + newer.order)
    for kind, values in newer.unwanted.items():
      out.unwanted[kind] = out.unwanted.get(kind, set()) | values
      if kind not in newer.wanted and out.wanted.get(kind, set()) & values:
        out.wanted[kind] = out.wanted[kind] - values
        if not out.wanted[kind]:
          del out.wanted[kind]
          out.order = [k for k in out.order if k != kind]
    for kind in newer.wanted:
      out.unwanted.pop(kind, None) if out.unwanted.get(kind) == newer.wanted[kind] else None
    if newer.max_price is not None or newer.min_price is not None:
      out.max_price, out.min_price = newer.max_price, newer.min_price
    return out

  def describe(self) -> str:
    parts = [f"{kind.replace('_', ' ')} {_any_of(v)}" for kind, v in self.wanted.items()]
    parts += [f"not {_any_of(v)}" for v in self.unwanted.values()]
    if self.max_price is not None:
      parts.append(f"under ${self.max_price:g}")
    if self.min_price is not None:
      parts.append(f"over ${self.min_price:g}")
    return ", ".join(parts)

  def phrase(self) -> str | None:
    """The request as the LM was taught it: the first attribute wish asked for, else the price
    band, else None (the search is restricted to items meeting every wish either way)."""
    for kind in self.order:
      if kind in self.wanted and kind in STEER_KINDS:
        return phrasing.constraint(kind, sorted(self.wanted[kind])[0])
    if self.max_price is not None:
      return phrasing.price_constraint(self.max_price)
    return None

  def mask(self, catalog: Catalog, inferred: bool = True) -> np.ndarray:
    """[items] bool: the items meeting every wish and no exclusion (by their inferred values
    too, when `inferred`: Catalog.holds)."""
    ok = np.ones(len(catalog), bool)
    for kind, values in self.wanted.items():
      ok &= catalog.holds(kind, values, inferred)
    for kind, values in self.unwanted.items():
      ok &= ~catalog.holds(kind, values, inferred)
    with np.errstate(invalid="ignore"):
      if self.max_price is not None:
        ok &= catalog.prices <= self.max_price
      if self.min_price is not None:
        ok &= catalog.prices >= self.min_price
    return ok


class Reader:
  """Reads requests against one catalog's vocabulary of attribute values."""

  def __init__(self, catalog: Catalog):
    self.catalog = catalog
    self.platforms: dict[str, set[str]] = {}  # canonical platform -> catalog values
    for values in catalog.values["platform"]:
      for v in values:
        self.platforms.setdefault(attributes.canonical_platform(v) or v, set()).add(v)
    self.phrases = {}  # (kind, lower-case words) -> catalog value, for genre and brand
    for kind in ("genre", "brand"):
      for values in catalog.values[kind]:
        for v in values:
          if len(v) >= 3 and words(v):
            self.phrases.setdefault((kind, " ".join(words(v))), v)
    self.series = series_names(catalog)

  def read(self, said: str) -> tuple[Request, str]:
    """(request, what was left unread) for one message."""
    request, rest = Request(), []
    for clause in _CLAUSES.split(said.lower()):
      negative = bool(_NEGATION.search(clause))
      clause = self._price(clause, request)
      found, left = self._values(clause, request.absent)
      for kind, values in found:
        side = request.unwanted if negative else request.wanted
        side[kind] = side.get(kind, set()) | values
        if not negative and kind not in request.order:
          request.order.append(kind)
      rest.append(left)
    return request, " ".join(" ".join(rest).split())

  def _price(self, clause: str, request: Request) -> str:
    if (m := _UNDER.search(clause)):
      request.max_price = float(m.group(1) or m.group(2))
    elif (m := _OVER.search(clause)):
      request.min_price = float(m.group(1))
    elif (m := _CHEAP.search(clause)):
      request.max_price = cheap_price(self.catalog)
    else:
      return clause
    request.order.append("price")
    return clause[:m.start()] + " " + clause[m.end():]

  def _values(self, clause: str, absent: list[str]) -> tuple[list[tuple[str, set[str]]], str]:
    """Attribute values named in a clause (longest phrases first) and the words left over;
    platforms named that no catalog item has go to `absent`."""
    text = " " + " ".join(words(clause)) + " "
    found = []
    for alias, name in attributes.platform_mentions(text):
      if name in self.platforms:
        found.append(("platform", set(self.platforms[name])))
      else:
        absent.append(name)
      text = text.replace(f" {alias} ", " ", 1)
    for (kind, phrase), value in sorted(self.phrases.items(), key=lambda p: -len(p[0][1])):
      for suffix in (" games ", " game ", " "):
        if f" {phrase}{suffix}" in text:
          found.append((kind, {value}))
          text = text.replace(f" {phrase}{suffix}", " ", 1)
          break
    for phrase, values in sorted(self.series.items(), key=lambda p: -len(p[0])):
      cue = next((c for c in _SERIES_CUES if f" {phrase} {c} " in text), None)
      if cue:
        found.append(("franchise", set(values)))
        # The cue goes too: "Zelda games" is not also a product-type wish, which would drop the
        # many items whose product type the catalog does not know.
        text = text.replace(f" {phrase} {cue} ", " ", 1)
    for word, value in _PRODUCT_WORDS.items():
      if f" {word} " in text and any(value in v for v in self.catalog.values["product_type"]):
        found.append(("product_type", {value}))
        text = text.replace(f" {word} ", " ", 1)
    merged: dict[str, set[str]] = {}
    for kind, values in found:
      merged[kind] = merged.get(kind, set()) | values
    return list(merged.items()), text.strip()


def _any_of(values: set[str], shown: int = 3) -> str:
  """"A or B or C or 5 more": a wish as the user reads it back."""
  names = sorted(values)
  more = f" or {len(names) - shown} more" if len(names) > shown else ""
  return " or ".join(names[:shown]) + more


def cheap_price(catalog: Catalog) -> float:
  """"Cheap" and "not too expensive": at most the catalog's median price, rounded to dollars
  (NaN for a catalog without prices)."""
  if not catalog.has_prices:
    return float("nan")
  return float(np.ceil(np.nanmedian(catalog.prices)))


def series_names(catalog: Catalog) -> dict[str, set[str]]:
  """Words that name a series -> its franchise values: each franchise value in full ("the legend
  of zelda"), and a single word of one ("zelda", "mario") when at least half of the items whose
  titles hold it, among those with a known franchise, belong to franchises holding that word: so
  "mario" names Super Mario, Mario Kart and Mario Party together, and a common word such as "the",
  "black" or "games" names nothing."""
  named: dict[str, set[str]] = {}
  holders: dict[str, set[str]] = {}  # word -> franchise values holding it
  for values in catalog.values["franchise"]:
    for v in values:
      if (name := words(v)):
        named.setdefault(" ".join(name), set()).add(v)
        for w in name:
          if len(w) >= 3:
            holders.setdefault(w, set()).add(v)
  titled: dict[str, list[int]] = {w: [] for w in holders}  # word -> items with a franchise
  for i, (title, franchise) in enumerate(zip(catalog.titles, catalog.values["franchise"])):
    if franchise:
      for w in set(words(title)) & holders.keys():
        titled[w].append(i)
  for w, values in holders.items():
    items = titled[w]
    held = sum(bool(catalog.values["franchise"][i] & values) for i in items)
    if len(items) >= 2 and 2 * held >= len(items):
      named.setdefault(w, set()).update(values)
  return named
