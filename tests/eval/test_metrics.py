"""The metrics module on hand-computed rankings."""

import numpy as np
import pytest

from semrec_jax.eval import language, steering
from semrec_jax.ids import trie as trie_lib
from semrec_jax.lm import phrasing
from semrec_jax.protocol import metrics, popularity


def test_ranking_metrics_by_hand():
  ranked = np.array([[4, 7, 1, 9, 3, 0, 2, 5, 6, 8, 11, 12],
                     [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12],
                     [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]])
  targets = np.array([1, 12, 99])  # rank 3, rank 12, absent
  out = metrics.ranking_metrics(ranked, targets, "test")
  assert metrics.target_ranks(ranked, targets).tolist() == [3, 12, 0]
  assert out["test/recall@5"] == pytest.approx(1 / 3)
  assert out["test/recall@10"] == pytest.approx(1 / 3)
  assert out["test/recall@20"] == pytest.approx(2 / 3)
  assert out["test/ndcg@5"] == pytest.approx(0.5 / 3)  # 1 / log2(3 + 1) = 0.5
  assert out["test/ndcg@20"] == pytest.approx((0.5 + 1 / np.log2(13)) / 3)
  assert out["test/mrr"] == pytest.approx((1 / 3 + 1 / 12) / 3)
  assert list(out) == [f"test/{m}@{k}" for m in ("recall", "ndcg") for k in (5, 10, 20)] + [
      "test/mrr"]


def test_paired_difference_by_hand():
  targets = np.array([1, 2, 3, 4])
  a = np.array([[1, 9, 8], [9, 2, 8], [9, 8, 7], [4, 9, 8]])  # ranks 1, 2, absent, 1
  b = np.array([[9, 1, 8], [2, 9, 8], [9, 8, 3], [4, 9, 8]])  # ranks 2, 1, 3, 1
  out = metrics.paired_difference(a, b, targets, "minus_lm/test", k=2)
  gain = lambda rank: 1 / np.log2(rank + 1)
  ndcg = np.array([gain(2) - 1, 1 - gain(2), 0.0, 0.0])  # the third user's rank 3 is past k
  assert out["minus_lm/test/ndcg@2"] == pytest.approx(ndcg.mean()) == pytest.approx(0.0)
  assert out["minus_lm/test/ndcg@2_stderr"] == pytest.approx(
      np.sqrt(np.sum((ndcg - ndcg.mean()) ** 2) / 3) / 2)
  assert out["minus_lm/test/recall@2"] == 0.0 and out["minus_lm/test/recall@2_stderr"] == 0.0
  # Each model's NDCG@2 is its ranking_metrics value: the difference is of the same numbers.
  means = [metrics.ranking_metrics(r, targets, "t", cutoffs=(2,))["t/ndcg@2"] for r in (a, b)]
  assert out["minus_lm/test/ndcg@2"] == pytest.approx(means[1] - means[0])
  one = metrics.paired_difference(a[:1], b[:1], targets[:1], "p", k=1)
  assert (one["p/recall@1"], one["p/recall@1_stderr"]) == (-1.0, 0.0)  # one user: no spread


def test_sampled_metrics_count_ties_against_the_model():
  target = np.array([0.5, 0.5, -1.0])
  negatives = np.array([[0.1] * 20, [0.5] + [0.1] * 19, [0.0] * 20])
  out = metrics.sampled_metrics(target, negatives, "sampled20")
  # ranks 1, 2 (a tie), 21
  assert out["sampled20/hit@10"] == pytest.approx(2 / 3)
  assert out["sampled20/ndcg@10"] == pytest.approx((1 + 1 / np.log2(3)) / 3)


def test_negatives_avoid_history_and_target():
  exclude = [{0, 1, 2}, set(range(50))]
  neg = metrics.sample_negatives(60, exclude, 10, seed=0)
  assert neg.shape == (2, 10)
  for row, banned in zip(neg, exclude):
    assert len(set(row)) == 10 and not set(row) & banned
  np.testing.assert_array_equal(neg, metrics.sample_negatives(60, exclude, 10, seed=0))
  with pytest.raises(ValueError, match="negatives"):
    metrics.sample_negatives(60, [set(range(55))], 10, seed=0)


def test_popularity_and_list_quality():
  assert popularity.ranking(np.bincount([3, 3, 1, 2, 2, 3], minlength=5), 4).tolist() == [3, 2, 1, 0]
  quality = metrics.list_quality(np.array([[1, 2, 2, -1], [4, 5, 6, 7]]), num_items=7)
  assert quality == {"invalid_rate": pytest.approx(2 / 8), "duplicate_rate": pytest.approx(1 / 6)}


def test_most_taught_reason_and_claims_held_by_hand():
  attrs = [{"platform": "PS4"}, {"platform": "PS4", "brand": "Sony"},
           {"platform": "PS4", "brand": "Sony"}, {"platform": "PS3"}]
  train = [{"history": [0, 3], "target": 1}, {"history": [1], "target": 2},
           {"history": [0], "target": 1}, {"history": [3], "target": 0}]
  assert language.most_taught_reason(train, attrs, max_history=2) == "for PS4"  # 2 of 3 users
  # Only the items a prompt shows count: the first user's PS4 item is older than the last one.
  assert language.most_taught_reason(train, attrs, max_history=1) == "for PS4 and by Sony"
  assert language.most_taught_reason(train[3:], attrs, max_history=2) is None
  assert language.explainable(train[0], attrs, 2) and not language.explainable(train[0], attrs, 1)
  values = [{k: {a[k].lower()} if k in a else set() for k in language.ATTRIBUTE_KINDS}
            for a in attrs]
  both = language.claims("for PS4 and by Sony")
  assert len(both) == 2 and language.claims_held(both, [1, 2], values) == 2
  assert language.claims_held(both, [0, 1], values) == 1
  assert language.claims_held(language.claims("for PS4"), [0, -1], values) == 0  # no item


def test_language_parsers_by_hand():
  assert language.claims("for PS4 and a racing game.") == [("platform", "ps4"),
                                                           ("genre", "racing")]
  assert language.claims("by Sony and part of the Halo series") == [("brand", "sony"),
                                                                    ("franchise", "halo")]
  assert language.claims("an accessory") == [("product_type", "accessory")]
  t = trie_lib.build(np.array([[1, 2], [3, 0]]), 4)
  text = ("<|sid_start|><|sid_3|><|sid_4|><|sid_end|>: like <|sid_start|><|sid_1|><|sid_6|>"
          "<|sid_end|>, it is for PS4 and by Sony.")
  assert language.parse_items(text, t) == [1, 0]
  values = [{"platform": {"ps4"}, "brand": {"sony"}, "genre": set(), "franchise": set(),
             "product_type": {"game"}},
            {"platform": {"ps4"}, "brand": {"ea"}, "genre": set(), "franchise": set(),
             "product_type": {"game"}},
            {"platform": {"ps3"}, "brand": {"sony"}, "genre": set(), "franchise": set(),
             "product_type": {"accessory"}}]
  assert language.explanation_claims(text, t, values)[:2] == (1, 2)  # PS4 shared, Sony not
  assert language.bundle_name_accurate("PS4 games", [0, 1], values)
  assert not language.bundle_name_accurate("Sony PS4 games", [0, 1], values)
  assert not language.bundle_name_accurate("PS3 picks", [0, 1], values)  # a value none holds
  assert not language.bundle_name_accurate("", [0, 1], values)
  # A name must claim something checkable: words or ID tokens that claim nothing are not accurate.
  assert not language.bundle_name_accurate("great picks", [0, 1], values)
  assert not language.bundle_name_accurate("<|sid_579|><|sid_768|><|sid_end|>", [0, 1], values)
  assert language.bundle_name_accurate("great games", [0, 1], values)  # a kind noun all hold
  assert not language.bundle_name_accurate("accessories", [0, 1], values)
  # A longer value is one claim, not also a claim of the shorter value inside it ("wii").
  wii = [{"platform": {p}, "brand": set(), "genre": set(), "franchise": set(),
          "product_type": {"game"}} for p in ("wii u", "wii u", "wii")]
  assert language.bundle_name_accurate("Wii U games", [0, 1], wii)
  assert not language.bundle_name_accurate("Wii games", [0, 1], wii)


def test_price_steering_values_are_the_bands_an_item_is_within():
  rows = [{kind: "" for kind in phrasing.STEER_KINDS if kind != "price"} | {"price": p}
          for p in ["9.99", "19.99", "45.00", "", "150.00"] * 4]
  values = steering.attribute_values(rows)
  assert values["price"][:5] == [{"10", "20", "30", "50", "100"}, {"20", "30", "50", "100"},
                                 {"50", "100"}, set(), set()]
  assert steering.requestable(values["price"]) == {"50": 12, "100": 12}  # 10+ items each
  assert phrasing.constraint("price", "50") == "something under $50"
