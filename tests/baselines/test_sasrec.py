"""SASRec models: semantic-ID scoring of the whole catalog equals brute force; padding is inert;
the composed model has no parameter of its own per item."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from semrec_jax.models.sasrec import CodeSASRec, ComposedSASRec, ItemSASRec, SASRecConfig

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


def _composed_model():
  codes = np.random.default_rng(0).integers(0, K, (N, L))
  codes[1] = codes[0]  # two items with the same codes
  config = SASRecConfig(num_items=N, max_len=6, dim=16, heads=2, layers=2, dropout=0.0,
                        levels=L, codebook_size=K)
  model = ComposedSASRec(config, codes, nnx.Rngs(0))
  model.down[...] = jax.random.normal(jax.random.key(2), model.down[...].shape) * 0.3  # not 0
  return model, codes


def _gelu(x):
  return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


def test_composed_scores_are_dot_products_with_an_mlp_of_the_codes():
  model, codes = _composed_model()
  table = np.asarray(model.embedding[...], np.float64)
  up, down = np.asarray(model.up[...], np.float64), np.asarray(model.down[...], np.float64)
  vectors = np.zeros((N, 16))
  for i in range(N):
    rows = [table[level, codes[i, level]] for level in range(L)]
    hidden = _gelu(np.concatenate(rows) @ up.reshape(L * 16, -1))
    vectors[i] = np.sum(rows, axis=0) + hidden @ down
  rows = jnp.asarray(np.random.default_rng(1).integers(0, N + 1, (5, 6)))
  hidden = model(rows)[:, -1]
  expected = np.asarray(hidden, np.float64) @ vectors.T
  np.testing.assert_allclose(np.asarray(model.item_scores(hidden)), expected, atol=1e-4)
  some = jnp.asarray([3, 0, 7])
  np.testing.assert_allclose(np.asarray(model.item_scores(hidden, some)), expected[:, [3, 0, 7]],
                             atol=1e-4)
  per_row = jnp.asarray(np.random.default_rng(2).integers(0, N, (5, 4)))
  np.testing.assert_allclose(np.asarray(model.item_scores(hidden, per_row)),
                             np.take_along_axis(expected, np.asarray(per_row), 1), atol=1e-4)
  # Items are their codes: the two items with the same codes score and read the same.
  np.testing.assert_allclose(expected[:, 0], expected[:, 1], atol=1e-9)
  np.testing.assert_allclose(np.asarray(model(jnp.asarray([[N, 0]]))),
                             np.asarray(model(jnp.asarray([[N, 1]]))), atol=1e-6)
  # Starting from a zero output layer, a fresh model's item vectors are the plain code sums.
  fresh = ComposedSASRec(model.config, codes, nnx.Rngs(0))
  np.testing.assert_allclose(np.asarray(fresh.item_vectors(jnp.asarray(codes))),
                             table[np.arange(L), codes].sum(1), atol=1e-6)


def test_padding_has_its_own_index_and_does_not_change_the_output():
  model, _ = _code_model()
  assert model.embedding[...].shape == (L, K + 1, 16)  # row K of each level: padding only
  assert model.codes[...].shape == (N + 1, L) and (np.asarray(model.codes[...][N]) == K).all()
  item = ItemSASRec(SASRecConfig(num_items=N, max_len=6, dim=16, heads=2), nnx.Rngs(0))
  assert item.embedding[...].shape == (128, 16)  # N + 1 rows, rounded up to split on a mesh
  for m in (model, item, _composed_model()[0]):
    short = jnp.asarray([[N, N, N, 3, 7, 9]])
    other_pad = jnp.asarray([[N, N, N, 3, 7, 9], [N] * 6])  # a fully padded row: finite, inert
    out = np.asarray(m(other_pad))
    assert np.isfinite(out).all()
    np.testing.assert_allclose(np.asarray(m(short))[0, -1], out[0, -1], atol=1e-6)


@pytest.mark.parametrize("model", [CodeSASRec, ComposedSASRec])
def test_code_models_reject_codes_out_of_range(model):
  config = SASRecConfig(num_items=3, levels=2, codebook_size=4)
  with pytest.raises(ValueError, match=r"codes must be \[3, 2\] in \[0, 4\)"):
    model(config, np.array([[0, 1], [2, 4], [3, 3]]), nnx.Rngs(0))
