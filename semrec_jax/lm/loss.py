"""Next-token cross-entropy on answer tokens only, for packed or padded rows."""

import jax.numpy as jnp
import optax


def next_token_loss(logits, tokens, mask, segment_ids):
  """Returns (sum of losses, number of predicted tokens).

  Position t predicts token t+1 when both are in the same example and t+1 is an answer token;
  nothing is predicted across an example boundary or into padding.
  """
  targets = tokens[:, 1:]
  valid = (mask[:, 1:] > 0) & (segment_ids[:, 1:] == segment_ids[:, :-1]) & (segment_ids[:, 1:] > 0)
  # float32 softmax even for bfloat16 activations: the log-sum-exp over a large vocabulary needs it.
  losses = optax.softmax_cross_entropy_with_integer_labels(
      logits[:, :-1].astype(jnp.float32), targets)
  return jnp.sum(jnp.where(valid, losses, 0.0)), jnp.sum(valid)
