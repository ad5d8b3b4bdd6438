"""Recommendation quality of the LM: full-catalog ranking by constrained beam search, the seed's
sampled protocol (target vs sampled negatives, by code log-probabilities), and popularity, all
through semrec_jax.eval.metrics."""

import numpy as np

from semrec_jax.eval import metrics, prompts


def users_to_evaluate(num_users: int, max_users: int, seed: int) -> np.ndarray:
  """A fixed random subset of users (all when max_users <= 0), sorted; the same for every split
  and model, so numbers are comparable."""
  if max_users <= 0 or max_users >= num_users:
    return np.arange(num_users)
  return np.sort(np.random.default_rng([seed, 11]).choice(num_users, max_users, replace=False))


def rank(decoder, lm, records: list[dict], width: int, max_history: int) -> np.ndarray:
  """[users, width] items by beam search on each user's next-item prompt (history only)."""
  texts = [prompts.next_item(r["history"], lm.sids, max_history) for r in records]
  items, _ = decoder.items(prompts.encode(lm.tokenizer, texts), width)
  return items


def sampled(decoder, lm, records: list[dict], negatives: int, max_history: int,
            seed: int) -> dict[str, float]:
  """The seed's protocol: target vs `negatives` items outside the user's history, each scored
  by the sum of its code log-probabilities."""
  targets = np.asarray([int(r["target"]) for r in records])
  exclude = [set(int(i) for i in r["history"]) | {int(r["target"])} for r in records]
  candidates = np.concatenate([targets[:, None], metrics.sample_negatives(
      len(lm.codes), exclude, negatives, seed)], axis=1)
  texts = [prompts.next_item(r["history"], lm.sids, max_history) for r in records]
  scores = decoder.score(prompts.encode(lm.tokenizer, texts), lm.codes[candidates])
  return metrics.sampled_metrics(scores[:, 0], scores[:, 1:], f"sampled{negatives}")


def popularity(counts: np.ndarray, records: list[dict], split: str) -> dict[str, float]:
  """Popularity (training-split interaction `counts`, baselines.popularity.train_counts) on the
  same users and metrics."""
  top = metrics.popularity_ranking(counts, max(metrics.CUTOFFS))
  ranked = np.broadcast_to(top, (len(records), len(top)))
  targets = np.asarray([int(r["target"]) for r in records])
  found = metrics.ranking_metrics(ranked, targets, f"popularity/{split}")
  return {k: found[k] for k in (f"popularity/{split}/recall@10", f"popularity/{split}/ndcg@10")}
