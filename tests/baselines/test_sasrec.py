"""SASRec models: semantic-ID scoring of the whole catalog equals brute force; padding is inert."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from semrec_jax.models.sasrec import CodeSASRec, ItemSASRec, SASRecConfig

N, L, K = 60, 3, 8


def _code_model(dropout=0.0):
  codes = np.random.default_rng(0).integers(0, K, (N, L))
  config = SASRecConfig(num_items=N, max_len=6, dim=16, heads=2, layers=2, dropout=dropout,
                        levels=L, codebook_size=K)
  model = CodeSASRec(config, codes, nnx.Rngs(0))
  # Larger, distinct values than the initialisation so the check is not of near-uniform softmaxes.
  key = jax.random.key(1)
  model.prefix[...] = jax.random.normal(key, model.prefix[...].shape)
  model.bias[...] = jax.random.normal(jax.random.fold_in(key, 1), model.bias[...].shape)
  return model, codes


def test_code_scores_of_all_items_equal_brute_force_log_prob_sums():
  model, codes = _code_model()
  rows = jnp.asarray(np.random.default_rng(1).integers(0, N + 1, (5, 6)))
  hidden = np.asarray(model(rows)[:, -1], np.float64)
  table = np.asarray(model.embedding[...][:, :K], np.float64)
  prefix, bias = np.asarray(model.prefix[...], np.float64), np.asarray(model.bias[...], np.float64)
  expected = np.zeros((5, N))
  for i in range(N):
    query = hidden.copy()
    for level in range(L):
      logits = query @ table[level].T + bias[level]
      logits -= logits.max(-1, keepdims=True)
      expected[:, i] += logits[:, codes[i, level]] - np.log(np.exp(logits).sum(-1))
      if level < L - 1:
        query = query + prefix[level, codes[i, level]]
  got = np.asarray(model.item_scores(jnp.asarray(hidden, jnp.float32)))
  np.testing.assert_allclose(got, expected, atol=2e-4)
  # Each level is a distribution over its codebook: all K**L code paths sum to probability 1.
  paths = np.stack(np.meshgrid(*[np.arange(K)] * L, indexing="ij"), -1).reshape(-1, L)
  logp = jax.nn.log_softmax(model.code_logits(jnp.asarray(hidden[:1, None], jnp.float32),
                                              jnp.asarray(paths)[None]), -1)[0]
  total = np.exp(np.take_along_axis(np.asarray(logp), paths[..., None], -1)[..., 0].sum(-1)).sum()
  assert total == pytest.approx(1.0, abs=1e-4)


def test_padding_has_its_own_index_and_does_not_change_the_output():
  model, _ = _code_model()
  assert model.embedding[...].shape == (L, K + 1, 16)  # row K of each level: padding only
  assert model.codes[...].shape == (N + 1, L) and (np.asarray(model.codes[...][N]) == K).all()
  item = ItemSASRec(SASRecConfig(num_items=N, max_len=6, dim=16, heads=2), nnx.Rngs(0))
  assert item.embedding[...].shape == (128, 16)  # N + 1 rows, rounded up to split on a mesh
  for m in (model, item):
    short = jnp.asarray([[N, N, N, 3, 7, 9]])
    other_pad = jnp.asarray([[N, N, N, 3, 7, 9], [N] * 6])  # a fully padded row: finite, inert
    out = np.asarray(m(other_pad))
    assert np.isfinite(out).all()
    np.testing.assert_allclose(np.asarray(m(short))[0, -1], out[0, -1], atol=1e-6)


def test_code_model_rejects_codes_out_of_range():
  config = SASRecConfig(num_items=3, levels=2, codebook_size=4)
  with pytest.raises(ValueError, match=r"codes must be \[3, 2\] in \[0, 4\)"):
    CodeSASRec(config, np.array([[0, 1], [2, 4], [3, 3]]), nnx.Rngs(0))
