"""TFDS builders that write the prepared data as ArrayRecord (no TensorFlow needed).

Two datasets under `WORKDIR/data/`:
  semrec_items      split 'catalog': one example per item, in item-index order.
  semrec_sequences  splits 'train', 'validation', 'test': one example per user each.
Read back with `tfds.data_source`-style random access (see `items_source`, `sequences_source`).
"""

import contextlib
import io
import os
import shutil

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from semrec_jax.data.catalog import FIELDS, Catalog

VERSION = "1.0.0"
SPLITS = ("train", "validation", "test")


class SemrecItems(tfds.core.GeneratorBasedBuilder):
  """The item catalog: index, item id (ASIN), text fields and attributes ('' when unknown)."""

  VERSION = tfds.core.Version(VERSION)

  def __init__(self, *, catalog: Catalog | None = None, **kwargs):
    self._catalog = catalog
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
    for index in range(len(self._catalog)):
      row = self._catalog.row(index)
      yield index, {"index": index, **row}


class SemrecSequences(tfds.core.GeneratorBasedBuilder):
  """Leave-one-out examples: a user's last <= max_history items before a target item."""

  VERSION = tfds.core.Version(VERSION)

  def __init__(self, *, examples: dict[str, list[dict]] | None = None, **kwargs):
    self._examples = examples
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
    for key, example in enumerate(self._examples[split]):
      yield key, example


def write(data_dir: str, catalog: Catalog, examples: dict[str, list[dict]]) -> None:
  """Writes both datasets as ArrayRecord under data_dir."""
  tfds.disable_progress_bar()
  scratch = os.path.join(data_dir, "_downloads")
  for builder in (SemrecItems(catalog=catalog, data_dir=data_dir, file_format="array_record"),
                  SemrecSequences(examples=examples, data_dir=data_dir,
                                  file_format="array_record")):
    printed = io.StringIO()  # TFDS prints "Downloading ... Unknown size": nothing downloads
    with contextlib.redirect_stdout(printed):
      builder.download_and_prepare(download_dir=scratch)
    logging.info("tfds: %s", printed.getvalue().strip())
  shutil.rmtree(scratch, ignore_errors=True)


def text(value) -> str:
  """A Text feature as str: TFDS data sources return bytes; None and '' become ''."""
  return value.decode("utf-8") if isinstance(value, bytes) else str(value or "")


def _builder(data_dir: str, name: str):
  path = os.path.join(data_dir, name, VERSION)
  if not os.path.isdir(path):
    raise FileNotFoundError(f"no prepared dataset at {path}; run the 'prepare' stage first")
  return tfds.builder_from_directory(path)


def items_source(data_dir: str):
  """Random-access source over the catalog; element i is item i (a dict of numpy values)."""
  return _builder(data_dir, "semrec_items").as_data_source(split="catalog")


def sequences_source(data_dir: str, split: str):
  """Random-access source over one split of the sequences ('train', 'validation', 'test')."""
  if split not in SPLITS:
    raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
  return _builder(data_dir, "semrec_sequences").as_data_source(split=split)
