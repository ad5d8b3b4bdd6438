"""Summing over micro-batches inside one jitted step: the one implementation behind the LM's
gradient accumulation and the RQ-VAE's CPU microbatches."""

import jax
import jax.numpy as jnp


def scan_sum(fn, micro):
  """fn(one micro-batch) -> (summed, kept): `summed` (a pytree) is added up over the
  micro-batches, the leading axis of every array in `micro`; `kept` comes back stacked [k, ...].
  `lax.scan` keeps one micro-batch's activations alive at a time; k = 1 runs fn once, unscanned.
  """
  first = jax.tree.map(lambda x: x[0], micro)
  if jax.tree.leaves(micro)[0].shape[0] == 1:
    summed, kept = fn(first)
    return summed, jax.tree.map(lambda x: x[None], kept)
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(fn, first)[0])

  def body(total, batch):
    summed, kept = fn(batch)
    return jax.tree.map(jnp.add, total, summed), kept

  return jax.lax.scan(body, zeros, micro)
