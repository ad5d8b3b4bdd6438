"""ID token rows from the codes' vectors: the right rows change, at the table's norm, with the
codes' angles kept, on a tied from-scratch decoder and on new rows of an untied one."""

import numpy as np
import pytest
from flax import nnx

from semrec_jax import parallel
from semrec_jax.lm import sid_init
from semrec_jax.models import configs
from semrec_jax.models.decoder import Decoder


def _decoder(**changes):
  config = configs.get("tiny", vocab_size=64).replace(embed_dim=32, num_layers=1, mlp_dim=64,
                                                      num_heads=2, head_dim=16, **changes)
  return parallel.shard_model(Decoder(config, nnx.Rngs(0)), parallel.make_mesh())


def _cosines(x):
  x = x / np.linalg.norm(x, axis=1, keepdims=True)
  return x @ x.T


def test_orthonormal_map_keeps_angles_when_widening():
  m = sid_init.orthonormal_map(8, 32, 0)
  np.testing.assert_allclose(m @ m.T, np.eye(8), atol=1e-10)
  assert sid_init.orthonormal_map(32, 8, 0).shape == (32, 8)


def test_tied_scratch_decoder_rows_follow_the_codes():
  model = _decoder()
  before = np.asarray(model.embedder.embedding[...])
  sharding = model.embedder.embedding[...].sharding
  rng = np.random.default_rng(0)
  vectors = rng.normal(size=(2, 4, 6)).astype(np.float32)
  vectors[1, 3] = 0  # an unused code keeps its row
  token_ids = np.arange(40, 48).reshape(2, 4)
  assert sid_init.init_sid_rows(model, token_ids, vectors, seed=0) == 7
  after = np.asarray(model.embedder.embedding[...])
  np.testing.assert_array_equal(after[:40], before[:40])
  np.testing.assert_array_equal(after[47], before[47])
  level0 = after[40:44]
  np.testing.assert_allclose(_cosines(level0), _cosines(vectors[0]), atol=1e-5)
  table_norm = np.linalg.norm(before, axis=1).mean()
  assert np.linalg.norm(level0, axis=1).mean() == pytest.approx(table_norm, rel=1e-4)
  assert model.embedder.embedding[...].sharding == sharding


def test_untied_new_rows_start_in_both_tables():
  model = _decoder(tie_embeddings=False, num_new_tokens=8)
  vectors = np.random.default_rng(1).normal(size=(2, 4, 6)).astype(np.float32)
  token_ids = np.arange(64, 72).reshape(2, 4)  # every ID token is a new row
  head_before = np.asarray(model.embedder.head[...])
  sid_init.init_sid_rows(model, token_ids, vectors, seed=0)
  new = np.asarray(model.embedder.new_embedding[...])[:8]
  new_head = np.asarray(model.embedder.new_head[...])[:8]
  np.testing.assert_allclose(_cosines(new[:4]), _cosines(vectors[0]), atol=1e-5)
  np.testing.assert_allclose(_cosines(new_head[4:]), _cosines(vectors[1]), atol=1e-5)
  np.testing.assert_array_equal(np.asarray(model.embedder.head[...]), head_before)
  with pytest.raises(ValueError, match="differ in levels or codebook size"):
    sid_init.init_sid_rows(model, token_ids[:1], vectors, seed=0)
