"""stats.json: what `prepare` reports about the data it wrote, from aggregates that both prepare
paths (in-process and Apache Beam) compute."""

import numpy as np

from semrec_jax.data import tfds_builders
from semrec_jax.data.catalog import ATTRIBUTE_FIELDS
from semrec_jax.data.processing import Sequences, length_summary

def compute_stats(sequences: Sequences, drops, kcore: int) -> dict:
  """stats.json of the in-process path, from the clean sequences."""
  lengths = sequences.lengths()
  values, counts = np.unique(lengths, return_counts=True)
  item_counts = np.bincount(sequences.items, minlength=len(sequences.catalog))
  filled = {name: sum(bool(v) for v in sequences.catalog.fields[name]) for name in COVERAGE_FIELDS}
  return summarize_stats(
      num_users=sequences.num_users, num_items=len(sequences.catalog),
      num_interactions=int(len(sequences.items)), kcore=kcore,
      length_counts=dict(zip(values.tolist(), counts.tolist())),
      min_item_interactions=int(item_counts.min()), filled=filled, drops=drops)


COVERAGE_FIELDS = ("description", "features", "categories") + ATTRIBUTE_FIELDS


def summarize_stats(*, num_users: int, num_items: int, num_interactions: int, kcore: int,
                    length_counts: dict[int, int], min_item_interactions: int,
                    filled: dict[str, int], drops) -> dict:
  """stats.json from aggregates (the Beam path computes them with combiners)."""
  lengths = length_summary(length_counts)
  return {
      "num_users": num_users,
      "num_items": num_items,
      "num_interactions": num_interactions,
      "kcore": kcore,
      "min_user_interactions": lengths["min"],
      "min_item_interactions": min_item_interactions,
      "sequence_length": lengths,
      "split_sizes": {split: num_users for split in tfds_builders.SPLITS},
      "attribute_coverage": {name: round(filled[name] / num_items, 4) for name in COVERAGE_FIELDS},
      "dropped": dict(sorted(drops.items())),
  }
