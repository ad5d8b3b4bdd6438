"""Code vectors: each code's mean residual against its prefix group, on hand-built items."""

import numpy as np

from semrec_jax.ids.code_vectors import code_vectors


def test_level_zero_is_the_group_mean_minus_the_catalog_mean_and_deeper_levels_are_residuals():
  vectors = np.array([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [0.0, 4.0]])
  codes = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])
  found = code_vectors(vectors, codes, codebook_size=3)
  assert found.shape == (2, 3, 2) and found.dtype == np.float32
  mean = vectors.mean(0)  # [1, 1.5]
  np.testing.assert_allclose(found[0, 0], [2.0, 0.0] - mean)
  np.testing.assert_allclose(found[0, 1], [0.0, 3.0] - mean)
  np.testing.assert_allclose(found[0, 2], 0.0)  # no item holds code 2
  # Level 1, code 0: items 0 and 2, each minus its level-0 group's mean.
  np.testing.assert_allclose(found[1, 0], np.mean([[1 - 2, 0], [0, 2 - 3]], axis=0))
  np.testing.assert_allclose(found[1, 1], np.mean([[3 - 2, 0], [0, 4 - 3]], axis=0))


def test_an_item_is_its_codes_vectors_summed_plus_the_mean_when_groups_are_pure():
  rng = np.random.default_rng(0)
  codes = np.array([[a, b] for a in range(4) for b in range(5)])  # one item per full code
  vectors = rng.normal(size=(len(codes), 3))
  found = code_vectors(vectors, codes, 5)
  rebuilt = vectors.mean(0) + found[0, codes[:, 0]]
  # Each level-0 group mean is rebuilt exactly; the level-1 vectors average the residuals.
  for a in range(4):
    np.testing.assert_allclose(rebuilt[codes[:, 0] == a][0], vectors[codes[:, 0] == a].mean(0),
                               atol=1e-6)
