"""Batches for the trainers: shuffled index batches from grain for the small models (RQ-VAE,
SASRec), and the sum over micro-batches inside one jitted step (the LM's gradient accumulation,
the RQ-VAE's CPU microbatches).

Index batch s is a pure function of (seed, s): grain reshuffles every epoch with its own seed, so a
run resumed at step s sees exactly the batches the uninterrupted run would have.
"""

import grain
import jax
import jax.numpy as jnp


def index_batches(num_rows: int, batch_size: int, seed: int, start_step: int = 0):
  """An iterator over [batch_size] int arrays of row indices, from batch `start_step` on."""
  batch_size = min(batch_size, num_rows)
  dataset = (grain.MapDataset.range(num_rows).shuffle(seed=seed).repeat()
             .batch(batch_size, drop_remainder=True))
  return iter(dataset[start_step:].to_iter_dataset(
      grain.ReadOptions(num_threads=1, prefetch_buffer_size=4)))


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
