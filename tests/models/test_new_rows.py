"""New-token rows of pretrained untied models: input rows from the input table, output rows from
the output head."""

import os

import numpy as np
import pytest

from semrec_jax.models import configs, params
from tests.conftest import FIXTURES


def _load(name, new_rows):
  folder = os.path.join(FIXTURES, name)
  config = configs.from_hf(os.path.join(folder, "config.json"), num_new_tokens=3)
  return params.load_safetensors(config, folder, new_rows=new_rows).embedder


@pytest.mark.parametrize("name", ["llama_tiny", "qwen3_tiny"])
def test_untied_new_rows_start_from_their_own_table(name):
  e = _load(name, "mean")
  tables = {"embedding": np.asarray(e.embedding[...]), "head": np.asarray(e.head[...])}
  new = {"embedding": np.asarray(e.new_embedding[...]), "head": np.asarray(e.new_head[...])}
  assert new["head"].shape == (128, tables["head"].shape[1])  # 3 tokens padded to 640 - 512
  gap = np.abs(tables["head"].mean(0) - tables["embedding"].mean(0)).max()
  for kind, table in tables.items():
    mean, std = table.mean(0), table.std()
    # Each row is the table's mean plus noise of 0.01 std; over 128 rows the noise averages out.
    assert np.abs(new[kind] - mean).max() < 0.06 * std
    np.testing.assert_allclose(new[kind].mean(0), mean, atol=0.005 * std)
    assert gap > 0.1 * std  # the other table's mean would fail the check above
  assert not np.allclose(new["embedding"], new["head"])


def test_untied_normal_rows_take_each_tables_scale():
  e = _load("qwen3_tiny", "normal")
  assert not np.allclose(e.new_embedding[...], e.new_head[...], atol=1e-3)  # separate draws
  for table, new in ((e.embedding, e.new_embedding), (e.head, e.new_head)):
    np.testing.assert_allclose(np.asarray(new[...]).std(), np.asarray(table[...]).std(), rtol=0.05)
