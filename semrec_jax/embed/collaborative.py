"""Collaborative item vectors: which items are bought near each other, from the training split only.

Text embeddings put "Mario Kart 8" near "Mario Kart Wii"; users who buy one rarely buy the other.
Codes learned from text alone lose about half of the item-ID SASRec's quality (docs/benchmarks.md);
codes that also carry co-occurrence keep most of it. The vectors are the truncated SVD of the
positive pointwise mutual information (PPMI) of item pairs that occur within `window` positions of
each other in a training sequence (a pair at distance d counts 1/d), with context counts raised to
0.75 as word2vec does. Only the train split is read, so nothing of a validation or test target
leaks into the codes.
"""

import numpy as np
import scipy.sparse as sparse
from scipy.sparse import linalg as sparse_linalg

SMOOTHING = 0.75  # context distribution exponent (word2vec's)


def cooccurrence(records: list[dict], num_items: int, window: int) -> sparse.csr_matrix:
  """Symmetric [num_items, num_items] counts of item pairs within `window` positions of each
  other in each training sequence (history + target), a pair at distance d counting 1/d."""
  rows, cols, weights = [], [], []
  for r in records:
    sequence = np.append(np.asarray(r["history"], np.int64), int(r["target"]))
    for d in range(1, window + 1):
      if len(sequence) > d:
        rows += [sequence[:-d], sequence[d:]]
        cols += [sequence[d:], sequence[:-d]]
        weights.append(np.full(2 * (len(sequence) - d), 1.0 / d))
  if not rows:
    return sparse.csr_matrix((num_items, num_items))
  return sparse.coo_matrix((np.concatenate(weights), (np.concatenate(rows), np.concatenate(cols))),
                           shape=(num_items, num_items)).tocsr()  # duplicates are summed


def ppmi(counts: sparse.csr_matrix) -> sparse.csr_matrix:
  """max(0, log p(i, j) / (p(i) p_0.75(j))) for the non-zero pairs of `counts`."""
  total = counts.sum()
  row_sums = np.asarray(counts.sum(axis=1)).ravel()
  context = row_sums ** SMOOTHING
  context *= total / max(context.sum(), 1e-30)
  pairs = counts.tocoo()
  pmi = np.log(pairs.data * total / (row_sums[pairs.row] * context[pairs.col]))
  keep = pmi > 0
  return sparse.coo_matrix((pmi[keep], (pairs.row[keep], pairs.col[keep])),
                           shape=counts.shape).tocsr()


DENSE_BELOW = 2_000  # catalogs smaller than this take the exact dense SVD


def item_vectors(records: list[dict], num_items: int, dim: int, window: int, seed: int = 0,
                 dense_below: int = DENSE_BELOW) -> np.ndarray:
  """[num_items, dim] float32: U sqrt(S) of the rank-`dim` SVD of the PPMI matrix, strongest
  direction first, each column's largest entry positive (an item never seen in training gets a
  zero row; a catalog of `dim` items or fewer, zero columns after its own rank)."""
  matrix = ppmi(cooccurrence(records, num_items, window)).astype(np.float64)
  rank = min(dim, num_items - 1)
  if num_items < dense_below or rank < 1:
    u, s, _ = np.linalg.svd(matrix.toarray())
    u, s = u[:, :rank], s[:rank]
  else:
    start = np.random.default_rng(seed).standard_normal(num_items)  # ARPACK's start: repeatable
    u, s, _ = sparse_linalg.svds(matrix, k=rank, v0=start)
  order = np.argsort(-s)
  vectors = u[:, order] * np.sqrt(s[order])
  if rank:
    vectors *= np.where(vectors[np.abs(vectors).argmax(axis=0), np.arange(rank)] < 0, -1, 1)
  out = np.zeros((num_items, dim), np.float32)
  out[:, :rank] = vectors
  return out
