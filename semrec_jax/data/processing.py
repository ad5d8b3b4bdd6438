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
    raise DataError(NO_INTERACTIONS)
  rows = interactions.select(np.lexsort((interactions.order, interactions.timestamp,
                                         interactions.user)))
  rows = _dedupe(rows, drops)
  rows = _join_catalog(rows, catalog, drops)
  require_rows(len(rows), JOIN_STEP)
  rows = _kcore(rows, kcore, drops)
  require_rows(len(rows), kcore_step(kcore))
  return _renumber(rows, catalog)


NO_INTERACTIONS = "no interactions were read: the input files hold no usable rows"
JOIN_STEP = "the catalog join (no interacted item has a catalog row with a title)"


def kcore_minimums(k: int) -> tuple[int, int]:
  """(fewest interactions a user needs, fewest an item needs) in the k-core."""
  return max(k, MIN_SEQUENCE), max(k, 0)


def kcore_step(k: int) -> str:
  user_min, _ = kcore_minimums(k)
  return f"the {k}-core filter (users need >= {user_min} interactions, items >= {k})"


def require_rows(num_rows: int, step: str) -> None:
  if num_rows == 0:
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
  user_min, item_min = kcore_minimums(k)
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
  """Yields (split, example) pairs for every user, in user order (see `user_examples`)."""
  for u in range(sequences.num_users):
    span = slice(sequences.offsets[u], sequences.offsets[u + 1])
    yield from user_examples(u, sequences.user_ids[u], sequences.items[span],
                             sequences.timestamps[span], max_history)


def user_examples(user_index: int, user_id: str, items, timestamps, max_history: int):
  """One user's leave-one-out examples as (split, example): the last item is test, the one before
  validation, the one before that the train target.

  Each example is the target item and at most `max_history` items right before it. The train
  example's target is the last training item, so history + [target] is the (truncated) training
  sequence; no validation or test item ever appears in a training history.
  """
  items = np.asarray(items, dtype=np.int32)
  for split, end in (("train", len(items) - 3), ("validation", len(items) - 2),
                     ("test", len(items) - 1)):
    start = max(0, end - max_history)
    yield split, {"user_index": user_index, "user_id": user_id,
                  "history": items[start:end].astype(np.int32), "target": int(items[end]),
                  "timestamp": int(timestamps[end])}


def length_summary(length_counts: dict[int, int]) -> dict:
  """min, max, mean, median and p90 of the sequence lengths from {length: number of users}.

  Equal to numpy's `mean`, `median` and `percentile(..., 90)` (linear interpolation) on the
  expanded lengths, without materialising them (the Beam path has only the histogram).
  """
  values = sorted(length_counts)
  counts = np.array([length_counts[v] for v in values], dtype=np.int64)
  ends = np.cumsum(counts)  # sorted position i holds values[searchsorted(ends, i, 'right')]
  n = int(ends[-1])

  def at(i: int) -> float:
    return float(values[int(np.searchsorted(ends, i, side="right"))])

  def percentile(q: float) -> float:
    virtual = (n - 1) * (q / 100)
    lo = int(np.floor(virtual))
    t = virtual - lo
    a, b = at(lo), at(min(lo + 1, n - 1))
    return b - (b - a) * (1 - t) if t >= 0.5 else a + (b - a) * t

  median = at(n // 2) if n % 2 else (at(n // 2 - 1) + at(n // 2)) / 2
  total = sum(v * c for v, c in zip(values, counts.tolist()))
  return {"min": int(values[0]), "max": int(values[-1]), "mean": round(total / n, 3),
          "median": float(median), "p90": float(percentile(90))}
