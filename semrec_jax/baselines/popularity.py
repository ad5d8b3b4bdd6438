"""Popularity: every user gets the items most often seen in the training split."""

import numpy as np


def train_counts(train_records: list[dict], num_items: int) -> np.ndarray:
  """[num_items] interaction counts over the training sequences (histories + train targets)."""
  items = np.concatenate([np.append(np.asarray(r["history"], np.int64), int(r["target"]))
                          for r in train_records])
  return np.bincount(items, minlength=num_items)
