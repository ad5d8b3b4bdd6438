"""Shuffled index batches from grain, shared by the small-model trainers (RQ-VAE, SASRec).

Batch s is a pure function of (seed, s): grain reshuffles every epoch with its own seed, so a run
resumed at step s sees exactly the batches the uninterrupted run would have.
"""

import grain


def index_batches(num_rows: int, batch_size: int, seed: int, start_step: int = 0):
  """An iterator over [batch_size] int arrays of row indices, from batch `start_step` on."""
  batch_size = min(batch_size, num_rows)
  dataset = (grain.MapDataset.range(num_rows).shuffle(seed=seed).repeat()
             .batch(batch_size, drop_remainder=True))
  return iter(dataset[start_step:].to_iter_dataset(
      grain.ReadOptions(num_threads=1, prefetch_buffer_size=4)))
