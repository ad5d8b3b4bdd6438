"""Shared LM test data: the sample's splits, its (briefly trained) semantic IDs, a tokenizer."""

import os
import shutil

import pytest

from semrec_jax.data import tfds_builders
from semrec_jax.lm import phrasing, tasks
from semrec_jax.lm import tokenizer as tokenizer_lib


@pytest.fixture(scope="session")
def data(demo_workdir, demo_ids):
  data_dir = os.path.join(demo_workdir, "data")
  items = tfds_builders.items_source(data_dir)
  return {"items": items, "attrs": phrasing.item_attributes(items),
          "split": {s: tfds_builders.sequences_source(data_dir, s) for s in tfds_builders.SPLITS},
          "sids": tasks.load_sids(os.path.join(demo_ids, "semantic_ids.tsv"))}


@pytest.fixture(scope="session")
def tokenizer(data):
  titles = [data["items"][i]["title"].decode() for i in range(len(data["items"]))]
  reserved = tokenizer_lib.semantic_id_tokens(levels=4, codebook_size=256)
  return tokenizer_lib.Tokenizer(tokenizer_lib.train(titles, 3000, reserved))


@pytest.fixture
def main_workdir(tmp_path, demo_workdir, demo_ids):
  """A workdir where `python -m semrec_jax.main --stages=lm` finds the sample's data and IDs (the
  IDs fixture gets a fingerprint stamp, as the ids stage would leave)."""
  workdir = tmp_path / "main"
  workdir.mkdir()
  os.symlink(os.path.join(demo_workdir, "data"), workdir / "data")
  shutil.copytree(demo_ids, workdir / "ids")
  (workdir / "ids" / "fingerprint.json").write_text('{"sha256": "ids-fixture"}')
  return workdir
