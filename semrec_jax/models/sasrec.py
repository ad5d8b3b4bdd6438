"""SASRec (Kang & McAuley, 2018) in Flax NNX: the sequential baseline the LM must beat.

A user's last `max_len` items, left-padded, go through learned positions and pre-norm causal
self-attention blocks; the hidden state at each position predicts the next item.

- `ItemSASRec`: one embedding row per item (plus its own padding row), tied to the output, so an
  item's score is the dot product of the hidden state with its row.
- `CodeSASRec`: an item enters as the sum of its semantic-ID code embeddings (each level has its own
  padding code, so padding never shares a row with a code). The next item's codes are predicted
  level by level: level l is a softmax over the codebook from the hidden state plus embeddings of
  the codes chosen at the levels before it. An item's score is the sum of its code log-probs, which
  `item_scores` computes for the whole catalog with matrix products (no loop over items). The
  user's state and the codes chosen so far only add up in a level's logits, so what a user wants
  at level 2 cannot depend on which level-1 code it follows.
- `ComposedSASRec`: an item's vector is a function of its codes alone (the sum of its code
  embeddings plus an MLP of their concatenation, so the levels interact), tied to the output like
  `ItemSASRec`: a full softmax over the catalog's composed vectors. No parameter belongs to one
  item, as in `CodeSASRec`.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from semrec_jax import parallel
from semrec_jax.parallel import param_init

_MASKED = -1e9  # finite: a fully padded query row attends uniformly instead of producing NaN


@dataclasses.dataclass(frozen=True)
class SASRecConfig:
  num_items: int
  max_len: int = 50
  dim: int = 64
  heads: int = 2
  layers: int = 2
  dropout: float = 0.2
  mlp_ratio: int = 4
  levels: int = 0  # CodeSASRec: code levels per item
  codebook_size: int = 256  # CodeSASRec: codes per level


class ItemCodes(nnx.Variable):
  """The catalog's semantic-ID codes [items + 1, levels] (last row: padding); not trained."""


class Block(nnx.Module):
  """Pre-norm causal self-attention and feed-forward, each with dropout and a residual."""

  def __init__(self, c: SASRecConfig, rngs: nnx.Rngs):
    init = nnx.initializers.xavier_uniform()
    d, h = c.dim, c.dim // c.heads
    self.heads = c.heads
    self.norm1 = nnx.LayerNorm(d, rngs=rngs)
    self.norm2 = nnx.LayerNorm(d, rngs=rngs)
    self.qkv = nnx.Param(param_init(init, "embed", None, "heads", "kv")(rngs.params(),
                                                                      (d, 3, c.heads, h)))
    self.out = nnx.Param(param_init(init, "heads", "kv", "embed")(rngs.params(), (c.heads, h, d)))
    self.up = nnx.Param(param_init(init, "embed", "mlp")(rngs.params(), (d, c.mlp_ratio * d)))
    self.down = nnx.Param(param_init(init, "mlp", "embed")(rngs.params(), (c.mlp_ratio * d, d)))
    self.dropout = nnx.Dropout(c.dropout)

  def __call__(self, x, mask, rngs: nnx.Rngs | None):
    q, k, v = jnp.unstack(jnp.einsum("btd,dsnh->sbtnh", self.norm1(x), self.qkv[...]))
    attended = jax.nn.dot_product_attention(q, k, v, bias=mask[:, None])
    x = x + self.dropout(jnp.einsum("btnh,nhd->btd", attended, self.out[...]),
                         deterministic=rngs is None, rngs=rngs)
    hidden = jax.nn.gelu(self.norm2(x) @ self.up[...])
    return x + self.dropout(hidden @ self.down[...], deterministic=rngs is None, rngs=rngs)


class Encoder(nnx.Module):
  """Positions + blocks + final norm over item embeddings [B, T, D] (left-padded histories)."""

  def __init__(self, c: SASRecConfig, rngs: nnx.Rngs):
    self.positions = nnx.Param(param_init(nnx.initializers.normal(0.02), None, "embed")(
        rngs.params(), (c.max_len, c.dim)))
    self.blocks = nnx.List([Block(c, rngs) for _ in range(c.layers)])
    self.norm = nnx.LayerNorm(c.dim, rngs=rngs)
    self.dropout = nnx.Dropout(c.dropout)
    self.scale = c.dim ** 0.5

  def __call__(self, x, valid, rngs: nnx.Rngs | None):
    t = x.shape[1]
    x = x * self.scale + self.positions[...][-t:]
    x = self.dropout(x * valid[..., None], deterministic=rngs is None, rngs=rngs)
    causal = jnp.tril(jnp.ones((t, t), bool))
    mask = jnp.where(causal[None] & valid[:, None, :], 0.0, _MASKED)
    for block in self.blocks:
      x = block(x, mask, rngs) * valid[..., None]
    return self.norm(x)


class ItemSASRec(nnx.Module):
  """Item-ID SASRec; inputs are item indices with `num_items` as padding."""

  def __init__(self, c: SASRecConfig, rngs: nnx.Rngs):
    self.config = c
    # Row num_items is padding; rows are rounded up to a multiple of 128 so the table splits
    # over any mesh (the extra rows are never scored).
    rows = -(-(c.num_items + 1) // 128) * 128
    self.embedding = nnx.Param(param_init(nnx.initializers.normal(0.02), "vocab", "embed")(
        rngs.params(), (rows, c.dim)))
    self.encoder = Encoder(c, rngs)

  def __call__(self, items, rngs: nnx.Rngs | None = None):
    """Hidden states [B, T, D] for item indices [B, T]; dropout only when given `rngs`."""
    valid = items != self.config.num_items
    x = jnp.take(self.embedding[...], items, axis=0)
    return self.encoder(parallel.constrain(x, "batch", None, None), valid, rngs)

  def item_scores(self, hidden, items=None):
    """Scores [..., N] of every catalog item, [..., M] of items [M] shared by all rows, or of
    items [..., M] per row (tied output)."""
    table = self.embedding[...][:self.config.num_items]
    if items is None:
      return hidden @ table.T
    if items.ndim == 1:
      return hidden @ jnp.take(table, items, axis=0).T
    return jnp.einsum("...d,...md->...m", hidden, jnp.take(table, items, axis=0))


def _padded_codes(c: SASRecConfig, codes: np.ndarray) -> ItemCodes:
  """The catalog's codes with a padding row of each level's own padding code (codebook_size)."""
  if codes.shape != (c.num_items, c.levels) or codes.min() < 0 or codes.max() >= c.codebook_size:
    raise ValueError(f"codes must be [{c.num_items}, {c.levels}] in [0, {c.codebook_size}), "
                     f"got {codes.shape} in [{codes.min()}, {codes.max()}]")
  padded = np.concatenate([codes, np.full((1, c.levels), c.codebook_size)]).astype(np.int32)
  return ItemCodes(jnp.asarray(padded))


def _code_embedding(c: SASRecConfig, rngs: nnx.Rngs) -> nnx.Param:
  """Per-level code rows [levels, codebook_size + 1, dim]; row codebook_size pads its level."""
  return nnx.Param(param_init(nnx.initializers.normal(0.02), None, "codebook", "embed")(
      rngs.params(), (c.levels, c.codebook_size + 1, c.dim)))


def _sum_of_codes(embedding: jax.Array, codes: jax.Array) -> jax.Array:
  """[..., D]: the sum over levels of each item's code rows, for codes [..., L]."""
  rows = jnp.take_along_axis(embedding.reshape((1,) * (codes.ndim - 1) + embedding.shape),
                             codes[..., None, None], axis=codes.ndim)
  return rows[..., 0, :].sum(axis=-2)


class CodeSASRec(nnx.Module):
  """Semantic-ID SASRec; inputs are item indices with `num_items` as padding, mapped to codes."""

  def __init__(self, c: SASRecConfig, codes: np.ndarray, rngs: nnx.Rngs):
    self.config = c
    self.codes = _padded_codes(c, codes)
    init = nnx.initializers.normal(0.02)
    self.embedding = _code_embedding(c, rngs)
    self.prefix = nnx.Param(param_init(init, None, "codebook", "embed")(
        rngs.params(), (max(1, c.levels - 1), c.codebook_size, c.dim)))
    self.bias = nnx.Param(jnp.zeros((c.levels, c.codebook_size)))
    self.encoder = Encoder(c, rngs)

  def __call__(self, items, rngs: nnx.Rngs | None = None):
    c = self.config
    valid = items != c.num_items
    x = _sum_of_codes(self.embedding[...], jnp.take(self.codes[...], items, axis=0))
    return self.encoder(parallel.constrain(x, "batch", None, None), valid, rngs)

  def _queries(self, hidden, codes):
    """Per-level queries [..., L, D]: hidden + prefix embeddings of the codes before the level."""
    c = self.config
    steps = [jnp.zeros(codes.shape[:-1] + hidden.shape[-1:], hidden.dtype)]
    for level in range(c.levels - 1):
      steps.append(steps[-1] + jnp.take(self.prefix[...][level], codes[..., level], axis=0))
    return hidden[..., None, :] + jnp.stack(steps, axis=-2)

  def code_logits(self, hidden, codes):
    """Teacher-forced logits [..., L, K] of each level given the true codes [..., L] before it."""
    table = self.embedding[...][:, :self.config.codebook_size]  # [L, K, D]
    return jnp.einsum("...ld,lkd->...lk", self._queries(hidden, codes), table) + self.bias[...]

  def item_scores(self, hidden, items=None):
    """Sum of code log-probs of every catalog item [B, N] (or of given items [B, M]).

    Level l's logits for item i are A_l[b] + C_l[i] with A = hidden @ table_l (per user) and
    C = prefix_l(i) @ table_l (per item), so the log-normaliser logsumexp_k(A[b, k] + C[i, k]) is
    a shifted matrix product exp(A - max A) @ exp(C - max C).T instead of a [B, N, K] tensor.
    """
    c = self.config
    if items is not None:
      codes = jnp.take(self.codes[...], items, axis=0)
      logp = jax.nn.log_softmax(self.code_logits(hidden[..., None, :], codes), axis=-1)
      return jnp.take_along_axis(logp, codes[..., None], axis=-1)[..., 0].sum(-1)
    codes = self.codes[...][:c.num_items]  # [N, L]
    table = self.embedding[...][:, :c.codebook_size]
    prefixes = self._queries(jnp.zeros((c.num_items, c.dim), hidden.dtype), codes)  # [N, L, D]
    total = jnp.zeros((hidden.shape[0], c.num_items), jnp.float32)
    for level in range(c.levels):
      a = hidden @ table[level].T + self.bias[...][level]  # [B, K]
      cc = prefixes[:, level] @ table[level].T  # [N, K]
      a_max, c_max = a.max(-1, keepdims=True), cc.max(-1, keepdims=True)
      norm = jnp.log(jnp.exp(a - a_max) @ jnp.exp(cc - c_max).T) + a_max + c_max.T  # [B, N]
      picked = jnp.take(a, codes[:, level], axis=1) + jnp.take_along_axis(
          cc, codes[:, level:level + 1], axis=1).T
      total += picked - norm
    return total


class ComposedSASRec(nnx.Module):
  """Semantic-ID SASRec whose item vectors are composed from the codes, tied to a full softmax."""

  def __init__(self, c: SASRecConfig, codes: np.ndarray, rngs: nnx.Rngs):
    self.config = c
    self.codes = _padded_codes(c, codes)
    self.embedding = _code_embedding(c, rngs)
    init = nnx.initializers.xavier_uniform()
    width = c.mlp_ratio * c.dim
    self.up = nnx.Param(param_init(init, None, "embed", "mlp")(rngs.params(),
                                                               (c.levels, c.dim, width)))
    self.down = nnx.Param(param_init(nnx.initializers.zeros_init(), "mlp", "embed")(
        rngs.params(), (width, c.dim)))  # zero: training starts from the plain sum
    self.encoder = Encoder(c, rngs)

  def item_vectors(self, codes):
    """Vectors [..., D] of items with codes [..., L]: sum of code rows + MLP(concatenated rows)."""
    table = self.embedding[...]
    rows = jnp.stack([jnp.take(table[level], codes[..., level], axis=0)
                      for level in range(self.config.levels)], axis=-2)  # [..., L, D]
    mixed = jax.nn.gelu(jnp.einsum("...ld,ldh->...h", rows, self.up[...]))
    return rows.sum(axis=-2) + mixed @ self.down[...]

  def __call__(self, items, rngs: nnx.Rngs | None = None):
    valid = items != self.config.num_items
    x = self.item_vectors(jnp.take(self.codes[...], items, axis=0))
    return self.encoder(parallel.constrain(x, "batch", None, None), valid, rngs)

  def item_scores(self, hidden, items=None):
    """As `ItemSASRec.item_scores`, with the composed vectors as the item table."""
    codes = self.codes[...][:self.config.num_items]
    if items is None:
      return hidden @ self.item_vectors(codes).T
    vectors = self.item_vectors(jnp.take(codes, items, axis=0))
    if items.ndim == 1:
      return hidden @ vectors.T
    return jnp.einsum("...d,...md->...m", hidden, vectors)
