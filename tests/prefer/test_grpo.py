"""GRPO's advantages and clipped objective against a direct numpy computation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from semrec_jax.prefer import grpo


def test_group_advantages_by_hand():
  rewards = np.array([[1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.5, 0.5], [2.0, -1.0, 0.5, 0.5]])
  got = np.asarray(grpo.group_advantages(jnp.asarray(rewards)))
  first = (rewards[0] - 0.25) / np.sqrt(0.1875)
  np.testing.assert_allclose(got[0], first, rtol=1e-5)
  np.testing.assert_array_equal(got[1], 0.0)  # all alike: nothing to learn
  np.testing.assert_allclose(got[2], (rewards[2] - 0.5) / rewards[2].std(), rtol=1e-5)
  np.testing.assert_allclose(got.sum(axis=1), 0.0, atol=1e-5)


def _reference(logp, old, ref, adv, mask, clip, beta):
  loss = []
  for n in range(logp.shape[0]):
    terms = []
    for t in range(logp.shape[1]):
      if not mask[n, t]:
        continue
      ratio = np.exp(logp[n, t] - old[n, t])
      policy = -min(ratio * adv[n], np.clip(ratio, 1 - clip, 1 + clip) * adv[n])
      kl = np.exp(ref[n, t] - logp[n, t]) - (ref[n, t] - logp[n, t]) - 1
      terms.append(policy + beta * kl)
    loss.append(np.mean(terms))
  return np.mean(loss)


def test_clipped_objective_equals_numpy_and_its_gradient_is_clipped():
  rng = np.random.default_rng(0)
  n, t = 6, 5
  logp = np.log(rng.uniform(0.05, 0.9, (n, t)))
  old = logp + rng.normal(0, 0.3, (n, t))  # ratios well outside [0.8, 1.2] too
  ref = logp + rng.normal(0, 0.5, (n, t))
  adv = rng.normal(size=n)
  mask = np.ones((n, t), bool)
  mask[0, 3:] = mask[4, 1:] = False  # rollouts of different lengths
  loss, metrics = grpo.clipped_objective(*map(jnp.asarray, (logp, old, ref, adv, mask)),
                                         clip=0.2, kl_weight=0.04)
  assert float(loss) == pytest.approx(_reference(logp, old, ref, adv, mask, 0.2, 0.04), rel=1e-5)
  ratio = np.exp(logp - old)
  assert float(metrics["clipped_fraction"]) == pytest.approx(
      (np.abs(ratio - 1) > 0.2)[mask].mean())
  assert float(metrics["kl"]) > 0

  # Tokens whose ratio is clipped on the side the advantage pushes get no policy gradient.
  grad = np.asarray(jax.grad(lambda lp: grpo.clipped_objective(
      lp, *map(jnp.asarray, (old, ref, adv, mask)), clip=0.2, kl_weight=0.0)[0])(
          jnp.asarray(logp)))
  frozen = ((adv[:, None] > 0) & (ratio > 1.2)) | ((adv[:, None] < 0) & (ratio < 0.8))
  assert frozen[mask].any() and (~frozen[mask]).any()
  np.testing.assert_array_equal(grad[frozen & mask], 0.0)
  assert np.all(grad[~frozen & mask] != 0.0)
  np.testing.assert_array_equal(grad[~mask], 0.0)  # prompt and padding tokens
