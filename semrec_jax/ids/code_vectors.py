"""What each code means, as a vector: the LM's semantic-ID token rows start from these.

Code k at level l stands for a direction in the space the codes quantise: the mean, over the items
whose level-l code is k, of the item's vector minus the mean vector of the items sharing its first
l codes (level 0: minus the catalog's mean). This is the residual quantisation of the RQ-VAE, read
back in the input space, so it works for any levels, codebook size or input (text, collaborative
or both) and needs only the items' vectors and codes.
"""

import numpy as np


def code_vectors(vectors: np.ndarray, codes: np.ndarray, codebook_size: int) -> np.ndarray:
  """[levels, codebook_size, dim] float32 from item `vectors` [N, dim] and `codes` [N, levels];
  a code no item holds gets a zero row."""
  vectors = np.asarray(vectors, np.float64)
  out = np.zeros((codes.shape[1], codebook_size, vectors.shape[1]))
  for level in range(codes.shape[1]):
    _, group = np.unique(codes[:, :level], axis=0, return_inverse=True)
    group = group.reshape(-1)
    sizes = np.bincount(group)[:, None]
    prefix_mean = np.zeros((len(sizes), vectors.shape[1]))
    np.add.at(prefix_mean, group, vectors)
    residual = vectors - (prefix_mean / sizes)[group]
    counts = np.bincount(codes[:, level], minlength=codebook_size)[:, None]
    np.add.at(out[level], codes[:, level], residual)
    out[level] /= np.maximum(counts, 1)
  return out.astype(np.float32)
