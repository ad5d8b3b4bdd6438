"""From raw interactions to clean per-user sequences and a leave-one-out split.

Order of operations (each removal is counted in the DropLog):
  1. chronological order per user; equal timestamps keep input order (a stable sort on
     (user, timestamp, position in the input files));
  2. repeated (user, item) pairs keep their first occurrence;
  3. interactions with items missing from the catalog or without a title are removed;
  4. iterative k-core: users with fewer than max(k, 3) interactions (leave-one-out needs a train,
     a validation and a test item) and items with fewer than k are removed until none is left.
Items are then numbered in catalog order and users in order of first appearance in the input.
"""

import dataclasses

import numpy as np

from semrec_jax.data.catalog import Catalog
from semrec_jax.data.errors import DataError, DropLog
from semrec_jax.data.interactions import Interactions

MIN_SEQUENCE = 3  # one train, one validation and one test item


@dataclasses.dataclass
class Sequences:
  """Every user's chronological item sequence, concatenated (CSR layout)."""

  catalog: Catalog        # row i describes item i
  user_ids: list[str]     # user u's original id
  offsets: np.ndarray     # int64 [num_users + 1]; user u's items are items[offsets[u]:offsets[u+1]]
  items: np.ndarray       # int32 item indices
  timestamps: np.ndarray  # int64, aligned with items

  @property
  def num_users(self) -> int:
    return len(self.user_ids)

  def user_items(self, u: int) -> np.ndarray:
    return self.items[self.offsets[u]:self.offsets[u + 1]]

  def lengths(self) -> np.ndarray:
    return np.diff(self.offsets)


def build_sequences(interactions: Interactions, catalog: Catalog, kcore: int,
                    drops: DropLog) -> Sequences:
  if len(interactions) == 0:
    raise DataError("no interactions were read: the input files hold no usable rows")
  rows = interactions.select(np.lexsort((interactions.order, interactions.timestamp,
                                         interactions.user)))
  rows = _dedupe(rows, drops)
  rows = _join_catalog(rows, catalog, drops)
  _require_rows(rows, "the catalog join (no interacted item has a catalog row with a title)")
  rows = _kcore(rows, kcore, drops)
  _require_rows(rows, f"the {kcore}-core filter (users need >= {max(kcore, MIN_SEQUENCE)} "
                f"interactions, items >= {kcore})")
  return _renumber(rows, catalog)


def _require_rows(rows: Interactions, step: str) -> None:
  if len(rows) == 0:
    raise DataError(f"the dataset is empty after {step}")


def _dedupe(rows: Interactions, drops: DropLog) -> Interactions:
  key = rows.user.astype(np.int64) * len(rows.item_ids) + rows.item
  _, first = np.unique(key, return_index=True)  # first occurrence in chronological order
  drops["duplicate_interactions"] += len(rows) - len(first)
  return rows.select(np.sort(first))


def _join_catalog(rows: Interactions, catalog: Catalog, drops: DropLog) -> Interactions:
  catalog_row = {item_id: r for r, item_id in enumerate(catalog.item_ids)}
  titles = catalog.fields["title"]
  known = np.array([i in catalog_row for i in rows.item_ids], dtype=bool)
  titled = np.array([i in catalog_row and bool(titles[catalog_row[i]]) for i in rows.item_ids],
                    dtype=bool)
  present = np.zeros(len(rows.item_ids), dtype=bool)
  present[rows.item] = True
  drops["items_missing_from_catalog"] += int((present & ~known).sum())
  drops["interactions_on_items_missing_from_catalog"] += int((~known[rows.item]).sum())
  drops["items_without_title"] += int((present & known & ~titled).sum())
  drops["interactions_on_items_without_title"] += int((known[rows.item] & ~titled[rows.item]).sum())
  return rows.select(titled[rows.item])


def _kcore(rows: Interactions, k: int, drops: DropLog) -> Interactions:
  """Removes users with < max(k, 3) and items with < k interactions, repeatedly, to a fixed point."""
  user_min, item_min = max(k, MIN_SEQUENCE), max(k, 0)
  keep = np.ones(len(rows), dtype=bool)
  while True:
    user_counts = np.bincount(rows.user[keep], minlength=len(rows.user_ids))
    item_counts = np.bincount(rows.item[keep], minlength=len(rows.item_ids))
    weak = keep & ((user_counts[rows.user] < user_min) | (item_counts[rows.item] < item_min))
    if not weak.any():
      break
    keep &= ~weak
  drops["kcore_interactions"] += int((~keep).sum())
  drops["kcore_users"] += int(len(np.unique(rows.user)) - len(np.unique(rows.user[keep])))
  drops["kcore_items"] += int(len(np.unique(rows.item)) - len(np.unique(rows.item[keep])))
  return rows.select(keep)


def _renumber(rows: Interactions, catalog: Catalog) -> Sequences:
  catalog_row = {item_id: r for r, item_id in enumerate(catalog.item_ids)}
  used_items = np.unique(rows.item)
  catalog_rows = np.array([catalog_row[rows.item_ids[i]] for i in used_items], dtype=np.int64)
  order = np.argsort(catalog_rows, kind="stable")  # new item index follows catalog order
  new_item = np.full(len(rows.item_ids), -1, dtype=np.int32)
  new_item[used_items[order]] = np.arange(len(used_items), dtype=np.int32)
  used_users = np.unique(rows.user)  # vocab order = first appearance in the input
  new_user = np.full(len(rows.user_ids), -1, dtype=np.int64)
  new_user[used_users] = np.arange(len(used_users))
  # rows are sorted by (old user, time), and old user order equals new user order.
  offsets = np.zeros(len(used_users) + 1, dtype=np.int64)
  offsets[1:] = np.cumsum(np.bincount(new_user[rows.user], minlength=len(used_users)))
  return Sequences(catalog=catalog.take(catalog_rows[order]),
                   user_ids=[rows.user_ids[u] for u in used_users], offsets=offsets,
                   items=new_item[rows.item], timestamps=rows.timestamp.copy())


def leave_one_out(sequences: Sequences, max_history: int):
  """Yields (split, example) pairs: per user the last item is test, the one before validation.

  Each example is the target item and at most `max_history` items right before it. The train
  example's target is the last training item, so history + [target] is the (truncated) training
  sequence; no validation or test item ever appears in a training history.
  """
  for u in range(sequences.num_users):
    items = sequences.user_items(u)
    times = sequences.timestamps[sequences.offsets[u]:sequences.offsets[u + 1]]
    for split, end in (("train", len(items) - 3), ("validation", len(items) - 2),
                       ("test", len(items) - 1)):
      start = max(0, end - max_history)
      yield split, {"user_index": u, "user_id": sequences.user_ids[u],
                    "history": items[start:end].astype(np.int32), "target": int(items[end]),
                    "timestamp": int(times[end])}
