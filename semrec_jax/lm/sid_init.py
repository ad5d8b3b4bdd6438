"""The LM's semantic-ID token rows start from what the codes mean, not at random.

A model from scratch otherwise starts with every ID token unrelated to every other, and spends its
first steps learning which items are alike, which the codes already say (docs/benchmarks.md, "The
LM on these codes"). A pretrained model's new rows are left to config.lm.new_rows_init unless
config.lm.sid_init is `codes`: rows at its table's norm swamp a pretrained head's logits before
they train.

The row of the token for code k at level l is the code's vector (semrec_jax/ids/code_vectors.py)
through a fixed random map with orthonormal rows or columns into the model's width (a different
map per level, so levels do not share directions), scaled so the level's rows have the table's
mean row norm. Codes no item holds, and the start/end tokens, keep the rows they had. Tied models
start both their input and output rows this way; untied ones start the output rows the same way,
at the output table's norm.
"""

import jax
import jax.numpy as jnp
import numpy as np

from semrec_jax.models.decoder import Decoder


def orthonormal_map(dim_in: int, dim_out: int, seed: int) -> np.ndarray:
  """[dim_in, dim_out] with orthonormal rows (dim_in <= dim_out: lengths and angles kept) or
  orthonormal columns (a random projection)."""
  rng = np.random.default_rng(seed)
  q, _ = np.linalg.qr(rng.standard_normal((max(dim_in, dim_out), min(dim_in, dim_out))))
  return q.T if dim_in <= dim_out else q


def level_rows(vectors: np.ndarray, width: int, norm: float, seed: int) -> np.ndarray:
  """[codes, width] rows for one level's code vectors [codes, dim]; zero vectors stay zero."""
  rows = vectors.astype(np.float64) @ orthonormal_map(vectors.shape[1], width, seed)
  lengths = np.linalg.norm(rows, axis=1)
  used = lengths > 0
  if used.any():
    rows *= norm / lengths[used].mean()
  return rows.astype(np.float32)


def _set_rows(table, positions: np.ndarray, rows: np.ndarray) -> None:
  """table[positions] = rows, keeping the table's sharding."""
  value = table[...]
  table.set_value(jax.jit(lambda t, r: t.at[positions].set(r.astype(t.dtype)),
                          out_shardings=value.sharding)(value, rows))


def init_sid_rows(model: Decoder, token_ids: np.ndarray, code_vectors: np.ndarray,
                  seed: int) -> int:
  """Sets the rows of the ID tokens `token_ids` [levels, codebook_size] (the tokenizer's id of
  each code's token) from `code_vectors` [levels, codebook_size, dim]; returns how many rows."""
  if token_ids.shape != code_vectors.shape[:2]:
    raise ValueError(f"token ids {token_ids.shape} and code vectors {code_vectors.shape[:2]} "
                     "differ in levels or codebook size")
  embedder, c = model.embedder, model.config
  tables = [("embedding", "new_embedding")]
  if not c.tie_embeddings:
    tables.append(("head", "new_head"))
  count = 0
  for base_name, new_name in tables:
    base, new = getattr(embedder, base_name), getattr(embedder, new_name)
    norm = float(jax.jit(lambda t: jnp.linalg.norm(t[:4096], axis=1).mean())(base[...]))
    for level in range(token_ids.shape[0]):
      used = np.abs(code_vectors[level]).sum(axis=1) > 0
      rows = level_rows(code_vectors[level], c.embed_dim, norm, seed + level)[used]
      ids = token_ids[level][used]
      in_base = ids < c.vocab_size
      if in_base.any():
        _set_rows(base, ids[in_base], rows[in_base])
      if (~in_base).any():
        _set_rows(new, ids[~in_base] - c.vocab_size, rows[~in_base])
      count += int(used.sum()) if base_name == "embedding" else 0
  return count
