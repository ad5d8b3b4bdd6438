"""Code assignment, the collision level, the prefix trie, metrics and input checks."""

import numpy as np
import pytest

from semrec_jax.data.errors import DataError
from semrec_jax.ids import metrics, trie
from semrec_jax.ids.assign import collision_level, token_string, unique_last_level
from semrec_jax.ids.stage import check_embeddings


def test_unique_last_level_separates_identical_items():
  codebook = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [5.0, 5.0]], np.float32)
  codes = np.array([[7, 1], [7, 1], [7, 1], [3, 1], [3, 2]])  # three identical items in group 7
  residual = np.array([[0.9, 0], [0.9, 0], [0.9, 0], [1, 0], [0, 1]], np.float32)
  out = unique_last_level(codes, residual, codebook)
  assert sorted(out[:3, 1]) == [0, 1, 2]       # distinct, and the far code 3 is not used
  np.testing.assert_array_equal(out[3:], codes[3:])  # groups without collisions keep their codes
  np.testing.assert_array_equal(out[:, 0], codes[:, 0])  # prefixes never change


def test_unique_last_level_with_more_items_than_codes():
  codebook = np.eye(2, dtype=np.float32)
  codes = np.zeros((5, 2), dtype=np.int64)
  out = unique_last_level(codes, np.zeros((5, 2), np.float32), codebook)
  assert sorted(np.bincount(out[:, 1], minlength=2)) == [2, 3]  # as balanced as possible


def test_collision_level_orders_by_distance_then_index():
  codes = np.array([[1, 2], [1, 2], [0, 0], [1, 2]])
  extra = collision_level(codes, np.array([0.5, 0.1, 0.3, 0.1]))
  assert extra.tolist() == [2, 0, 0, 1]


def test_token_string_offsets_each_level():
  assert token_string([3, 0, 255, 1], 256) == (
      "<|sid_start|><|sid_3|><|sid_256|><|sid_767|><|sid_769|><|sid_end|>")


def test_trie_tables():
  ids = np.array([[0, 1, 0], [0, 1, 1], [2, 0, 0], [0, 3, 0]])
  tables = trie.build(ids, 4)
  assert [t.shape for t in tables] == [(1, 4), (2, 4), (3, 4)]
  assert sorted(np.flatnonzero(tables[0][0] >= 0)) == [0, 2]
  for item, row in enumerate(ids):
    assert trie.lookup(tables, row) == item
  assert trie.lookup(tables, [1, 0, 0]) == -1 and trie.lookup(tables, [0, 1, 2]) == -1
  with pytest.raises(ValueError, match="not unique"):
    trie.build(np.array([[0, 0], [0, 0]]), 4)


def test_metrics_on_a_small_assignment():
  codes = np.array([[0, 0], [0, 0], [0, 1], [1, 1], [1, 1], [1, 1]])
  assert metrics.collision_stats(codes) == {"collision_rate": round(5 / 6, 4),
                                            "max_collision_group": 3, "distinct_code_tuples": 3}
  stats = metrics.code_stats(codes, 4)
  assert stats["codebook_usage"] == [0.5, 0.5]
  assert stats["perplexity"][0] == 2.0
  platforms = ["PS4", "PS4", "PC", "PC", "", "Wii"]
  # group 0: PS4 x2 + PC (2 agree); group 1: PC + Wii (1 agrees); 5 items have a platform
  assert metrics.prefix_purity(codes[:, 0], platforms) == 0.6


@pytest.mark.parametrize("vectors, ids, message", [
    (np.ones((3,)), ["a", "b", "c"], "expected \\[items, dim\\]"),
    (np.ones((2, 4)), ["a", "b"], "2 rows and 2 ids for a catalog of 3"),
    (np.array([[0.0, 1], [np.inf, 0], [0, 0]]), ["a", "b", "c"], "first row 1 \\(item 'b'\\)"),
])
def test_bad_embeddings(vectors, ids, message):
  with pytest.raises(DataError, match=message):
    check_embeddings(vectors, ids, 3, "items.npy")


def test_wrong_dim():
  with pytest.raises(DataError, match="dim 4, expected 8"):
    check_embeddings(np.ones((3, 4)), ["a", "b", "c"], 3, "items.npy", dim=8)
