"""Popularity: every user gets the items most often seen in the training split (the floor every
model's report shows beside its own numbers)."""

import numpy as np

from semrec_jax.protocol import metrics


def train_counts(train_records: list[dict], num_items: int) -> np.ndarray:
  """[num_items] interaction counts over the training sequences (histories + train targets)."""
  items = np.concatenate([np.append(np.asarray(r["history"], np.int64), int(r["target"]))
                          for r in train_records])
  return np.bincount(items, minlength=num_items)


def ranking(counts: np.ndarray, length: int) -> np.ndarray:
  """The `length` items with the highest training counts [num_items] (ties: lower index first)."""
  counts = np.asarray(counts)
  return np.lexsort((np.arange(len(counts)), -counts))[:length]


def scores(counts: np.ndarray, records: list[dict], split: str) -> dict[str, float]:
  """Popularity's Recall@10 and NDCG@10 (from training-split `counts`, train_counts) on the users
  of `records`, as the LM's report shows it beside the LM."""
  top = ranking(counts, max(metrics.CUTOFFS))
  ranked = np.broadcast_to(top, (len(records), len(top)))
  targets = np.asarray([int(r["target"]) for r in records])
  found = metrics.ranking_metrics(ranked, targets, f"popularity/{split}")
  return {k: found[k] for k in (f"popularity/{split}/recall@10", f"popularity/{split}/ndcg@10")}
