"""Each preference reward on hand-built cases."""

import numpy as np
import pytest

from semrec_jax.eval import steering
from semrec_jax.ids import trie as trie_lib
from semrec_jax.lm import phrasing
from semrec_jax.prefer import rewards

# Items 0-2 as sid codes [[1, 2], [3, 0], [0, 1]] over 4 codes a level: token n = code + 4 x level.
TRIE = trie_lib.build(np.array([[1, 2], [3, 0], [0, 1]]), 4)
SID = {0: "<|sid_start|><|sid_1|><|sid_6|><|sid_end|>",
       1: "<|sid_start|><|sid_3|><|sid_4|><|sid_end|>",
       2: "<|sid_start|><|sid_0|><|sid_5|><|sid_end|>"}
NOWHERE = "<|sid_start|><|sid_2|><|sid_7|><|sid_end|>"  # valid codes, no item
VALUES = [{"platform": {"ps4"}, "brand": {"sony"}, "genre": {"racing"}, "franchise": set(),
           "product_type": {"game"}},
          {"platform": {"ps4"}, "brand": {"ea"}, "genre": {"racing"}, "franchise": set(),
           "product_type": {"game"}},
          {"platform": {"ps3"}, "brand": {"sony"}, "genre": set(), "franchise": set(),
           "product_type": {"accessory"}}]


def test_rank_penalties_sum_to_one_and_fall_with_rank():
  p = rewards.rank_penalties(4)
  expected = np.array([1, 1 / np.log2(3), 0.5, 1 / np.log2(5)])
  np.testing.assert_allclose(p, expected / expected.sum())
  assert sum(p) == pytest.approx(1.0) and p == sorted(p, reverse=True)


def test_next_item_rewards_the_hit_and_ranks_the_misses_only_beside_one():
  p = rewards.rank_penalties(4)
  assert rewards.next_item([5, 9, 2, 7], target=9) == [-p[0], 1.0, -p[2], -p[3]]
  assert rewards.next_item([5, 9, 2, 7], target=3) == [0.0] * 4  # nothing to compare with
  assert rewards.next_item([5, 9, 2, 7], target=9, rank_aware=False) == [0.0, 1.0, 0.0, 0.0]
  # An ID that names no item (-1) is a miss, penalised at its rank like any other.
  assert rewards.next_item([-1, 4], target=4) == [-rewards.rank_penalties(2)[0], 1.0]


def test_prefix_credit_ranks_misses_by_the_code_levels_they_share_with_the_target():
  codes = np.array([[1, 2, 3, 0], [1, 2, 4, 0], [1, 5, 3, 0], [7, 2, 3, 0], [1, 2, 3, 1]])
  assert [rewards.shared_prefix(codes[i], codes[0]) for i in range(5)] == [4, 2, 1, 0, 3]
  # No hit: the misses are ordered by how near the target they are (0.5 x shared / 4 levels).
  got = rewards.next_item([1, 2, 3, 4, -1], target=0, codes=codes, prefix_credit=0.5)
  np.testing.assert_allclose(got, [0.25, 0.125, 0.0, 0.375, 0.0])
  # A hit keeps 1; the misses keep their credit less their rank penalty.
  p = rewards.rank_penalties(3)
  got = rewards.next_item([4, 0, 3], target=0, codes=codes, prefix_credit=0.5)
  np.testing.assert_allclose(got, [0.375 - p[0], 1.0, -p[2]])
  assert rewards.next_item([1, 2], target=0, codes=codes) == [0.0, 0.0]  # off by default


def test_steering_checks_the_asked_value_per_kind_and_price_band():
  rows = [{"platform": "PS4", "genre": "Racing", "brand": "Sony", "product_type": "Game",
           "price": "19.99"},
          {"platform": "PS3|PS4", "genre": "", "brand": "EA", "product_type": "Accessory",
           "price": "45.00"},
          {"platform": "Wii", "genre": "", "brand": "", "product_type": "Game", "price": ""}]
  values = steering.attribute_values(rows)
  assert rewards.steering(0, "platform", "PS4", values) == 1.0
  assert rewards.steering(1, "platform", "PS4", values) == 1.0  # one of several values
  assert rewards.steering(2, "platform", "PS4", values) == 0.0
  assert rewards.steering(1, "product_type", "Accessory", values) == 1.0
  assert rewards.steering(0, "price", "20", values) == 1.0  # $19.99 is under $20
  assert rewards.steering(1, "price", "20", values) == 0.0
  assert rewards.steering(2, "price", "100", values) == 0.0  # no price: no band
  assert rewards.steering(-1, "platform", "PS4", values) == 0.0
  assert phrasing.constraint("price", "20") == "something under $20"
  with pytest.raises(ValueError, match="no attribute kind 'colour'"):
    rewards.steering(0, "colour", "red", values)


def test_explanation_counts_true_claims_only_when_tied_to_the_history():
  said = f"{SID[1]}: like {SID[0]}, it is for PS4 and by Sony."  # PS4 shared, Sony not
  assert rewards.explanation(said, TRIE, VALUES, history=[2, 0]) == 0.5
  assert rewards.explanation(said, TRIE, VALUES, history=[2]) == 0.0  # item 0 not in history
  both = f"{SID[1]}: like {SID[0]}, it is for PS4 and a racing game."
  assert rewards.explanation(both, TRIE, VALUES, history=[0]) == 1.0
  assert rewards.explanation(f"{SID[1]}: like {SID[0]}, it is great.", TRIE, VALUES, [0]) == 0.0
  assert rewards.explanation(f"{SID[1]}: like {NOWHERE}, it is for PS4.", TRIE, VALUES,
                             [0, 1, 2]) == 0.0


def test_bundle_name_and_validity():
  assert rewards.bundle_name("PS4 racing games", [0, 1], VALUES) == 1.0
  assert rewards.bundle_name("Sony PS4 games", [0, 1], VALUES) == 0.0  # item 1 is by EA
  assert rewards.bundle_name("great picks", [0, 1], VALUES) == 0.0  # claims nothing
  assert rewards.validity(f"{SID[0]} then {SID[2]}", TRIE) == 1.0
  assert rewards.validity(f"{SID[0]} then {NOWHERE}", TRIE) == 0.0
  assert rewards.validity("no ID at all", TRIE) == 0.0
