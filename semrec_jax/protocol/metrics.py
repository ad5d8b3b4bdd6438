"""Ranking metrics, one implementation for the LM, the baselines and popularity, and the users
they are measured on.

Full ranking: each user has a ranked list of item indices (best first, -1 = no item) and one
target. Recall@K (= HR@K with one target) is 1 when the target is in the top K; NDCG@K is
1 / log2(rank + 1) when it is; MRR is 1 / rank over the whole list (0 when the target is not in it,
so a generative model's MRR counts only its beam). Sampled protocol (the seed's): the target's
score against scores of sampled negatives; its rank is 1 + the number of negatives scoring at
least as high (ties count against the model).
"""

import numpy as np

CUTOFFS = (5, 10, 20)


def users_to_evaluate(num_users: int, max_users: int, seed: int) -> np.ndarray:
  """A fixed random subset of users (all when max_users <= 0), sorted; the same for every split
  and model, so numbers are comparable."""
  if max_users <= 0 or max_users >= num_users:
    return np.arange(num_users)
  return np.sort(np.random.default_rng([seed, 11]).choice(num_users, max_users, replace=False))


def target_ranks(ranked: np.ndarray, targets: np.ndarray) -> np.ndarray:
  """1-based rank of each target in its list ([users, list]), or 0 when absent."""
  ranked, targets = np.asarray(ranked), np.asarray(targets)
  hit = ranked == targets[:, None]
  return np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, 0)


def _per_user(ranks: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
  """Each user's Recall@k and NDCG@k (1 / log2(rank + 1) when the target is in the top k)."""
  hit = (ranks > 0) & (ranks <= k)
  return hit.astype(np.float64), np.where(hit, 1.0 / np.log2(np.maximum(ranks, 1) + 1), 0.0)


def ranking_metrics(ranked: np.ndarray, targets: np.ndarray, prefix: str,
                    cutoffs=CUTOFFS) -> dict[str, float]:
  """{prefix/recall@K, prefix/ndcg@K for K in cutoffs, prefix/mrr}, means over users."""
  ranks = target_ranks(ranked, targets)
  per_k = {k: _per_user(ranks, k) for k in cutoffs}
  out = {f"{prefix}/recall@{k}": float(np.mean(per_k[k][0])) for k in cutoffs}
  out.update({f"{prefix}/ndcg@{k}": float(np.mean(per_k[k][1])) for k in cutoffs})
  out[f"{prefix}/mrr"] = float(np.mean(np.where(ranks > 0, 1.0 / np.maximum(ranks, 1), 0.0)))
  return out


def paired_difference(ranked_a: np.ndarray, ranked_b: np.ndarray, targets: np.ndarray,
                      prefix: str, k: int = 10) -> dict[str, float]:
  """Model B minus model A on the same users: the mean of the per-user differences in Recall@k
  and NDCG@k and its standard error (their spread / sqrt(users)). Two models that rank alike
  differ per user far less than a metric varies across users, so this says whether a small lift
  is more than noise where each model's own standard error cannot."""
  out = {}
  pairs = zip(("recall", "ndcg"), _per_user(target_ranks(ranked_a, targets), k),
              _per_user(target_ranks(ranked_b, targets), k))
  for name, a, b in pairs:
    diff = b - a
    spread = np.std(diff, ddof=1) if len(diff) > 1 else 0.0
    out[f"{prefix}/{name}@{k}"] = float(np.mean(diff))
    out[f"{prefix}/{name}@{k}_stderr"] = float(spread / np.sqrt(len(diff)))
  return out


def sampled_metrics(target_scores: np.ndarray, negative_scores: np.ndarray, prefix: str,
                    k: int = 10) -> dict[str, float]:
  """hit@k and ndcg@k of each target among its negatives: scores [users], [users, negatives]."""
  ranks = 1 + np.sum(negative_scores >= np.asarray(target_scores)[:, None], axis=1)
  hit = ranks <= k
  return {f"{prefix}/hit@{k}": float(np.mean(hit)),
          f"{prefix}/ndcg@{k}": float(np.mean(np.where(hit, 1.0 / np.log2(ranks + 1), 0.0)))}


class TooFewItems(ValueError):
  """The sampled protocol asks for more negatives than the catalog has outside a history."""


def sample_negatives(num_items: int, exclude: list[set], count: int,
                     seed: int) -> np.ndarray:
  """[users, count] distinct items per user, none of them in that user's `exclude` set (the
  target and the history), drawn uniformly with a fixed seed."""
  rng = np.random.default_rng([seed, 1000])
  out = np.empty((len(exclude), count), np.int64)
  for u, banned in enumerate(exclude):
    if num_items - len(banned) < count:
      raise TooFewItems(f"{count} negatives asked from a catalog of {num_items} items, "
                        f"{len(banned)} of them excluded")
    picked = []
    while len(picked) < count:
      draw = rng.choice(num_items, count - len(picked) + len(banned), replace=False)
      picked = list(dict.fromkeys(picked + [int(i) for i in draw if i not in banned]))[:count]
    out[u] = picked
  return out


def list_quality(ranked: np.ndarray, num_items: int) -> dict[str, float]:
  """invalid_rate: share of list entries that name no catalog item; duplicate_rate: share of
  valid entries repeating an earlier entry of the same list."""
  ranked = np.asarray(ranked)
  valid = (ranked >= 0) & (ranked < num_items)
  duplicates = sum(int(v.sum()) - len(set(r[v].tolist())) for r, v in zip(ranked, valid))
  return {"invalid_rate": float(1 - valid.mean()),
          "duplicate_rate": float(duplicates / max(1, int(valid.sum())))}
