"""Collaborative item vectors: co-occurrence counts and PPMI against direct computations, the
sparse and dense SVDs agree, only the training split is read, and on the sample an item's nearest
collaborative neighbour shares its platform more often than its nearest text neighbour."""

import json
import os

import numpy as np
import pytest

from semrec_jax import defaults
from semrec_jax.data import tfds_builders
from semrec_jax.embed import collaborative
from semrec_jax.data.errors import DataError
from semrec_jax.ids import stage as ids_stage


def _records(*sequences):
  return [{"history": np.asarray(s[:-1]), "target": s[-1]} for s in sequences]


def test_cooccurrence_counts_pairs_within_the_window_by_one_over_distance():
  counts = collaborative.cooccurrence(_records([0, 1, 2, 3], [2, 1]), 5, window=2).toarray()
  expected = np.zeros((5, 5))
  for seq in ([0, 1, 2, 3], [2, 1]):
    for a in range(len(seq)):
      for b in range(a + 1, min(len(seq), a + 3)):
        expected[seq[a], seq[b]] += 1 / (b - a)
        expected[seq[b], seq[a]] += 1 / (b - a)
  np.testing.assert_allclose(counts, expected)
  assert counts[4].sum() == 0  # item 4 is never bought


def test_ppmi_equals_the_direct_formula():
  rng = np.random.default_rng(0)
  sequences = [list(rng.choice(12, rng.integers(2, 8), replace=False)) for _ in range(60)]
  counts = collaborative.cooccurrence(_records(*sequences), 12, window=3)
  dense = counts.toarray()
  total, rows = dense.sum(), dense.sum(1)
  context = rows ** 0.75 / (rows ** 0.75).sum() * total
  with np.errstate(divide="ignore"):
    direct = np.maximum(np.log(dense * total / np.outer(rows, context)), 0)
  np.testing.assert_allclose(collaborative.ppmi(counts).toarray(), direct, rtol=1e-10)


def test_sparse_and_dense_svds_agree_and_small_catalogs_get_zero_columns():
  rng = np.random.default_rng(1)
  sequences = [list(rng.choice(300, rng.integers(2, 12), replace=False)) for _ in range(2000)]
  records = _records(*sequences)
  dense = collaborative.item_vectors(records, 300, 16, 3, dense_below=10**9)
  sparse = collaborative.item_vectors(records, 300, 16, 3, dense_below=0)
  assert dense.shape == sparse.shape == (300, 16) and dense.dtype == np.float32
  np.testing.assert_allclose(dense, sparse, atol=2e-4)
  tiny = collaborative.item_vectors(_records([0, 1, 2], [1, 2]), 4, 8, 2)
  assert tiny.shape == (4, 8) and not tiny[:, 3:].any() and tiny[:, 0].any()


@pytest.fixture(scope="module")
def sample_vectors(demo_workdir):
  """(collaborative vectors the embed stage wrote for the sample, its text vectors, the
  workdir)."""
  folder = os.path.join(demo_workdir, "embeddings")
  with open(os.path.join(folder, "info.json")) as f:
    info = json.load(f)
  assert info["collaborative"]["dim"] == defaults.base_config().embed.collaborative_dim
  assert info["collaborative"]["items_with_neighbours"] == 1999  # one item never co-occurs
  return (np.load(os.path.join(folder, "collaborative.npy")),
          np.load(os.path.join(folder, "items.npy")), demo_workdir)


def test_the_stage_reads_only_the_training_split(sample_vectors):
  vectors, _, workdir = sample_vectors
  data = os.path.join(workdir, "data")
  train = tfds_builders.read_all(tfds_builders.sequences_source(data, "train"))
  np.testing.assert_array_equal(vectors, collaborative.item_vectors(train, len(vectors), 64, 3))


def test_collaborative_neighbours_share_a_platform_more_often_than_text_neighbours(
    sample_vectors):
  vectors, text, workdir = sample_vectors
  items = tfds_builders.read_all(tfds_builders.items_source(os.path.join(workdir, "data")))
  platform = np.asarray([tfds_builders.text(i["platform"]) for i in items])

  def same_platform(v):
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-9)
    similar = v @ v.T
    np.fill_diagonal(similar, -np.inf)
    known = platform != ""
    nearest = similar.argmax(1)
    return np.mean(platform[known] == platform[nearest[known]])

  collaborative_share, text_share = same_platform(vectors), same_platform(text)
  assert collaborative_share > text_share + 0.05, (collaborative_share, text_share)


def test_ids_quantise_the_weighted_parts_and_say_when_one_is_missing(sample_vectors, tmp_path):
  vectors, text, workdir = sample_vectors
  config = defaults.base_config().ids
  folder = tmp_path / "w"
  (folder / "embeddings").mkdir(parents=True)
  os.symlink(os.path.join(workdir, "data"), folder / "data")
  for name in ("items.npy", "item_ids.txt"):
    os.symlink(os.path.join(workdir, "embeddings", name), folder / "embeddings" / name)
  config.text_weight, config.collaborative_weight = 1.0, 0.0
  only_text, _ = ids_stage.item_vectors(config, str(folder), len(text))
  np.testing.assert_allclose(only_text, text, atol=1e-6)  # the encoder's vectors are unit length
  config.collaborative_weight = 2.0
  with pytest.raises(DataError, match=r"collaborative.npy does not exist: run the embed stage"):
    ids_stage.item_vectors(config, str(folder), len(text))
  np.save(folder / "embeddings" / "collaborative.npy", vectors)
  fused, _ = ids_stage.item_vectors(config, str(folder), len(text))
  assert fused.shape == (len(text), text.shape[1] + vectors.shape[1])
  norms = np.linalg.norm(fused[:, text.shape[1]:], axis=1)
  assert np.allclose(norms[norms > 0], 2.0, atol=1e-5)
  config.text_weight = config.collaborative_weight = 0.0
  with pytest.raises(DataError, match="both 0"):
    ids_stage.item_vectors(config, str(folder), len(text))
