"""The catalog as chat and the Python API see it: items found by index, id (ASIN) or title, their
attribute values, and a readable one-line form."""

import dataclasses
import difflib
import re
import unicodedata

import numpy as np

from semrec_jax.chat import neighbours
from semrec_jax.data.tfds_builders import text

KINDS = ("platform", "genre", "brand", "product_type", "franchise")
# Filled in together for an item (the Games benchmark's LLM-extracted attributes; a 2023 record's
# product type, from its categories): an item with one of them but no genre has none (an
# accessory). Not brand: a 2023 record's store gives one to nearly every item, described or not.
DESCRIBED_BY = ("genre", "product_type", "franchise")
_WORD = re.compile(r"[0-9a-z]+")


class UnknownItem(ValueError):
  """No catalog item matches what the user named."""


class AmbiguousItem(ValueError):
  """Several catalog items match; `candidates` holds their indices, best first."""

  def __init__(self, query: str, candidates: list[int], titles: list[str]):
    self.query, self.candidates = query, candidates
    listed = "; ".join(f"{i}: {t}" for i, t in zip(candidates, titles))
    super().__init__(f"{query!r} matches several items ({listed}): name one by its index or "
                     "a longer part of its title")


def words(s: str) -> list[str]:
  """Lower-case ASCII words: "Pokémon" and "pokemon" are the same word."""
  folded = unicodedata.normalize("NFKD", s.lower()).encode("ascii", "ignore").decode()
  return _WORD.findall(folded)


def parse_price(value) -> float | None:
  """A prepared catalog's price ("19.99", written by data.catalog.price_text); None when absent
  (or in a workdir prepared before prices were kept)."""
  return float(text(value)) if text(value) else None


@dataclasses.dataclass
class Item:
  """One recommended or named item."""
  index: int
  id: str
  title: str
  platform: str = ""
  brand: str = ""
  price: float | None = None
  score: float | None = None  # the model's log-probability, for recommendations
  inferred: bool = False       # meets the request only by values of its nearest items

  def line(self) -> str:
    facts = [f for f in (self.platform, self.brand) if f]
    if self.price is not None:
      facts.append(f"${self.price:.2f}")
    return self.title + (f"  ({', '.join(facts)})" if facts else "")


class Catalog:
  """Titles, ids, attribute value sets and prices of every item, read once from the data source;
  with the items' embeddings (row i = item i), also the values their nearest items suggest where
  the catalog gives none (neighbours.infer)."""

  def __init__(self, source, embeddings: np.ndarray | None = None):
    rows = [source[i] for i in range(len(source))]
    self.ids = [text(r["item_id"]) for r in rows]
    self.titles = [text(r["title"]) for r in rows]
    self.values = {kind: [{v.strip() for v in text(r.get(kind)).split("|") if v.strip()}
                          for r in rows] for kind in KINDS}
    self.prices = np.asarray([np.nan if (p := parse_price(r.get("price"))) is None else p
                              for r in rows])
    self._by_id = {item_id: i for i, item_id in enumerate(self.ids)}
    self._words = [set(words(t)) for t in self.titles]
    self._normal = [" ".join(words(t)) for t in self.titles]
    self.use_embeddings(embeddings)

  def __len__(self) -> int:
    return len(self.ids)

  def value_counts(self, kind: str) -> dict[str, int]:
    """How many items hold each value of an attribute kind, most held first."""
    counts: dict[str, int] = {}
    for values in self.values[kind]:
      for v in values:
        counts[v] = counts.get(v, 0) + 1
    return dict(sorted(counts.items(), key=lambda c: (-c[1], c[0])))

  def use_embeddings(self, embeddings: np.ndarray | None) -> None:
    """[items, dim] item vectors to infer values from (None: nothing is inferred)."""
    if embeddings is not None and len(embeddings) != len(self.ids):
      raise ValueError(f"{len(embeddings)} embedding rows for {len(self.ids)} items")
    self.embeddings = embeddings
    self._inferred: dict[str, list[set[str]]] = {}

  def inferred(self, kind: str) -> list[set[str]]:
    """Each item's values of `kind` read from its nearest items, for items whose value is not
    known (no value, and not described: Catalog.described); empty sets for the rest and
    without embeddings. Computed on first use."""
    if kind not in self._inferred:
      self._inferred[kind] = ([set() for _ in self.ids] if self.embeddings is None else
                              neighbours.infer(self.values[kind], self.embeddings,
                                               self.described(kind)))
    return self._inferred[kind]

  def described(self, kind: str) -> np.ndarray | None:
    """[items] bool: items whose missing value of `kind` means they have none (their record
    was filled in: DESCRIBED_BY); None for a platform or brand, which every item has but
    titles or stores may leave unsaid."""
    if kind not in DESCRIBED_BY:
      return None
    return np.asarray([any(self.values[k][i] for k in DESCRIBED_BY) for i in range(len(self))],
                      bool)

  def holds(self, kind: str, values: set[str], inferred: bool = True) -> np.ndarray:
    """[items] bool: the items holding any of `values` for `kind`, by the catalog or (when
    `inferred`) by their nearest items. A series (franchise) is also held by an item whose title
    names it in full ("The Legend of Zelda: Breath of the Wild"), as the field is often empty."""
    held = np.asarray([bool(v & values) for v in self.values[kind]], bool)
    if inferred:
      held |= np.asarray([bool(v & values) for v in self.inferred(kind)], bool)
    if kind == "franchise":
      names = [" ".join(name) for name in map(words, values) if name]
      held |= np.asarray([any(f" {n} " in f" {t} " for n in names) for t in self._normal], bool)
    return held

  @property
  def has_prices(self) -> bool:
    return bool(np.isfinite(self.prices).any())

  def item(self, index: int, score: float | None = None) -> Item:
    first = lambda kind: sorted(self.values[kind][index])[0] if self.values[kind][index] else ""
    price = float(self.prices[index]) if np.isfinite(self.prices[index]) else None
    return Item(int(index), self.ids[index], self.titles[index], first("platform"),
                first("brand"), price, None if score is None else float(score))

  def candidates(self, query: str) -> list[tuple[float, int]]:
    """(score, index) of items whose title holds every word of `query`, best first: the share
    of the title the query covers, plus 0.5 when the title starts with the query (an exact title
    scores 1.5), so "Mario Kart 8" finds "Mario Kart 8 - Nintendo Wii U" before the wheels."""
    wanted, start = set(words(query)), " ".join(words(query))
    if not wanted:
      return []
    found = [(len(wanted) / len(w) + 0.5 * (self._normal[i] + " ").startswith(start + " "), i)
             for i, w in enumerate(self._words) if wanted <= w]
    if not found:  # a typo: the nearest whole titles
      close = difflib.get_close_matches(start, self._normal, n=5, cutoff=0.8)
      found = [(difflib.SequenceMatcher(None, start, c).ratio(), i)
               for c in close for i, n in enumerate(self._normal) if n == c]
    return sorted(found, key=lambda f: (-f[0], len(self.titles[f[1]]), f[1]))

  def resolve(self, query) -> int:
    """The index of an item named by index (int), id/ASIN or title (words of it, or a near
    spelling). Raises UnknownItem or AmbiguousItem (with the candidates)."""
    if isinstance(query, (int, np.integer)):
      if not 0 <= int(query) < len(self):
        raise UnknownItem(f"item index {query} is outside the catalog (0..{len(self) - 1})")
      return int(query)
    query = str(query).strip()
    if query in self._by_id:
      return self._by_id[query]
    if re.fullmatch(r"#\d+", query):  # "#553": an index, as ambiguity messages list them
      return self.resolve(int(query[1:]))
    found = self.candidates(query)
    if query.isdigit() and int(query) < len(self) and not found:
      return int(query)
    if not found:
      raise UnknownItem(f"no item in the catalog matches {query!r} (give a title, an id such as "
                        f"{self.ids[0]}, or an index)")
    exact = [i for s, i in found if s >= 1.5]
    if len(exact) == 1 or len(found) == 1:
      return (exact or [found[0][1]])[0]
    if len(exact) > 1 or found[0][0] - found[1][0] < 0.25:
      best = [i for _, i in found[:5]]
      raise AmbiguousItem(query, best, [self.titles[i] for i in best])
    return found[0][1]
