"""TFDS builders that write the prepared data as ArrayRecord (no TensorFlow needed).

Two datasets under `WORKDIR/data/`:
  semrec_items      split 'catalog': one example per item, in item-index order.
  semrec_sequences  splits 'train', 'validation', 'test': one example per user each.
Read back with `tfds.data_source`-style random access (see `items_source`, `sequences_source`).
"""

import contextlib
import io
import json
import os
import shutil
import tempfile

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from etils import epath
from tensorflow_datasets.core import writer as tfds_writer

from semrec_jax import storage
from semrec_jax.data.catalog import FIELDS, Catalog

VERSION = "1.0.0"
SPLITS = ("train", "validation", "test")
ITEMS, SEQUENCES = "semrec_items", "semrec_sequences"


class _ShardWriter(tfds_writer.ExampleWriter):
  """ArrayRecord's writer opens POSIX files only (array_record has a bucket reader, no writer):
  a shard bound for a bucket is written to a local temporary file and copied up. With Beam this
  runs on the worker that writes the shard, so a Dataflow job can write into a gs:// beam_dir."""

  def write(self, path, examples):
    if not storage.is_remote(path):
      return super().write(path, examples)
    with tempfile.TemporaryDirectory(prefix="semrec_shard_") as local:
      local_path = os.path.join(local, epath.Path(path).name)
      positions = super().write(local_path, examples)
      epath.Path(local_path).copy(storage.path(path), overwrite=True)
    return positions


class _Builder(tfds.core.GeneratorBasedBuilder):
  """Shared by both datasets: shards written through `_ShardWriter`."""

  def _example_writer(self):
    return _ShardWriter(file_format=self.info.file_format)


class SemrecItems(_Builder):
  """The item catalog: index, item id (ASIN), text fields and attributes ('' when unknown)."""

  VERSION = tfds.core.Version(VERSION)

  def __init__(self, *, catalog: Catalog | None = None, beam_files: str | None = None, **kwargs):
    """`catalog` in memory, or `beam_files`: JSON lines [index, item_id, row] read with Beam."""
    self._catalog = catalog
    self._beam_files = beam_files
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    features = {"index": np.int64, "item_id": tfds.features.Text()}
    features.update({name: tfds.features.Text() for name in FIELDS})
    return tfds.core.DatasetInfo(
        builder=self, description=self.__doc__, disable_shuffling=True,
        features=tfds.features.FeaturesDict(features))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"catalog": self._generate_examples()}

  def _generate_examples(self):
    if self._beam_files:
      return _read_json_lines(self._beam_files, _item_example)
    return self._generate_from_memory()

  def _generate_from_memory(self):
    for index in range(len(self._catalog)):
      row = self._catalog.row(index)
      yield index, {"index": index, **row}


class SemrecSequences(_Builder):
  """Leave-one-out examples: a user's last <= max_history items before a target item."""

  VERSION = tfds.core.Version(VERSION)

  def __init__(self, *, examples: dict[str, list[dict]] | None = None,
               beam_files: dict[str, str] | None = None, **kwargs):
    """`examples` per split in memory, or `beam_files`: per split, JSON lines read with Beam."""
    self._examples = examples
    self._beam_files = beam_files
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self, description=self.__doc__, disable_shuffling=True,
        features=tfds.features.FeaturesDict({
            "user_index": np.int64,
            "user_id": tfds.features.Text(),
            "history": tfds.features.Tensor(shape=(None,), dtype=np.int32),
            "target": np.int64,
            "timestamp": np.int64,
        }))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generate_examples(split) for split in SPLITS}

  def _generate_examples(self, split: str):
    if self._beam_files:
      return _read_json_lines(self._beam_files[split], _sequence_example)
    return enumerate(self._examples[split])


def write(data_dir: str, catalog: Catalog, examples: dict[str, list[dict]]) -> None:
  """Writes both datasets as ArrayRecord under data_dir (on a bucket: written locally, then
  copied up, as ArrayRecord writes POSIX files; reading from a bucket is native)."""
  with storage.local_folder(data_dir) as local:
    _prepare((SemrecItems(catalog=catalog, data_dir=local, file_format="array_record"),
              SemrecSequences(examples=examples, data_dir=local, file_format="array_record")))


def write_beam(data_dir: str, items_files: str, example_files: dict[str, str],
               beam_options) -> None:
  """The same datasets from JSON-lines files (the Beam prepare path), written by TFDS's Beam
  support with the given `PipelineOptions`: one pipeline per dataset, on any runner."""
  config = tfds.download.DownloadConfig(beam_options=beam_options)
  _prepare((SemrecItems(beam_files=items_files, data_dir=data_dir, file_format="array_record"),
            SemrecSequences(beam_files=example_files, data_dir=data_dir,
                            file_format="array_record")), config)


def _prepare(builders, download_config=None) -> None:
  tfds.disable_progress_bar()
  scratch = tempfile.mkdtemp(prefix="semrec_tfds_")  # nothing downloads; TFDS wants the folder
  for builder in builders:
    printed = io.StringIO()  # TFDS prints "Downloading ... Unknown size": nothing downloads
    with contextlib.redirect_stdout(printed):
      builder.download_and_prepare(download_dir=scratch, download_config=download_config)
    logging.info("tfds: %s", printed.getvalue().strip())
  shutil.rmtree(scratch, ignore_errors=True)


def _read_json_lines(pattern: str, to_example):
  """A Beam PTransform: JSON lines -> (key, example); keys are indices and shuffling is off, so
  TFDS writes element i as in the in-process path."""
  import apache_beam as beam  # pylint: disable=g-import-not-at-top  (only the Beam path has it)
  return (beam.io.ReadFromText(pattern) | "ParseJson" >> beam.Map(json.loads)
          | "ToExample" >> beam.Map(to_example))


def _item_example(entry):
  index, item_id, row = entry
  return index, {"index": index, "item_id": item_id, **row}


def _sequence_example(example):
  example["history"] = np.asarray(example["history"], dtype=np.int32)
  return example["user_index"], example


def text(value) -> str:
  """A Text feature as str: TFDS data sources return bytes; None and '' become ''."""
  return value.decode("utf-8") if isinstance(value, bytes) else str(value or "")


def _builder(data_dir: str, name: str):
  path = os.path.join(data_dir, name, VERSION)
  if not storage.path(path).is_dir():
    raise FileNotFoundError(f"no prepared dataset at {path}; run the 'prepare' stage first")
  return tfds.builder_from_directory(storage.cached_copy(path))


def items_source(data_dir: str):
  """Random-access source over the catalog; element i is item i (a dict of numpy values)."""
  return _builder(data_dir, "semrec_items").as_data_source(split="catalog")


def sequences_source(data_dir: str, split: str):
  """Random-access source over one split of the sequences ('train', 'validation', 'test')."""
  if split not in SPLITS:
    raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
  return _builder(data_dir, "semrec_sequences").as_data_source(split=split)


def read_all(sequences) -> list[dict]:
  """Every record of a split, read once into memory (the builders index users many times)."""
  if hasattr(sequences, "__getitems__"):
    return list(sequences.__getitems__(list(range(len(sequences)))))
  return [sequences[u] for u in range(len(sequences))]
