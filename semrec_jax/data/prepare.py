"""The `prepare` stage: raw files -> clean sequences -> TFDS ArrayRecord datasets + stats.json."""

import json
import os
import time

import numpy as np
from absl import logging

from semrec_jax.data import amazon2023, games_tsv, generic, tfds_builders
from semrec_jax.data.catalog import ATTRIBUTE_FIELDS
from semrec_jax.data.errors import DataError
from semrec_jax.data.processing import Sequences, build_sequences, leave_one_out

READERS = {"amazon2023": amazon2023.read, "games_tsv": games_tsv.read, "generic": generic.read}


def prepare(config, out_dir: str) -> dict:
  """Reads `config.data`, writes the datasets and stats.json into out_dir; returns the stats."""
  data = config.data
  if data.format not in READERS:
    raise DataError(f"unknown config.data.format {data.format!r}; expected one of {sorted(READERS)}")
  if data.max_history < 1:
    raise DataError(f"config.data.max_history must be >= 1, got {data.max_history}")
  start = time.time()
  catalog, interactions, drops = READERS[data.format](data)
  logging.info("read %d interactions, %d catalog rows in %.1fs", len(interactions), len(catalog),
               time.time() - start)
  sequences = build_sequences(interactions, catalog, data.kcore, drops)
  examples = {split: [] for split in tfds_builders.SPLITS}
  for split, example in leave_one_out(sequences, data.max_history):
    examples[split].append(example)
  tfds_builders.write(out_dir, sequences.catalog, examples)
  stats = compute_stats(sequences, drops, data.kcore)
  stats["seconds"] = round(time.time() - start, 2)
  with open(os.path.join(out_dir, "stats.json"), "w") as f:
    json.dump(stats, f, indent=2, ensure_ascii=False)
  logging.info("prepared %d users, %d items, %d interactions in %.1fs", stats["num_users"],
               stats["num_items"], stats["num_interactions"], stats["seconds"])
  return stats


def compute_stats(sequences: Sequences, drops, kcore: int) -> dict:
  lengths = sequences.lengths()
  item_counts = np.bincount(sequences.items, minlength=len(sequences.catalog))
  coverage = {name: round(float(np.mean([bool(v) for v in sequences.catalog.fields[name]])), 4)
              for name in ("description", "features", "categories") + ATTRIBUTE_FIELDS}
  return {
      "num_users": sequences.num_users,
      "num_items": len(sequences.catalog),
      "num_interactions": int(len(sequences.items)),
      "kcore": kcore,
      "min_user_interactions": int(lengths.min()),
      "min_item_interactions": int(item_counts.min()),
      "sequence_length": {
          "min": int(lengths.min()), "max": int(lengths.max()),
          "mean": round(float(lengths.mean()), 3), "median": float(np.median(lengths)),
          "p90": float(np.percentile(lengths, 90)),
      },
      "split_sizes": {split: sequences.num_users for split in tfds_builders.SPLITS},
      "attribute_coverage": coverage,
      "dropped": dict(sorted(drops.items())),
  }
