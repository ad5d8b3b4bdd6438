"""The `prepare` stage: raw files -> clean sequences -> TFDS ArrayRecord datasets + stats.json."""

import os
import time

from absl import logging

from semrec_jax import storage
from semrec_jax.data import amazon2023, games_tsv, generic, tfds_builders
from semrec_jax.data.errors import DataError
from semrec_jax.data.processing import build_sequences, leave_one_out
from semrec_jax.data.stats import compute_stats

READERS = {"amazon2023": amazon2023.read, "games_tsv": games_tsv.read, "generic": generic.read}


RUNNERS = ("local", "beam")


def prepare(config, out_dir: str) -> dict:
  """Reads `config.data`, writes the datasets and stats.json into out_dir; returns the stats.

  `config.data.runner` picks the engine: 'local' (this process; memory grows with the corpus) or
  'beam' (Apache Beam pipelines on the runner named in `config.data.beam_options`).
  """
  data = config.data
  if data.format not in READERS:
    raise DataError(f"unknown config.data.format {data.format!r}; expected one of {sorted(READERS)}")
  if data.max_history < 1:
    raise DataError(f"config.data.max_history must be >= 1, got {data.max_history}")
  runner = data.get("runner", "local")
  if runner not in RUNNERS:
    raise DataError(f"unknown config.data.runner {runner!r}; expected one of {RUNNERS}")
  start = time.time()
  stats = _beam_prepare()(config, out_dir) if runner == "beam" else _prepare_local(data, out_dir)
  stats["seconds"] = round(time.time() - start, 2)
  storage.write_json(os.path.join(out_dir, "stats.json"), stats, ensure_ascii=False)
  logging.info("prepared %d users, %d items, %d interactions in %.1fs (%s)", stats["num_users"],
               stats["num_items"], stats["num_interactions"], stats["seconds"], runner)
  return stats


def _prepare_local(data, out_dir: str) -> dict:
  start = time.time()
  catalog, interactions, drops = READERS[data.format](data)
  logging.info("read %d interactions, %d catalog rows in %.1fs", len(interactions), len(catalog),
               time.time() - start)
  sequences = build_sequences(interactions, catalog, data.kcore, drops)
  examples = {split: [] for split in tfds_builders.SPLITS}
  for split, example in leave_one_out(sequences, data.max_history):
    examples[split].append(example)
  tfds_builders.write(out_dir, sequences.catalog, examples)
  return compute_stats(sequences, drops, data.kcore)


def _beam_prepare():
  """`beam_prepare.prepare_beam`, or a one-line error when Apache Beam is not installed."""
  try:
    import apache_beam  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  except ImportError as e:
    raise DataError("config.data.runner='beam' needs Apache Beam, which is not installed: "
                    "pip install 'semrec_jax[beam]' (or set config.data.runner=local)") from e
  from semrec_jax.data import beam_prepare  # pylint: disable=g-import-not-at-top
  return beam_prepare.prepare_beam
