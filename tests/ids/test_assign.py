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
  t = trie.build(ids, 4)
  assert [t.num_rows(level) for level in range(3)] == [1, 2, 3]
  assert [t.dense(level).shape for level in range(3)] == [(1, 4), (2, 4), (3, 4)]
  assert sorted(np.flatnonzero(t.dense(0)[0] >= 0)) == [0, 2]
  assert [t.max_fanout(level) for level in range(3)] == [2, 2, 2]
  for item, row in enumerate(ids):
    assert t.lookup(row) == item
  assert t.lookup([1, 0, 0]) == -1 and t.lookup([0, 1, 2]) == -1
  with pytest.raises(ValueError, match="not unique"):
    trie.build(np.array([[0, 0], [0, 0]]), 4)


def test_trie_csr_equals_the_dense_walk(tmp_path):
  """CSR lookups agree with a walk over the dense tables on random IDs, and survive save/load."""
  rng = np.random.default_rng(0)
  ids = np.unique(rng.integers(0, 16, (3000, 4)), axis=0)
  ids = ids[rng.permutation(len(ids))]
  t = trie.build(ids, 16)
  trie.save(str(tmp_path / "trie.npz"), t)
  t = trie.load(str(tmp_path / "trie.npz"))
  tables = [t.dense(level) for level in range(4)]
  for item in rng.choice(len(ids), 200, replace=False):
    row = 0
    for level in range(4):
      row = tables[level][row, ids[item, level]]
    assert row == item == t.lookup(ids[item])
  known = {tuple(r) for r in ids}
  for codes in rng.integers(0, 16, (200, 4)):
    assert (t.lookup(codes) >= 0) == (tuple(codes) in known)


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
