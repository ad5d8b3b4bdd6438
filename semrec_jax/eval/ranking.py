"""Recommendation quality of the LM: full-catalog ranking by constrained beam search and the seed's
sampled protocol (target vs sampled negatives, by code log-probabilities), both scored by
semrec_jax.protocol.metrics."""

import numpy as np

from semrec_jax.eval import prompts
from semrec_jax.protocol import metrics


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
