"""Group-relative policy optimisation (GRPO) in two pure functions: advantages from a group's
rewards, and the clipped policy objective with a KL term to the supervised model.

Shapes: P prompts x G rollouts each, flattened to N = P x G sequences of T tokens; `mask` marks
the rollout's own tokens (not the prompt, not padding)."""

import jax.numpy as jnp

# A group whose rewards' standard deviation is at most this scored alike: no advantages.
EPS = 1e-6


def group_advantages(rewards, eps: float = EPS):
  """[P, G] rewards -> [P, G] advantages: each reward less its group's mean, over the group's
  standard deviation. A group whose rollouts all scored alike teaches nothing (zeros)."""
  mean = rewards.mean(axis=1, keepdims=True)
  std = rewards.std(axis=1, keepdims=True)
  return jnp.where(std > eps, (rewards - mean) / (std + eps), 0.0)


def clipped_objective(logp, old_logp, ref_logp, advantages, mask, clip: float = 0.2,
                      kl_weight: float = 0.04):
  """(loss, metrics). logp / old_logp / ref_logp [N, T]: each token's log-probability under the
  policy being trained, the policy that made the rollouts, and the supervised model; advantages
  [N]. Per token: -min(ratio A, clip(ratio) A) + kl_weight KL, with the unbiased, never negative
  KL estimate exp(ref - logp) - (ref - logp) - 1; averaged over each rollout's tokens, then over
  rollouts (GRPO's sequence-level mean)."""
  mask = mask.astype(jnp.float32)
  ratio = jnp.exp(logp - old_logp)
  a = advantages[:, None]
  policy = -jnp.minimum(ratio * a, jnp.clip(ratio, 1.0 - clip, 1.0 + clip) * a)
  delta = ref_logp - logp
  kl = jnp.exp(delta) - delta - 1.0
  per_token = policy + kl_weight * kl
  tokens = jnp.maximum(mask.sum(axis=1), 1.0)
  per_rollout = lambda x: (x * mask).sum(axis=1) / tokens
  clipped = (jnp.abs(ratio - 1.0) > clip).astype(jnp.float32)
  loss = per_rollout(per_token).mean()
  return loss, {"policy_loss": per_rollout(policy).mean(), "kl": per_rollout(kl).mean(),
                "clipped_fraction": (clipped * mask).sum() / jnp.maximum(mask.sum(), 1.0)}
