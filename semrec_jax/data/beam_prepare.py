"""The `prepare` stage as Apache Beam pipelines, for corpora that do not fit in one process.

Selected by `config.data.runner = "beam"`; `config.data.beam_options` holds the pipeline options
(`--runner=DataflowRunner --project=... --temp_location=gs://...`; without --runner: the
DirectRunner's Python engine, FnApiRunner, in this process).
Same readers, dedup, k-core and leave-one-out as the in-process path, and the same output: the two
TFDS ArrayRecord datasets (written through TFDS's own Beam support) and stats.json.

Every record goes through the same functions as in the in-process path: the per-file parsers of
`sources.Plan`, `catalog.make_row`/`fill_row`, `processing.kcore_minimums`, `user_examples` and
`stats.summarize_stats`. What differs is only how groups meet: a shuffle per user or per item
instead of numpy over all rows. The pipelines, each a separate run:

  1. read + k-core: parse every file (one worker per file: a gzipped file cannot be split) ->
     per user: chronological order (timestamp, then place in the input), first occurrence of each
     item -> per item: join the catalog rows (first row per id, side attributes filled in order)
     -> `beam_kcore_rounds` k-core rounds -> rows, catalog, bad-line and drop counts on disk.
  2. k-core only, repeated while the last round still removed something (k-core is a fixed point
     that no fixed-depth graph reaches in general; each round is two groupings: per user, per item).
  3. assemble: items numbered in catalog order and users in order of first appearance (a
     distributed dense rank: counts per bucket of input lines, then a sort within each bucket),
     leave-one-out per user -> examples and catalog rows on disk, plus the aggregates of stats.json.
  4. TFDS: `SemrecItems` and `SemrecSequences` read those files through `_generate_examples`
     returning a Beam PTransform; keys are the item and user indices and shuffling is disabled, so
     element i of every split is the same as in-process.
With a distributed runner the driver (this process) holds only counters and file names: its
memory does not grow with the corpus. The DirectRunner runs everything here: for tests and checks.
"""

import json
import os
import shlex
import shutil
import time

import apache_beam as beam
from absl import logging
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from semrec_jax import storage
from semrec_jax.data import amazon2023, beam_steps as steps, games_tsv, generic, tfds_builders
from semrec_jax.data.errors import BadLines, DataError, DropLog
from semrec_jax.data.stats import COVERAGE_FIELDS, summarize_stats
from semrec_jax.data.processing import (JOIN_STEP, NO_INTERACTIONS, kcore_minimums, kcore_step,
                                        require_rows)

PLANS = {"amazon2023": amazon2023.plan, "games_tsv": games_tsv.plan, "generic": generic.plan}
_WORK = "_beam_work"  # intermediate files, under the run's folder (see `prepare_beam`)
# What the in-process path reports even when zero.
_ALWAYS_COUNTED = ("duplicate_interactions", "duplicate_item_rows", "items_missing_from_catalog",
                   "interactions_on_items_missing_from_catalog", "items_without_title",
                   "interactions_on_items_without_title")


def prepare_beam(config, out_dir: str) -> dict:
  """Runs the pipelines; writes the datasets and returns the stats (as `prepare.prepare`)."""
  data = config.data
  plan = PLANS[data.format](data)  # finds the files (a missing one is an error here, at once)
  _preflight(plan)
  options = PipelineOptions(pipeline_args(data.beam_options))
  # With beam_dir, a folder of its own per run (removed once the datasets are copied), so TFDS
  # never finds an earlier run's dataset there and skips writing.
  root = (_join(data.beam_dir, f"run-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
          if data.beam_dir else out_dir)
  work = _join(root, _WORK)
  _delete(work)  # shards of an interrupted run would be read with this run's
  try:
    stats = _run_pipelines(data, plan, options, root, work)
    if data.beam_dir:
      _copy_datasets(root, out_dir)
  finally:  # intermediate files (and the run's folder in beam_dir) go, whatever happened
    _delete(root if data.beam_dir else work)
  return stats


def _run_pipelines(data, plan, options, root: str, work: str) -> dict:
  user_min, item_min = kcore_minimums(data.kcore)
  rounds = max(1, int(data.beam_kcore_rounds))
  start, runs = time.time(), 0

  with beam.Pipeline(options=options) as p:
    rows, catalog, bad, drops = steps.read(p, plan, data.max_bad_fraction)
    kept, kcore_stats = steps.kcore(rows, 0, rounds, user_min, item_min)
    steps.write_rows(kept, _join(work, "rows-0"), "0")
    steps.write_jsonl(catalog, _join(work, "catalog"), "Catalog")
    steps.write_json(bad | "AllBadLines" >> beam.combiners.ToList(),
                     _join(work, "bad_lines.json"), "BadLines")
    steps.write_counts(drops, _join(work, "read.json"), "Read")
    steps.write_counts(kcore_stats, _join(work, "kcore-0.json"), "KcoreStats0")
  runs += 1
  logging.info("beam prepare: read + %d k-core rounds in %.1fs", rounds, time.time() - start)
  drop_log = _check_read(plan, _read_json(_join(work, "bad_lines.json")),
                         _read_json(_join(work, "read.json")), data.max_bad_fraction)
  history = _read_json(_join(work, "kcore-0.json"))
  rounds_done = rounds
  require_rows(history.get("round0/rows", 0), JOIN_STEP)
  while not _converged(history, rounds_done - rounds, rounds_done):
    with beam.Pipeline(options=options) as p:
      rows = p | f"ReadRows{runs}" >> steps.ReadRows(_join(work, f"rows-{runs - 1}"))
      kept, kcore_stats = steps.kcore(rows, rounds_done, rounds, user_min, item_min)
      steps.write_rows(kept, _join(work, f"rows-{runs}"), str(runs))
      steps.write_counts(kcore_stats, _join(work, f"kcore-{runs}.json"), f"KcoreStats{runs}")
    history.update(_read_json(_join(work, f"kcore-{runs}.json")))
    rounds_done += rounds
    runs += 1
    logging.info("beam prepare: %d k-core rounds, %d interactions left at %.1fs", rounds_done,
                 history.get(f"round{rounds_done - 1}/rows", 0), time.time() - start)
  last = _fixed_point_round(history, rounds_done)
  final = {name: history.get(f"round{last}/{name}", 0) for name in ("rows", "users", "items")}
  for name, drop in (("rows", "kcore_interactions"), ("users", "kcore_users"),
                     ("items", "kcore_items")):
    drop_log[drop] += history.get(f"round0/{name}", 0) - final[name]
  require_rows(final["rows"], kcore_step(data.kcore))

  with beam.Pipeline(options=options) as p:
    steps.assemble(p, _join(work, f"rows-{runs - 1}"), _join(work, "catalog"), work,
                   data.max_history)
  runs += 1
  logging.info("beam prepare: numbered and split at %.1fs", time.time() - start)
  counts = _read_json(_join(work, "assemble.json"))
  minimums = _read_json(_join(work, "assemble_min.json"))
  tfds_builders.write_beam(root, steps.shards(_join(work, "items")),
                           {s: steps.shards(_join(work, f"examples-{s}"))
                            for s in tfds_builders.SPLITS}, options)
  runs += 2
  logging.info("beam prepare: TFDS datasets written at %.1fs", time.time() - start)
  stats = summarize_stats(
      num_users=counts["users"], num_items=counts["items"],
      num_interactions=counts["interactions"], kcore=data.kcore,
      length_counts={int(k.split("/")[1]): v for k, v in counts.items()
                     if k.startswith("length/")},
      min_item_interactions=minimums["item_interactions"],
      filled={name: counts.get(f"filled/{name}", 0) for name in COVERAGE_FIELDS},
      drops=drop_log)
  logging.info("beam prepare: %d pipeline runs, %d k-core rounds, %.1fs", runs, last + 1,
               time.time() - start)
  return stats


def pipeline_args(beam_options: str) -> list[str]:
  """The pipeline options as arguments; without a --runner, the local Python runner (FnApiRunner,
  what the DirectRunner runs Python pipelines on: the DirectRunner itself first tries to download
  the Go Prism runner from GitHub, and falls back to it when offline)."""
  args = shlex.split(beam_options or "")
  if not any(a == "--runner" or a.startswith("--runner=") for a in args):
    args.append("--runner=FnApiRunner")
  return args


def _preflight(plan) -> None:
  """Parses the first record of every file here, so a wrong header fails at once with the
  in-process error, not inside a worker of a remote job."""
  files = [(path, plan.parse_interactions) for path in plan.interaction_files]
  files.append((plan.catalog_file, plan.parse_catalog))
  if plan.attribute_file:
    files.append((plan.attribute_file, plan.parse_attributes))
  for path, parse in files:
    records = parse(path, BadLines(path, max_bad_fraction=1.0))
    next(records, None)
    records.close()


def _check_read(plan, bad_lines: list, counts: dict, max_bad_fraction: float) -> DropLog:
  """Bad-line checks in the in-process read order, so the same file's error comes first."""
  kinds = (("catalog", "attributes", "interactions") if plan.catalog_first
           else ("interactions", "catalog", "attributes"))
  drops = DropLog()
  for entry in sorted(bad_lines, key=lambda e: (kinds.index(e["kind"]), e["index"])):
    bad = BadLines(entry["path"], max_bad_fraction, total=entry["total"])
    bad.counts.update(entry["counts"])
    bad.examples.extend(entry["examples"])
    bad.check()
    drops.merge_bad_lines(bad)
  if not counts.get("read/interactions"):
    raise DataError(NO_INTERACTIONS)
  for name in _ALWAYS_COUNTED:
    drops[name] += 0
  for name, n in counts.items():
    if not name.startswith("read/"):
      drops[name] += n
  return drops


def _converged(history: dict, first: int, end: int) -> bool:
  return any(not history.get(f"round{r}/removed", 0) for r in range(first, end))


def _fixed_point_round(history: dict, end: int) -> int:
  return next(r for r in range(end) if not history.get(f"round{r}/removed", 0))


def _read_json(path: str):
  with FileSystems.open(path) as f:
    return json.loads(f.read().decode("utf-8"))


def _join(folder: str, name: str) -> str:
  return FileSystems.join(folder, name)


def _delete(folder: str) -> None:
  """Removes a folder of this module's own files, if it is there (locally or remote)."""
  if "://" not in folder:
    shutil.rmtree(folder, ignore_errors=True)
    return
  matched = FileSystems.match([_join(folder, "**")])[0].metadata_list
  if matched:
    FileSystems.delete([m.path for m in matched])


def _copy_datasets(src_root: str, dst_root: str) -> None:
  """Copies the finished datasets from the run's folder in config.data.beam_dir into the stage's
  folder (local or on a bucket)."""
  for name in (tfds_builders.ITEMS, tfds_builders.SEQUENCES):
    src = _join(_join(src_root, name), tfds_builders.VERSION)
    dst = storage.path(os.path.join(dst_root, name, tfds_builders.VERSION))
    dst.mkdir(parents=True, exist_ok=True)
    for m in FileSystems.match([_join(src, "*")])[0].metadata_list:
      with FileSystems.open(m.path) as f, (dst / os.path.basename(m.path)).open("wb") as out:
        while chunk := f.read(1 << 24):
          out.write(chunk)
