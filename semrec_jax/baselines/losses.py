"""SASRec training losses, averaged over the positions that have a next item.

Item-ID model (config.baselines.loss): "ce" full-softmax cross-entropy over the catalog (the
strongest published variant), "sampled" softmax over the target and `negatives` uniform items
shared by the batch, "bce" the original binary cross-entropy with one uniform negative per position.
Semantic-ID model: cross-entropy of each code level given the true codes before it, summed over
levels (the negative log-probability of the item).
"""

import jax
import jax.numpy as jnp

from semrec_jax.baselines.sequences import IGNORE

ITEM_LOSSES = ("ce", "sampled", "bce")


def _mean(values, valid):
  return jnp.sum(jnp.where(valid, values, 0.0)) / jnp.maximum(jnp.sum(valid), 1)


def item_loss(model, hidden, targets, kind: str, key, negatives: int):
  """Mean loss of an ItemSASRec's hidden states [B, T, D] against next items [B, T]."""
  valid = targets != IGNORE
  target = jnp.where(valid, targets, 0)
  num_items = model.config.num_items
  if kind == "ce":
    logits = model.item_scores(hidden).astype(jnp.float32)
    picked = jnp.take_along_axis(logits, target[..., None], axis=-1)[..., 0]
    return _mean(jax.nn.logsumexp(logits, axis=-1) - picked, valid)
  positive = model.item_scores(hidden, target[..., None])[..., 0].astype(jnp.float32)
  if kind == "sampled":
    sampled = jax.random.randint(key, (negatives,), 0, num_items)
    scores = model.item_scores(hidden, sampled).astype(jnp.float32)  # [B, T, S]
    scores = jnp.where(sampled == target[..., None], -jnp.inf, scores)  # a negative that is the target
    logits = jnp.concatenate([positive[..., None], scores], axis=-1)
    return _mean(jax.nn.logsumexp(logits, axis=-1) - positive, valid)
  if kind == "bce":
    negative_item = jax.random.randint(key, target.shape, 0, num_items)
    negative = model.item_scores(hidden, negative_item[..., None])[..., 0].astype(jnp.float32)
    negative_term = jnp.where(negative_item == target, 0.0, jax.nn.softplus(negative))
    return _mean(jax.nn.softplus(-positive) + negative_term, valid)
  raise ValueError(f"unknown SASRec loss {kind!r}; known: {ITEM_LOSSES}")


def code_loss(model, hidden, targets):
  """Mean over positions of -log p(next item) = sum of per-level code cross-entropies."""
  valid = targets != IGNORE
  codes = jnp.take(model.codes[...], jnp.where(valid, targets, 0), axis=0)  # [B, T, L]
  logp = jax.nn.log_softmax(model.code_logits(hidden, codes).astype(jnp.float32), axis=-1)
  nll = -jnp.take_along_axis(logp, codes[..., None], axis=-1)[..., 0].sum(-1)
  return _mean(nll, valid)
