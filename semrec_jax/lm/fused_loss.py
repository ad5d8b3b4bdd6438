"""Output head and cross-entropy in one Pallas kernel: no [positions, vocabulary] array in memory.

`linear_cross_entropy(h, tables, targets, weights)` is the sum over positions of
weight * -log softmax(h @ vocabulary.T)[target], the vocabulary being the concatenation of
`tables` (pretrained rows, new-token rows). The kernels work on tiles: a block of positions
against a tile of table rows, the logits of that pair accumulated over slices of the model width
(a [rows, tile] float32 accumulator, never the whole width at once).

  forward   one program per block of positions walks every vocabulary tile, keeping the running
            max and sum of exponentials (online log-sum-exp) and the target's logit: it writes
            two floats per position.
  backward  one program per (block of positions, vocabulary tile) recomputes that tile's
            logits, turns them into (softmax - one-hot) x weight, and adds its two products
            into the float32 gradients of h and of the table with atomic adds (CCE's scheme).

A table whose row count the tile does not divide has its last tile moved back to end at the last
row (no padded copy of the table); the columns an earlier tile had are masked out of every sum
over the vocabulary. Positions are padded to whole blocks (weight 0); blocks past `count` (the
answer positions, compacted to the front by the caller) return at once.

Written for Pallas' Triton lowering on GPUs (whole-array references indexed per program, atomic
adds), and run by Pallas' interpreter elsewhere, which is how the tests check it on a CPU. Atomic
float adds make the GPU's gradients vary in their last bits from run to run. TPUs keep the
chunked XLA loss (`lm/loss.py`): Mosaic has no atomic adds.
"""

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pl_triton

_NEG = -1e30  # "no logit": finite, so exp(x - max) is 0 and never nan
BLOCK_ROWS = 64     # positions per program
BLOCK_VOCAB = 128   # table rows per tile
MIN_BLOCK = 16      # Triton's smallest matrix-product side
# Triton, not Mosaic GPU (jax's default GPU lowering, which stages whole blocks in shared memory).
_TRITON = pl_triton.CompilerParams(num_warps=4, num_stages=2)


def width_slice(width: int) -> int:
  """The slice of the model width one product step reads: the largest power of two up to 128
  that divides it (Triton loads power-of-two blocks); 0 when there is none of at least 16."""
  return next((s for s in (128, 64, 32, 16) if width % s == 0), 0)


def supported(width: int, table_rows) -> str | None:
  """Why the kernel cannot score this model, or None when it can."""
  if not width_slice(width):
    return f"the model width {width} is not a multiple of {MIN_BLOCK}"
  if min(table_rows) < MIN_BLOCK:
    return f"a vocabulary part has {min(table_rows)} rows, under {MIN_BLOCK}"
  return None


def _tile(rows: int, block: int) -> int:
  """The vocabulary tile for a table part of `rows` rows: `block`, or the largest power of two
  that fits a smaller part (its last tile is moved back, so the tile must not exceed it)."""
  return min(block, 1 << (rows.bit_length() - 1))


def _tile_logits(h_ref, w_ref, positions, start, tile: int, step: int):
  """Float32 logits [block, tile] of positions `positions` (a pl.ds) against table rows
  [start, start + tile), accumulated over `step`-wide slices of the width."""
  width = h_ref.shape[1]

  def add(k, acc):
    cols = pl.ds(pl.multiple_of(k * step, step), step)
    return acc + lax.dot_general(h_ref[positions, cols], w_ref[pl.ds(start, tile), cols],
                                 (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32)

  return lax.fori_loop(0, width // step, add,
                       jnp.zeros((positions.size, tile), jnp.float32))


def _columns(j, start, block: int, tile: int):
  """(column index within the part [block, tile], whether no earlier tile had the column)."""
  cols = start + lax.broadcasted_iota(jnp.int32, (block, tile), 1)
  return cols, cols >= j * tile


def _forward_kernel(*refs, parts: int, tiles, block: int, step: int):
  """lse and target logit of one block of positions over every tile of every table part."""
  count_ref, h_ref, targets_ref = refs[:3]
  tables, (lse_ref, picked_ref) = refs[3:3 + parts], refs[3 + parts:]
  i = pl.program_id(0)
  positions = pl.ds(pl.multiple_of(i * block, block), block)

  @pl.when(i * block < count_ref[0])
  def _():
    targets = targets_ref[positions]
    m = jnp.full((block,), _NEG, jnp.float32)
    s = jnp.zeros((block,), jnp.float32)
    picked = jnp.zeros((block,), jnp.float32)
    offset = 0
    for w_ref, tile in zip(tables, tiles):
      rows = w_ref.shape[0]

      def over(j, carry, w_ref=w_ref, tile=tile, rows=rows, offset=offset):
        m, s, picked = carry
        start = jnp.minimum(j * tile, rows - tile)
        logits = _tile_logits(h_ref, w_ref, positions, start, tile, step)
        cols, fresh = _columns(j, start, block, tile)
        logits = jnp.where(fresh, logits, _NEG)
        top = jnp.maximum(m, jnp.max(logits, axis=1))
        s = s * jnp.exp(m - top) + jnp.sum(jnp.exp(logits - top[:, None]), axis=1)
        hit = fresh & (cols + offset == targets[:, None])
        return top, s, picked + jnp.sum(jnp.where(hit, logits, 0.0), axis=1)

      m, s, picked = lax.fori_loop(0, pl.cdiv(rows, tile), over, (m, s, picked))
      offset += rows
    lse_ref[positions] = m + jnp.log(s)
    picked_ref[positions] = picked


def _backward_kernel(count_ref, h_ref, w_ref, targets_ref, scale_ref, lse_ref, dh_in, dw_in,
                     dh_ref, dw_ref, *, offset: int, tile: int, block: int, step: int):
  """Adds one (block of positions, tile) pair's share to d h and d table (float32)."""
  del dh_in, dw_in  # aliased to dh_ref and dw_ref: the zeros (or earlier parts' sums) added to
  i, j = pl.program_id(0), pl.program_id(1)
  positions = pl.ds(pl.multiple_of(i * block, block), block)

  @pl.when(i * block < count_ref[0])
  def _():
    rows = w_ref.shape[0]
    start = jnp.minimum(j * tile, rows - tile)
    logits = _tile_logits(h_ref, w_ref, positions, start, tile, step)
    cols, fresh = _columns(j, start, block, tile)
    probs = jnp.exp(logits - lse_ref[positions][:, None])
    one_hot = cols + offset == targets_ref[positions][:, None]
    d = jnp.where(fresh, (probs - one_hot) * scale_ref[positions][:, None], 0.0)
    d = d.astype(h_ref.dtype)

    def add(k, carry):
      cols_k = pl.ds(pl.multiple_of(k * step, step), step)
      dh = lax.dot_general(d, w_ref[pl.ds(start, tile), cols_k], (((1,), (0,)), ((), ())),
                           preferred_element_type=jnp.float32)
      pl_triton.atomic_add(dh_ref, (positions, cols_k), dh)
      dw = lax.dot_general(d, h_ref[positions, cols_k], (((0,), (0,)), ((), ())),
                           preferred_element_type=jnp.float32)
      pl_triton.atomic_add(dw_ref, (pl.ds(start, tile), cols_k), dw)
      return carry

    lax.fori_loop(0, h_ref.shape[1] // step, add, 0)


def _settings(h, tables, block_rows, block_vocab):
  width = h.shape[1]
  why = supported(width, [t.shape[0] for t in tables])
  if why:
    raise ValueError(f"the fused loss kernel cannot score this model: {why}")
  block = max(MIN_BLOCK, min(block_rows, 1 << max(h.shape[0] - 1, 1).bit_length()))
  return block, tuple(_tile(t.shape[0], block_vocab) for t in tables), width_slice(width)


def _padded(h, targets, weights, block):
  """Positions padded to whole blocks (weight 0)."""
  extra = -h.shape[0] % block
  pad = lambda x: jnp.pad(x, ((0, extra),) + ((0, 0),) * (x.ndim - 1))
  return pad(h), pad(targets), pad(weights)


def _forward(h, tables, targets, count, block, tiles, step, interpret):
  blocks = h.shape[0] // block
  kernel = functools.partial(_forward_kernel, parts=len(tables), tiles=tiles, block=block,
                             step=step)
  floats = jax.ShapeDtypeStruct((h.shape[0],), jnp.float32)
  return pl.pallas_call(kernel, out_shape=(floats, floats), grid=(blocks,),
                        interpret=interpret, name="linear_cross_entropy_forward",
                        compiler_params=_TRITON)(
                            count, h, targets, *tables)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7))
def _loss(h, tables, targets, weights, count, block_rows, block_vocab, interpret):
  return _loss_forward(h, tables, targets, weights, count, block_rows, block_vocab, interpret)[0]


def _total(lse, picked, weights, count, rows):
  """The weighted sum over the first min(count, rows) positions: blocks past `count` were never
  written (their lse and logit are whatever the buffer held)."""
  kept = jnp.arange(lse.shape[0]) < jnp.minimum(count[0], rows)
  return jnp.sum(jnp.where(kept, weights * (lse - picked), 0.0))


def _loss_forward(h, tables, targets, weights, count, block_rows, block_vocab, interpret):
  block, tiles, step = _settings(h, tables, block_rows, block_vocab)
  rows = h.shape[0]
  hp, tp, wp = _padded(h, targets, weights, block)
  lse, picked = _forward(hp, tables, tp, count, block, tiles, step, interpret)
  total = _total(lse, picked, wp, count, rows)
  return total, (hp, tables, tp, wp, count, lse, rows)


def _loss_backward(block_rows, block_vocab, interpret, residuals, g):
  h, tables, targets, weights, count, lse, rows = residuals
  block, tiles, step = _settings(h, tables, block_rows, block_vocab)
  scale = weights * g.astype(jnp.float32)
  dh, grads, offset = jnp.zeros(h.shape, jnp.float32), [], 0
  for table, tile in zip(tables, tiles):
    kernel = functools.partial(_backward_kernel, offset=offset, tile=tile, block=block,
                               step=step)
    out = (jax.ShapeDtypeStruct(h.shape, jnp.float32),
           jax.ShapeDtypeStruct(table.shape, jnp.float32))
    dh, dw = pl.pallas_call(
        kernel, out_shape=out, grid=(h.shape[0] // block, pl.cdiv(table.shape[0], tile)),
        input_output_aliases={6: 0, 7: 1}, interpret=interpret,
        name="linear_cross_entropy_backward", compiler_params=_TRITON)(
            count, h, table, targets, scale, lse, dh, jnp.zeros(table.shape, jnp.float32))
    grads.append(dw.astype(table.dtype))
    offset += table.shape[0]
  return (dh[:rows].astype(h.dtype), tuple(grads), None, None, None)


_loss.defvjp(_loss_forward, _loss_backward)


def linear_cross_entropy(h, tables, targets, weights, count=None, *,
                         block_rows: int = BLOCK_ROWS, block_vocab: int = BLOCK_VOCAB,
                         interpret: bool = False):
  """Sum over positions of weights * cross-entropy of softmax(h @ concat(tables).T) at targets.

  h [N, D] in the activations' dtype; tables: [V_i, D] parts (cast to h's dtype); targets [N]
  index the concatenation; weights [N] float32. count: how many leading positions hold answers
  (those after it must have weight 0 and are skipped); default all.
  """
  count = jnp.asarray(h.shape[0] if count is None else count, jnp.int32).reshape(1)
  tables = tuple(t.astype(h.dtype) for t in tables)
  return _loss(h, tables, targets.astype(jnp.int32), weights.astype(jnp.float32), count,
               block_rows, block_vocab, interpret)
