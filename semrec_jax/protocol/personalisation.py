"""How personal a model's top-10 lists are, measured the same way for every model.

A model can rank well on average by recommending the same popular items to everyone; these numbers
say whether it does. All three are read on the test split's top-10 lists of a fixed random subset of
USERS users (all, when fewer are ranked), so a model ranked on every user and the LM ranked on a few
hundred are compared on subsets of the same size:

- pairwise_jaccard: mean |A & B| / |A | B| over all pairs of users' lists (1: one list for all);
- catalog_coverage: share of the catalog that appears in any of the lists;
- popular_share: share of list slots held by the POPULAR most-bought training items.
"""

import numpy as np

from semrec_jax.protocol import popularity

K = 10
USERS = 300
POPULAR = 100
KEYS = tuple(f"top{K}/{name}" for name in ("pairwise_jaccard", "catalog_coverage",
                                           "popular_share"))


def _subset(ranked: np.ndarray, seed: int) -> np.ndarray:
  if len(ranked) <= USERS:
    return ranked
  rows = np.random.default_rng([seed, 13]).choice(len(ranked), USERS, replace=False)
  return ranked[np.sort(rows)]


def pairwise_jaccard(lists: np.ndarray, num_items: int) -> float | None:
  """Mean Jaccard similarity over all pairs of rows (entries outside the catalog are ignored);
  None for fewer than two rows."""
  if len(lists) < 2:
    return None
  member = np.zeros((len(lists), num_items), np.float32)
  for u, row in enumerate(lists):
    row = row[(row >= 0) & (row < num_items)]
    member[u, row] = 1.0
  shared = member @ member.T  # [U, U] items in both lists
  sizes = member.sum(1)
  union = sizes[:, None] + sizes[None, :] - shared
  upper = np.triu_indices(len(lists), k=1)
  return float(np.mean(np.where(union[upper] > 0, shared[upper] / np.maximum(union[upper], 1),
                                1.0)))


def list_personalisation(ranked: np.ndarray, train_counts: np.ndarray, seed: int = 0
                         ) -> dict[str, float]:
  """The three numbers (KEYS) on the top-K of `ranked` [users, >= K] (item indices; -1 = none)."""
  num_items = len(train_counts)
  lists = _subset(np.asarray(ranked)[:, :K], seed)
  valid = lists[(lists >= 0) & (lists < num_items)]
  popular = popularity.ranking(train_counts, POPULAR)
  return {KEYS[0]: pairwise_jaccard(lists, num_items),
          KEYS[1]: float(len(np.unique(valid)) / num_items),
          KEYS[2]: float(np.isin(lists, popular).sum() / lists.size)}
