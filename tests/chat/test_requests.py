"""Requests in words against the sample's catalog (no model): values, negation, series, prices,
items."""

import numpy as np
import pytest

from semrec_jax.chat import neighbours
from semrec_jax.chat.items import AmbiguousItem, Catalog, UnknownItem, words
from semrec_jax.chat.requests import Reader, Request
from semrec_jax.data import tfds_builders
from semrec_jax.ids.stage import load_embeddings


@pytest.fixture(scope="module")
def catalog(demo_workdir):
  return Catalog(tfds_builders.items_source(f"{demo_workdir}/data"))


def test_items_are_found_by_index_id_title_and_near_spelling(catalog):
  mk8 = catalog.titles.index("Mario Kart 8 - Nintendo Wii U")
  assert catalog.resolve(mk8) == mk8 == catalog.resolve(f"#{mk8}")
  assert catalog.resolve(catalog.ids[mk8]) == mk8            # ASIN
  assert catalog.resolve("Mario Kart 8") == mk8              # words of the title, at its start
  assert catalog.resolve("mario kart 8 nintendo wii u") == mk8
  assert catalog.resolve("Splatoon") == catalog.titles.index("Splatoon")  # not the protector
  with pytest.raises(AmbiguousItem) as e:
    catalog.resolve("Mario Kart")
  assert len(e.value.candidates) == 5 and all("Mario Kart" in catalog.titles[i]
                                              for i in e.value.candidates)
  with pytest.raises(UnknownItem, match="no item in the catalog matches 'Zzyzx Qwerty'"):
    catalog.resolve("Zzyzx Qwerty")
  with pytest.raises(UnknownItem, match="outside the catalog"):
    catalog.resolve(len(catalog))


def test_requests_read_values_negations_and_prices(catalog):
  reader = Reader(catalog)
  request, left = reader.read("something for Wii U, not a racing game")
  assert request.wanted == {"platform": {"Wii U"}} and request.unwanted == {"genre": {"Racing"}}
  assert left == "something for not a"
  mask = request.mask(catalog)
  assert 0 < mask.sum() < len(catalog)
  for i in np.flatnonzero(mask):
    assert "Wii U" in catalog.values["platform"][i] and "Racing" not in catalog.values["genre"][i]
  assert request.phrase() == "something for Wii U"  # what the LM was taught
  request, _ = reader.read("an accessory, not a game")
  assert request.wanted == {"product_type": {"Accessory"}}
  assert request.unwanted == {"product_type": {"Game"}}
  request, _ = reader.read("by Nintendo for PlayStation 4 under $20")
  assert request.wanted["brand"] == {"Nintendo"} and request.wanted["platform"] == {"PS4"}
  assert request.max_price == 20 and request.order == ["price", "platform", "brand"]
  assert not catalog.has_prices and not request.mask(catalog).any()  # no prices: nothing passes
  later = Request({"platform": {"PS4"}}, {"genre": {"Racing"}}).merge(
      reader.read("for Wii U")[0])
  assert later.wanted == {"platform": {"Wii U"}} and later.unwanted == {"genre": {"Racing"}}


def test_price_requests_on_a_catalog_with_prices():
  rows = [{"item_id": f"A{i}", "title": f"Game {i}", "platform": "PS4" if i % 2 else "Switch",
           "price": f"{5.0 * i:.2f}" if i != 3 else ""} for i in range(1, 11)]
  catalog = Catalog(rows)
  assert catalog.has_prices and np.isnan(catalog.prices[2])
  reader = Reader(catalog)
  request, _ = reader.read("something for Switch under $30")
  assert request.max_price == 30 and request.phrase() == "something for Switch"
  assert [i + 1 for i in np.flatnonzero(request.mask(catalog))] == [2, 4, 6]
  cheap, _ = reader.read("not too expensive")
  assert cheap.max_price == np.ceil(np.nanmedian(catalog.prices)) == 30
  assert cheap.phrase() == "something under $30"  # the taught price request
  over, _ = reader.read("more than $40")
  assert [i + 1 for i in np.flatnonzero(over.mask(catalog))] == [8, 9, 10]


def test_series_are_read_before_games_or_series_and_held_by_title(catalog):
  reader = Reader(catalog)
  zelda, left = reader.read("Zelda games for 3DS")
  assert zelda.wanted == {"franchise": {"The Legend of Zelda"}, "platform": {"3DS"}}
  assert left == "for"  # "games" is the cue, not also a product-type wish
  held = catalog.holds("franchise", {"The Legend of Zelda"})
  by_field = np.asarray(["The Legend of Zelda" in v for v in catalog.values["franchise"]])
  by_title = np.asarray(["the legend of zelda" in " ".join(words(t)) for t in catalog.titles])
  assert (held == (by_field | by_title)).all() and (by_title & ~by_field).sum() >= 3
  mask = zelda.mask(catalog)
  assert mask.sum() >= 3 and all(held[i] and "3DS" in catalog.values["platform"][i]
                                 for i in np.flatnonzero(mask))
  mario, _ = reader.read("something from the Mario series")
  assert {"Super Mario", "Mario Kart", "Mario Party"} <= mario.wanted["franchise"]
  n = len(mario.wanted["franchise"])
  assert mario.describe().endswith(f" or {n - 3} more")  # three names, then a count
  # A bare title stays an item, and a common word names no series.
  assert reader.read("Splatoon")[0].wanted == {}
  assert "franchise" not in reader.read("fun games")[0].wanted
  assert "star wars" in reader.series and "zelda" in reader.series
  assert not {"of", "the", "black", "games"} & reader.series.keys()  # too short, or too common
  assert words("Pokémon") == words("pokemon") == ["pokemon"]
  # "not Zelda" after "Zelda games" takes the wish back instead of asking for nothing.
  later = zelda.merge(reader.read("not from the Zelda series")[0])
  assert later.wanted == {"platform": {"3DS"}}
  assert later.unwanted == {"franchise": {"The Legend of Zelda"}} and later.mask(catalog).any()


def test_infer_gives_values_most_nearest_known_items_hold():
  rng = np.random.default_rng(0)
  toward = lambda direction, n: np.asarray(direction, float) + 0.02 * rng.normal(size=(n, 4))
  a, b, c = (1, 0, 0, 0), (0, 0.6, 0.8, 0), (0, 0, 1, 0)  # c: 0.8 from b, 0 from a
  vectors = np.concatenate([toward(a, 10), toward(b, 10), toward(c, 6), toward(a, 1),
                            toward(b, 1), toward(c, 1)])
  values = ([{"A"}] * 7 + [{"A", "C"}] * 3 +  # C: 3 of the 10 nearest, under the share
            [{"B"}] * 10 + [set()] * 6 + [set()] * 3)
  described = np.arange(len(values)) < 26  # the 6 near c have no value: they hold none
  assert [sorted(v) for v in neighbours.infer(values, vectors, described)[-3:]] == [
      ["A"], ["B"], []]  # near c: 6 "none" and 4 B of its 10 nearest
  # Not described, the 6 near c are unknown too: the last item's 10 nearest known are the Bs.
  assert [sorted(v) for v in neighbours.infer(values, vectors)[-3:]] == [["A"], ["B"], ["B"]]
  assert all(not v for v in neighbours.infer(values, vectors, described)[:26])
  assert neighbours.infer(values[:9] + [set()], vectors[:10]) == [set()] * 10  # < k known
  with pytest.raises(ValueError, match="29 items but 28 embedding rows"):
    neighbours.infer(values, vectors[:28])
  assert neighbours.held_out([set()] * 29, vectors)["hidden"] == 0  # nothing known to hide


def test_wishes_are_met_by_values_read_from_the_nearest_items(demo_workdir):
  items = tfds_builders.items_source(f"{demo_workdir}/data")
  vectors, _ = load_embeddings(demo_workdir, len(items))
  catalog = Catalog(items, vectors)
  # Held out on the sample (a quarter of the known items): genre 0.75 precision at 0.55 coverage,
  # product type 0.90 at 0.80, platform 0.97 at 0.44.
  for kind, precision, coverage in (("genre", 0.7, 0.45), ("product_type", 0.85, 0.7),
                                    ("platform", 0.93, 0.35)):
    scores = neighbours.held_out(catalog.values[kind], vectors, catalog.described(kind))
    assert scores["precision"] >= precision and scores["coverage"] >= coverage, (kind, scores)
  genre = catalog.inferred("genre")
  described = catalog.described("genre")
  assert described.sum() == 667 and not any(genre[i] for i in np.flatnonzero(described))
  known, held = catalog.holds("genre", {"RPG"}, inferred=False), catalog.holds("genre", {"RPG"})
  assert known.sum() == 82 and (held >= known).all() and held.sum() > known.sum()
  request, _ = Reader(catalog).read("an RPG")
  assert (request.mask(catalog) == held).all()
  assert (request.mask(catalog, inferred=False) == known).all()
  assert (Catalog(items).holds("genre", {"RPG"}) == known).all()  # no embeddings, no guesses
