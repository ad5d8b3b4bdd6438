"""One decoder-only transformer for the Gemma 3 and Llama/Qwen3 families, in Flax NNX.

Gemma 3: RMSNorm scaled by (1 + w), norms before and after attention and MLP, GeGLU (tanh GELU),
QK-norm, grouped-query attention, local sliding-window layers interleaved with global ones (each with
its own RoPE base), embeddings scaled by sqrt(d), tied input/output embeddings.
Llama/Qwen3: RMSNorm scaled by w, pre-norms only, SwiGLU, QK-norm for Qwen3, optional untied head.

The vocabulary is the pretrained table (`embedder.embedding`) plus a separate table of new rows
(`embedder.new_embedding`, a `NewTokens` parameter) for semantic-ID and control tokens, padded so the
whole vocabulary is a multiple of 128; logits cover both, padding rows are masked out.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from semrec_jax import parallel
from semrec_jax.models import attention
from semrec_jax.models.configs import DecoderConfig
from semrec_jax.parallel import param_init

_MASKED = -2.3819763e38  # a large negative logit that is still finite in float32 and bfloat16


class NewTokens(nnx.Param):
  """Embedding rows of tokens added to a pretrained vocabulary (trainable on their own)."""


class RMSNorm(nnx.Module):

  def __init__(self, dim: int, eps: float, offset: float, axis_name: str = "embed"):
    self.eps, self.offset = eps, offset
    init = nnx.initializers.zeros_init() if offset else nnx.initializers.ones_init()
    self.scale = nnx.Param(param_init(init, axis_name)(jax.random.key(0), (dim,)))

  def __call__(self, x: jax.Array) -> jax.Array:
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return (normed * (self.offset + self.scale[...].astype(jnp.float32))).astype(x.dtype)


def rope(x: jax.Array, positions: jax.Array, base: float, scale: float = 1.0) -> jax.Array:
  """Rotary embedding on [B, T, N, H] with rotate-half pairing (first half with second half)."""
  half = x.shape[-1] // 2
  inv_freq = base ** (-jnp.arange(half, dtype=jnp.float32) * 2 / x.shape[-1])
  angles = (positions.astype(jnp.float32) / scale)[..., None] * inv_freq  # [B, T, half]
  sin, cos = jnp.sin(angles)[:, :, None, :], jnp.cos(angles)[:, :, None, :]
  x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


class Attention(nnx.Module):
  """Grouped-query self-attention with RoPE; the kernel is config.attention's (attention.py)."""

  def __init__(self, c: DecoderConfig, layer: int, rngs: nnx.Rngs):
    self.c, self.is_global = c, c.is_global(layer)
    init = nnx.initializers.normal(0.02)
    d, n, k, h = c.embed_dim, c.num_heads, c.num_kv_heads, c.head_dim
    self.q = nnx.Param(param_init(init, "embed", "heads", "kv")(rngs.params(), (d, n, h)))
    self.k = nnx.Param(param_init(init, "embed", "kv_heads", "kv")(rngs.params(), (d, k, h)))
    self.v = nnx.Param(param_init(init, "embed", "kv_heads", "kv")(rngs.params(), (d, k, h)))
    self.o = nnx.Param(param_init(init, "heads", "kv", "embed")(rngs.params(), (n, h, d)))
    offset = 1.0 if c.is_gemma else 0.0
    if c.qk_norm:
      self.q_norm = RMSNorm(h, c.norm_eps, offset, "kv")
      self.k_norm = RMSNorm(h, c.norm_eps, offset, "kv")

  def __call__(self, x, positions, segment_ids, cache=None):
    """x [B, T, D]; positions, segment_ids [B, T] (segment 0 = padding). Returns (out, cache)."""
    c, dtype = self.c, x.dtype
    q = jnp.einsum("btd,dnh->btnh", x, self.q[...].astype(dtype))
    k = jnp.einsum("btd,dkh->btkh", x, self.k[...].astype(dtype))
    v = jnp.einsum("btd,dkh->btkh", x, self.v[...].astype(dtype))
    if c.qk_norm:
      q, k = self.q_norm(q), self.k_norm(k)
    base = c.rope_base if self.is_global else c.rope_base_local
    scale = c.rope_scale if self.is_global else 1.0
    q, k = rope(q, positions, base, scale), rope(k, positions, base, scale)
    window = None if self.is_global else c.sliding_window
    query_scale = c.query_scale or c.head_dim ** -0.5
    if cache is None:  # training and scoring: the configured kernel (attention.py)
      out = attention.attend(q, k, v, segment_ids, scale=query_scale, window=window,
                             implementation=c.attention)
    else:  # decoding: write this step's keys at their positions, attend over the cache (XLA)
      batch = jnp.arange(x.shape[0])[:, None]
      # Padding (segment 0) writes to a slot past the end, which mode="drop" discards: a padded
      # row must leave the cache exactly as the unpadded row would.
      slot = jnp.where(segment_ids != 0, positions, cache["pos"].shape[1])
      cache = {"k": cache["k"].at[batch, slot].set(k.astype(cache["k"].dtype), mode="drop"),
               "v": cache["v"].at[batch, slot].set(v.astype(cache["v"].dtype), mode="drop"),
               "pos": cache["pos"].at[batch, slot].set(positions, mode="drop")}
      k, v, k_pos = cache["k"].astype(dtype), cache["v"].astype(dtype), cache["pos"]
      mask = attention.dense_mask(positions, segment_ids, k_pos,
                                  (k_pos >= 0).astype(segment_ids.dtype), window)
      out = jax.nn.dot_product_attention(q, k, v, mask=mask[:, None], scale=query_scale)
    return jnp.einsum("btnh,nhd->btd", out, self.o[...].astype(dtype)), cache


class MLP(nnx.Module):

  def __init__(self, c: DecoderConfig, rngs: nnx.Rngs):
    init = nnx.initializers.normal(0.02)
    self.gemma = c.is_gemma
    self.gate = nnx.Param(param_init(init, "embed", "mlp")(rngs.params(), (c.embed_dim,
                                                                          c.mlp_dim)))
    self.up = nnx.Param(param_init(init, "embed", "mlp")(rngs.params(), (c.embed_dim, c.mlp_dim)))
    self.down = nnx.Param(param_init(init, "mlp", "embed")(rngs.params(), (c.mlp_dim,
                                                                          c.embed_dim)))

  def __call__(self, x):
    gate = x @ self.gate[...].astype(x.dtype)
    gate = jax.nn.gelu(gate, approximate=True) if self.gemma else jax.nn.silu(gate)
    return (gate * (x @ self.up[...].astype(x.dtype))) @ self.down[...].astype(x.dtype)


class Block(nnx.Module):

  def __init__(self, c: DecoderConfig, layer: int, rngs: nnx.Rngs):
    offset = 1.0 if c.is_gemma else 0.0
    self.attention = Attention(c, layer, rngs)
    self.mlp = MLP(c, rngs)
    self.pre_attention_norm = RMSNorm(c.embed_dim, c.norm_eps, offset)
    self.pre_mlp_norm = RMSNorm(c.embed_dim, c.norm_eps, offset)
    self.post_norms = c.is_gemma
    if c.is_gemma:
      self.post_attention_norm = RMSNorm(c.embed_dim, c.norm_eps, offset)
      self.post_mlp_norm = RMSNorm(c.embed_dim, c.norm_eps, offset)

  def __call__(self, x, positions, segment_ids, cache=None):
    h, cache = self.attention(self.pre_attention_norm(x), positions, segment_ids, cache)
    x = x + (self.post_attention_norm(h) if self.post_norms else h)
    h = self.mlp(self.pre_mlp_norm(x))
    return x + (self.post_mlp_norm(h) if self.post_norms else h), cache


# What a layer keeps for its backward pass (config.remat): everything, only the results of its
# weight matmuls (the attention and MLP internals are recomputed), or only its input.
REMAT_POLICIES = {"none": None,
                  "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
                  "full": jax.checkpoint_policies.nothing_saveable}


def _run_block(block: Block, x, positions, segment_ids, cache):
  x, cache = block(x, positions, segment_ids, cache)
  return parallel.constrain(x, "batch", None, None), cache


def block_runner(remat: str):
  """A function (block, x, positions, segment_ids, cache) -> (x, cache) that saves for the
  backward pass what the remat policy says. Functional (split, jax.checkpoint, merge) so that a
  model merged outside a jax loop can run inside it, which nnx's own transforms refuse."""
  if remat not in REMAT_POLICIES:
    raise ValueError(f"unknown remat policy {remat!r}; expected one of {', '.join(REMAT_POLICIES)}")
  if remat == "none":
    return _run_block
  policy = REMAT_POLICIES[remat]

  def run(block, *args):
    graphdef, state = nnx.split(block)
    recomputed = jax.checkpoint(lambda state, *args: _run_block(nnx.merge(graphdef, state), *args),
                                policy=policy)
    return recomputed(state, *args)
  return run


class Group(nnx.Module):
  """Consecutive layers, the unit the decoder scans over: config.group_size of them (Gemma 3's
  five sliding-window layers and the global one after them, or one layer when all are alike), or
  one of the layers after the last whole group (`layers` names them: their attention kinds)."""

  def __init__(self, c: DecoderConfig, rngs: nnx.Rngs, layers=None):
    self.remat = c.remat
    layers = range(c.group_size) if layers is None else layers
    self.blocks = nnx.List([Block(c, i, rngs) for i in layers])

  def __call__(self, x, positions, segment_ids, cache=None):
    run, new_cache = block_runner(self.remat), []
    for j, block in enumerate(self.blocks):
      x, block_cache = run(block, x, positions, segment_ids, None if cache is None else cache[j])
      new_cache.append(block_cache)
    return x, (new_cache if cache is not None else None)


def _stack(count: int, make, rngs: nnx.Rngs):
  """`count` modules from make(rngs), their parameters stacked on a leading "layers" axis."""
  if not count:
    return None

  @nnx.split_rngs(splits=count)
  @nnx.vmap(in_axes=0, out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
  def stacked(rngs):
    return make(rngs)
  return stacked(rngs)


def _scan(stack, x, positions, segment_ids, cache, unroll: bool = False):
  """Runs a stack of groups one after the other (one lax.scan step each, the program compiled
  once for all, or unrolled into one program per group: same numbers, and faster when groups
  are few and small); returns x and the stacked cache (None without one)."""
  if stack is None:
    return x, cache
  graphdef, params = nnx.split(stack)

  def step(x, params_and_cache):
    group, group_cache = params_and_cache
    return nnx.merge(graphdef, group)(x, positions, segment_ids, group_cache)
  return jax.lax.scan(step, x, (params, cache), unroll=unroll)


class Embedder(nnx.Module):
  """Base table plus new-token rows; embeds ids and produces logits over both."""

  def __init__(self, c: DecoderConfig, rngs: nnx.Rngs):
    self.c = c
    # std 1/sqrt(d): Gemma's sqrt(d) input scale then gives unit-scale activations, and tied
    # logits start near unit scale (pretrained weights replace this anyway).
    init = param_init(nnx.initializers.normal(c.embed_dim ** -0.5), "vocab", "embed")
    self.embedding = nnx.Param(init(rngs.params(), (c.vocab_size, c.embed_dim)))
    # The new-token table exists only when there are new rows (Orbax cannot save empty arrays).
    self.new_embedding = (NewTokens(init(rngs.params(), (c.num_new_rows, c.embed_dim)))
                          if c.num_new_rows else None)
    if not c.tie_embeddings:
      self.head = nnx.Param(init(rngs.params(), (c.vocab_size, c.embed_dim)))
      self.new_head = (NewTokens(init(rngs.params(), (c.num_new_rows, c.embed_dim)))
                       if c.num_new_rows else None)

  def _tables(self, output: bool = False) -> tuple[jax.Array, jax.Array | None]:
    base, new = ((self.head, self.new_head) if output and not self.c.tie_embeddings
                 else (self.embedding, self.new_embedding))
    return base[...], None if new is None else new[...]

  def output_tables(self) -> tuple[jax.Array, ...]:
    """The output vocabulary as parts whose concatenation it is (pretrained rows, then the new
    tokens without their padding rows): what the fused loss kernel scores."""
    base, new = self._tables(output=True)
    return (base,) if not self.c.num_new_tokens else (base, new[:self.c.num_new_tokens])

  def output_parts(self) -> tuple[tuple[jax.Array, int], ...]:
    """(table, rows of it in the vocabulary) per part of the output vocabulary: the pretrained
    rows, then the new-token table whole, padding rows included (they are not in the
    vocabulary): what the chunked training loss scores, on any mesh, without slicing them."""
    base, new = self._tables(output=True)
    return ((base, base.shape[0]),) + (((new, self.c.num_new_tokens),)
                                       if self.c.num_new_tokens else ())

  def encode(self, tokens: jax.Array, dtype) -> jax.Array:
    base, new = self._tables()
    x = base[jnp.clip(tokens, 0, self.c.vocab_size - 1)]
    if new is not None:
      x = jnp.where((tokens >= self.c.vocab_size)[..., None],
                    new[jnp.clip(tokens - self.c.vocab_size, 0, new.shape[0] - 1)], x)
    x = x.astype(dtype)
    return x * jnp.sqrt(jnp.asarray(self.c.embed_dim, dtype)) if self.c.is_gemma else x

  def output_rows(self, token_ids: jax.Array) -> jax.Array:
    """Output-table rows [..., D] of the given token ids (base or new)."""
    base, new = self._tables(output=True)
    rows = base[jnp.clip(token_ids, 0, self.c.vocab_size - 1)]
    if new is not None:
      rows = jnp.where((token_ids >= self.c.vocab_size)[..., None],
                       new[jnp.clip(token_ids - self.c.vocab_size, 0, new.shape[0] - 1)], rows)
    return rows

  def decode_subset(self, x: jax.Array, token_ids: jax.Array) -> jax.Array:
    """Float32 logits [..., n] of hidden states x [..., D] for only the n tokens `token_ids`
    (e.g. one semantic-ID level's 256 codes instead of the whole vocabulary)."""
    return _logits(x, self.output_rows(token_ids))

  def decode(self, x: jax.Array) -> jax.Array:
    """Float32 logits [..., padded vocabulary]; the padding columns at a large negative value."""
    base, new = self._tables(output=True)
    logits = _logits(x, base)
    if new is not None:
      logits = jnp.concatenate([logits, _logits(x, new)], axis=-1)
    valid = jnp.arange(self.c.padded_vocab_size) < self.c.output_vocab_size
    return jnp.where(valid, logits, jnp.asarray(_MASKED, logits.dtype))


def _logits(x: jax.Array, table: jax.Array) -> jax.Array:
  """x [..., D] times table [n, D] in x's dtype, accumulated and returned in float32: bf16 logits
  between 16 and 32 sit on steps of 0.125, enough to reorder a beam, and platforms round alike only
  if nothing is rounded to bf16 after the product."""
  return jnp.einsum("...d,nd->...n", x, table.astype(x.dtype), preferred_element_type=jnp.float32)


class Decoder(nnx.Module):

  def __init__(self, config: DecoderConfig, rngs: nnx.Rngs, dtype=jnp.float32):
    self.config, self.dtype = config, dtype
    self.embedder = Embedder(config, rngs)
    # Parameters stacked on a leading "layers" axis (nnx.vmap) and run by a scan: the step
    # compiles one group and one tail layer however deep the model is. The tail holds the layers
    # after the last whole group (Gemma 3 1B: 26 = 4 x 6 + 2), all sliding-window layers.
    self.groups = _stack(config.num_groups, lambda r: Group(config, r), rngs)
    self.tail = _stack(config.num_tail,
                       lambda r: Group(config, r, layers=[config.first_tail_layer]), rngs)
    self.final_norm = RMSNorm(config.embed_dim, config.norm_eps, 1.0 if config.is_gemma else 0.0)

  def __call__(self, tokens, positions=None, segment_ids=None, cache=None):
    """tokens [B, T] -> logits [B, T, V] (float32), and the updated cache when one is given.

    positions default to 0..T-1 and segment_ids to all ones (one unpadded sequence per row);
    packed rows give each sequence its own segment id and positions restarting at 0. Padding
    (segment 0) never enters the cache.
    """
    x, new_cache = self.hidden(tokens, positions, segment_ids, cache)
    logits = self.embedder.decode(x)
    logits = parallel.constrain(logits, "batch", None, "vocab")
    return (logits, new_cache) if cache is not None else logits

  def hidden(self, tokens, positions=None, segment_ids=None, cache=None):
    """The final (normed) hidden states [B, T, D] and the updated cache (None without one): what
    the output table turns into logits, for callers that score only a few vocabulary rows."""
    if positions is None:
      positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
    if segment_ids is None:
      segment_ids = jnp.ones_like(tokens)
    x = parallel.constrain(self.embedder.encode(tokens, self.dtype), "batch", None, None)
    # Remat saves memory only under the rolled scan (XLA keeps what it likes of an unrolled one),
    # so a remat policy wins over scan_unroll.
    unroll = self.config.scan_unroll and self.config.remat == "none"
    x, groups_cache = _scan(self.groups, x, positions, segment_ids,
                            None if cache is None else cache["groups"], unroll)
    x, tail_cache = _scan(self.tail, x, positions, segment_ids,
                          None if cache is None else cache["tail"], unroll)
    new_cache = None
    if cache is not None:
      length = next(c["pos"].shape[-1] for c in (cache["groups"] or []) + (cache["tail"] or []))
      past_end = jnp.any((segment_ids != 0) & (positions >= length))
      new_cache = {"groups": groups_cache, "tail": tail_cache,
                   "overflow": cache["overflow"] | past_end}
    return self.final_norm(x), new_cache

  def init_cache(self, batch: int, length: int, dtype=None) -> dict:
    """An empty key/value cache laid out like the layers: {"groups": one per block of a group,
    "tail": one}, arrays with a leading axis over the stack (None for an empty stack), and
    "overflow": a flag set for good once a token is written at a position >= `length`. Such a
    write is lost (padding's is meant to be), so whoever decodes must check the flag: the
    decoders in lm/decoding.py raise on it."""
    c = self.config
    dtype = dtype or self.dtype

    def empty(count):
      shape = (count, batch, length, c.num_kv_heads, c.head_dim)
      return {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype),
              "pos": jnp.full((count, batch, length), -1, jnp.int32)}
    return {"groups": [empty(c.num_groups) for _ in range(c.group_size)] if c.num_groups else None,
            "tail": [empty(c.num_tail)] if c.num_tail else None,
            "overflow": jnp.zeros((), bool)}


def take_cache_rows(cache: dict, rows: jax.Array) -> dict:
  """The cache of batch rows `rows`: each beam's parent in beam search, or every prompt repeated
  (rows = repeat(arange(B), n)). The batch is axis 1, behind the stack axis."""
  layers = {k: cache[k] for k in ("groups", "tail")}
  return {**jax.tree.map(lambda x: x[:, rows], layers), "overflow": cache["overflow"]}


def layer_state(state, config: DecoderConfig, layer: int):
  """Layer `layer`'s part of a Decoder state (parameters or gradients): its slice of the stack
  that holds it (DecoderConfig.layer_slot)."""
  prefix, index = config.layer_slot(layer)
  for part in prefix.split("/"):
    state = state[int(part) if part.isdigit() else part]
  return jax.tree.map(lambda x: x[index], state)
