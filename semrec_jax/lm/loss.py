"""Next-token cross-entropy on answer tokens only, for packed or padded rows.

The training loss never builds the [batch, seq, vocab] logits: Gemma 3's 263k-column vocabulary
in float32 is 1 GiB per 1,024 tokens. `tiled_cross_entropy` walks the output table in vocabulary
tiles with an online log-sum-exp (float32), over chunks of answer positions only (each row's
answer positions are moved to its front, and chunks past the longest row's count are skipped);
its backward pass recomputes each tile's logits instead of storing them.
"""

import functools

import jax
import jax.numpy as jnp
import optax
from jax import lax

# Default tiling (config.lm.loss_token_chunk, loss_vocab_tile): 8,192-row tiles keep each tile's
# logits small; chunks of positions are sized by `auto_token_chunk` (token_chunk 0).
TOKEN_CHUNK = 64            # per row, on CPUs
DEVICE_CHUNK_TOKENS = 16384  # per device, on accelerators
VOCAB_TILE = 8192


def auto_token_chunk(rows_per_device: int, length: int, platform: str) -> int:
  """Answer positions per row in one chunk of the tiled loss (config.lm.loss_token_chunk=0).

  Every chunk reads the whole output table forward, and again with a read-modify-write of its
  float32 gradient backward. On an accelerator those reads cost more than the head's products
  unless a chunk holds thousands of positions: ~16k per device, a power of two per row (Gemma 3
  1B at 8 x 1024 on an H200: 38k tokens/s with 64 per row, 49k with 1,024). On a CPU a re-read
  is cheap next to the products, and 64 per row lets rows with few answers skip most chunks."""
  if platform == "cpu":
    return min(TOKEN_CHUNK, length)
  per_row = max(TOKEN_CHUNK, DEVICE_CHUNK_TOKENS // max(rows_per_device, 1))
  return min(1 << (per_row.bit_length() - 1), length)


def answer_targets(tokens, mask, segment_ids):
  """(targets, valid), both [B, T]: position t predicts token t+1 when both are in the same
  example and t+1 is an answer token; nothing is predicted across an example boundary, into
  padding, or from the last position."""
  targets = jnp.pad(tokens[:, 1:], ((0, 0), (0, 1)))
  valid = ((mask[:, 1:] > 0) & (segment_ids[:, 1:] == segment_ids[:, :-1])
           & (segment_ids[:, 1:] > 0))
  return targets, jnp.pad(valid, ((0, 0), (0, 1)))


def next_token_loss(logits, tokens, mask, segment_ids):
  """(sum of losses, number of predicted tokens) from full logits [B, T, V]: the reference the
  tiled loss is tested against."""
  targets, valid = answer_targets(tokens, mask, segment_ids)
  # float32 softmax even for bfloat16 activations: the log-sum-exp over a large vocabulary needs it.
  losses = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)
  return jnp.sum(jnp.where(valid, losses, 0.0)), jnp.sum(valid)


def decoder_loss(model, batch: dict, token_chunk: int = TOKEN_CHUNK,
                 vocab_tile: int = VOCAB_TILE):
  """(sum of answer-token losses, their count) of a Decoder on one packed batch, through the
  final hidden states and the tiled loss."""
  hidden, _ = model.hidden(batch["tokens"], batch["positions"], batch["segment_ids"])
  targets, valid = answer_targets(batch["tokens"], batch["mask"], batch["segment_ids"])
  total = tiled_cross_entropy(hidden, model.embedder.output_tables(), targets, valid,
                              token_chunk, vocab_tile)
  return total, jnp.sum(valid)


def tiled_cross_entropy(hidden, tables, targets, valid, token_chunk: int = TOKEN_CHUNK,
                        vocab_tile: int = VOCAB_TILE):
  """Sum over valid positions of -log softmax(hidden @ vocabulary.T)[target].

  hidden [B, T, D]; tables: the output table split in parts ([V_i, D] each, e.g. the pretrained
  rows and the new-token rows), whose concatenation is the vocabulary; targets index it.
  """
  rows, length, _ = hidden.shape
  # Answer positions first in each row (stable: in order), so the chunks after the longest row's
  # count hold nothing and are skipped. Gathers keep the batch axis, and so its sharding.
  order = jnp.argsort(jnp.where(valid, 0, 1), axis=1, stable=True)
  hidden = jnp.take_along_axis(hidden, order[..., None], axis=1)
  targets = jnp.take_along_axis(targets, order, axis=1)
  weights = jnp.take_along_axis(valid, order, axis=1).astype(jnp.float32)
  chunk = min(token_chunk, length)
  padded = -(-length // chunk) * chunk
  if padded != length:
    pad = ((0, 0), (0, padded - length))
    hidden = jnp.pad(hidden, pad + ((0, 0),))
    targets, weights = jnp.pad(targets, pad), jnp.pad(weights, pad)
  active = -(-jnp.max(jnp.sum(valid, axis=1)) // chunk)  # chunks holding any answer position
  split = lambda x: jnp.swapaxes(x.reshape(rows, padded // chunk, chunk, *x.shape[2:]), 0, 1)
  return _chunked_loss(split(hidden), tuple(tables), split(targets), split(weights), active,
                       vocab_tile)


def _tiles(size: int, tile: int):
  """(tile, count, start(i)) covering rows [0, size): the last tile is moved back to end at
  `size` rather than padded (no copy of the table); its columns an earlier tile had are masked."""
  tile = min(tile, size)
  return tile, -(-size // tile), lambda i: jnp.minimum(i * tile, size - tile)


def _tile_logits(h, table, i, tile, start_of):
  """Float32 logits [B, C, tile] of tile i, their vocabulary columns, the mask of the columns
  no earlier tile had, the tile's start and its rows."""
  start = start_of(i)
  rows = lax.dynamic_slice_in_dim(table, start, tile, 0).astype(h.dtype)
  logits = jnp.einsum("bcd,vd->bcv", h, rows, preferred_element_type=jnp.float32)
  columns = start + jnp.arange(tile)
  return logits, columns, columns >= i * tile, start, rows


def _chunk_stats(h, tables, targets, vocab_tile):
  """(log-sum-exp, target logit), each [B, C] float32, for one chunk of positions."""
  top = jnp.full(targets.shape, -jnp.inf, jnp.float32)
  total, picked = jnp.zeros_like(top), jnp.zeros_like(top)
  offset = 0
  for table in tables:
    tile, count, start_of = _tiles(table.shape[0], vocab_tile)

    def body(i, carry, table=table, offset=offset, tile=tile, start_of=start_of):
      top, total, picked = carry
      logits, columns, fresh, _, _ = _tile_logits(h, table, i, tile, start_of)
      logits = jnp.where(fresh, logits, -jnp.inf)
      new_top = jnp.maximum(top, jnp.max(logits, axis=-1))
      total = total * jnp.exp(top - new_top) + jnp.sum(jnp.exp(logits - new_top[..., None]), -1)
      hit = (targets[..., None] == offset + columns) & fresh
      return new_top, total, picked + jnp.sum(jnp.where(hit, logits, 0.0), axis=-1)

    top, total, picked = lax.fori_loop(0, count, body, (top, total, picked))
    offset += table.shape[0]
  return top + jnp.log(total), picked


def _chunk_grads(h, tables, targets, weights, lse, vocab_tile, accumulated):
  """d loss / d h [B, C, D] (float32) of one chunk, and the output-table gradients
  `accumulated` plus this chunk's: (softmax - one-hot) x weight, tile by tile."""
  dh = jnp.zeros(h.shape, jnp.float32)
  out, offset = [], 0
  for table, acc in zip(tables, accumulated):
    tile, count, start_of = _tiles(table.shape[0], vocab_tile)

    def body(i, carry, table=table, offset=offset, tile=tile, start_of=start_of):
      dh, acc = carry
      logits, columns, fresh, start, rows = _tile_logits(h, table, i, tile, start_of)
      probs = jnp.where(fresh, jnp.exp(logits - lse[..., None]), 0.0)
      hit = (targets[..., None] == offset + columns) & fresh
      d = ((probs - hit) * weights[..., None]).astype(h.dtype)
      dh = dh + jnp.einsum("bcv,vd->bcd", d, rows, preferred_element_type=jnp.float32)
      part = jnp.einsum("bcv,bcd->vd", d, h, preferred_element_type=jnp.float32)
      acc = lax.dynamic_update_slice_in_dim(
          acc, lax.dynamic_slice_in_dim(acc, start, tile, 0) + part, start, 0)
      return dh, acc

    dh, acc = lax.fori_loop(0, count, body, (dh, acc))
    out.append(acc)
    offset += table.shape[0]
  return dh, tuple(out)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _chunked_loss(h, tables, targets, weights, active, vocab_tile):
  """h [n, B, C, D], targets and weights [n, B, C]: chunks of positions; chunks >= `active`
  hold no answer position. Returns the weighted sum of the losses."""
  return _forward(h, tables, targets, weights, active, vocab_tile)[0]


def _forward(h, tables, targets, weights, active, vocab_tile):
  def chunk(_, xs):
    j, h_j, targets_j, weights_j = xs
    zeros = jnp.zeros(targets_j.shape, jnp.float32)
    lse, picked = lax.cond(j < active,
                           lambda: _chunk_stats(h_j, tables, targets_j, vocab_tile),
                           lambda: (zeros, zeros))
    return None, (jnp.sum(weights_j * (lse - picked)), lse)

  _, (sums, lse) = lax.scan(chunk, None, (jnp.arange(h.shape[0]), h, targets, weights))
  return jnp.sum(sums), lse


def _forward_rule(h, tables, targets, weights, active, vocab_tile):
  total, lse = _forward(h, tables, targets, weights, active, vocab_tile)
  return total, (h, tables, targets, weights, active, lse)


def _backward_rule(vocab_tile, residuals, g):
  h, tables, targets, weights, active, lse = residuals

  def chunk(accumulated, xs):
    j, h_j, targets_j, weights_j, lse_j = xs
    return tuple(reversed(lax.cond(
        j < active,
        lambda: _chunk_grads(h_j, tables, targets_j, weights_j * g, lse_j, vocab_tile,
                             accumulated),
        lambda: (jnp.zeros(h_j.shape, jnp.float32), accumulated))))

  start = tuple(jnp.zeros(t.shape, jnp.float32) for t in tables)
  grads, dh = lax.scan(chunk, start, (jnp.arange(h.shape[0]), h, targets, weights, lse))
  return (dh.astype(h.dtype), tuple(d.astype(t.dtype) for t, d in zip(tables, grads)),
          None, None, None)


_chunked_loss.defvjp(_forward_rule, _backward_rule)
