"""Dedupe, chronological order, k-core and the leave-one-out split."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from semrec_jax.data.catalog import CatalogBuilder
from semrec_jax.data.errors import DataError, DropLog
from semrec_jax.data.interactions import InteractionBuffer
from semrec_jax.data.processing import build_sequences, leave_one_out


def _catalog(item_ids, untitled=()):
  builder = CatalogBuilder()
  for item in item_ids:
    builder.add(item, title="" if item in untitled else f"title of {item}")
  return builder.build()


def _interactions(rows):
  buffer = InteractionBuffer()
  for user, item, ts in rows:
    buffer.add(user, item, ts)
  return buffer.build()


def _sequences_by_user(seq):
  return {u: [seq.catalog.item_ids[i] for i in seq.user_items(k)]
          for k, u in enumerate(seq.user_ids)}


def test_order_ties_and_duplicates():
  rows = [("u", "c", 30), ("u", "a", 10), ("u", "b", 20), ("u", "d", 20), ("u", "a", 40),
          ("u", "e", 50)]
  drops = DropLog()
  seq = build_sequences(_interactions(rows), _catalog("abcde"), kcore=0, drops=drops)
  # b and d tie at t=20 and keep file order; the second 'a' (t=40) is a duplicate.
  assert _sequences_by_user(seq) == {"u": ["a", "b", "d", "c", "e"]}
  assert drops["duplicate_interactions"] == 1


def test_untitled_and_unknown_items_are_counted():
  rows = [("u", x, t) for t, x in enumerate("abcdxz")]
  drops = DropLog()
  seq = build_sequences(_interactions(rows), _catalog("abcdx", untitled={"x"}), 0, drops)
  assert _sequences_by_user(seq) == {"u": list("abcd")}
  assert drops["items_without_title"] == 1
  assert drops["interactions_on_items_without_title"] == 1
  assert drops["items_missing_from_catalog"] == 1
  assert drops["interactions_on_items_missing_from_catalog"] == 1


def test_items_are_numbered_in_catalog_order():
  rows = [("u", x, t) for t, x in enumerate("cab")] + [("v", x, t) for t, x in enumerate("bca")]
  seq = build_sequences(_interactions(rows), _catalog("abc"), 0, DropLog())
  assert seq.catalog.item_ids == ["a", "b", "c"]
  assert seq.user_ids == ["u", "v"]
  assert seq.user_items(0).tolist() == [2, 0, 1]


def test_empty_result_names_the_filter():
  rows = [("u", x, t) for t, x in enumerate("abc")]
  with pytest.raises(DataError, match="empty after the 5-core filter"):
    build_sequences(_interactions(rows), _catalog("abc"), kcore=5, drops=DropLog())
  with pytest.raises(DataError, match="empty after the catalog join"):
    build_sequences(_interactions(rows), _catalog("abc", untitled="abc"), kcore=0,
                    drops=DropLog())
  with pytest.raises(DataError, match="users need >= 3"):
    build_sequences(_interactions(rows[:2]), _catalog("abc"), kcore=0, drops=DropLog())


def _reference_core(pairs: set, user_min: int, item_min: int) -> set:
  """Plain-Python k-core: drop under-threshold users and items until nothing changes."""
  while True:
    users, items = {}, {}
    for u, i in pairs:
      users[u] = users.get(u, 0) + 1
      items[i] = items.get(i, 0) + 1
    kept = {(u, i) for u, i in pairs if users[u] >= user_min and items[i] >= item_min}
    if kept == pairs:
      return pairs
    pairs = kept


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 25), st.integers(0, 5)),
                min_size=1, max_size=400),
       st.integers(1, 6))
def test_kcore_property(raw, k):
  """Users keep >= max(k, 3) and items >= k interactions; the result is the maximal such core."""
  rows = [(f"u{u}", f"i{i}", t) for u, i, t in raw]
  drops = DropLog()
  try:
    seq = build_sequences(_interactions(rows), _catalog([f"i{i}" for i in range(26)]), k, drops)
  except DataError as e:
    assert "empty" in str(e)
    return
  lengths = seq.lengths()
  assert lengths.min() >= max(k, 3)
  assert np.bincount(seq.items, minlength=len(seq.catalog)).min() >= k
  kept = {(seq.user_ids[u], seq.catalog.item_ids[i])
          for u in range(seq.num_users) for i in seq.user_items(u)}
  assert kept == _reference_core({(u, i) for u, i, _ in rows}, max(k, 3), k)
  assert len(seq.items) == len({(u, i) for u, i, _ in rows}) - drops["kcore_interactions"]
  for u in range(seq.num_users):  # no item twice in one user's sequence
    assert len(set(seq.user_items(u).tolist())) == lengths[u]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 20), st.integers(0, 30), st.integers(0, 100)),
                min_size=10, max_size=300),
       st.integers(1, 8))
def test_leave_one_out_hygiene(raw, max_history):
  rows = [(f"u{u}", f"i{i}", t) for u, i, t in raw]
  try:
    seq = build_sequences(_interactions(rows), _catalog([f"i{i}" for i in range(31)]), 0,
                          DropLog())
  except DataError:
    return
  by_split = {"train": {}, "validation": {}, "test": {}}
  for split, example in leave_one_out(seq, max_history):
    assert len(example["history"]) <= max_history
    by_split[split][example["user_index"]] = example
  for u in range(seq.num_users):
    items = seq.user_items(u).tolist()
    train, valid, test = (by_split[s][u] for s in ("train", "validation", "test"))
    assert test["target"] == items[-1] and valid["target"] == items[-2]
    assert train["target"] == items[-3]
    assert test["history"].tolist() == items[:-1][-max_history:]
    held_out = {valid["target"], test["target"]}
    assert not held_out & set(train["history"].tolist() + [train["target"]])
    assert test["target"] not in valid["history"].tolist()
