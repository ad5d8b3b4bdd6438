"""Next-token cross-entropy on answer tokens only, for packed or padded rows.

The training loss never builds the [batch, seq, vocab] logits: Gemma 3's 263k-column vocabulary
in float32 is 1 GiB per 1,024 tokens. `chunked_cross_entropy` moves each row's answer positions to
its front and walks them in chunks (chunks past the longest row's count are skipped); a chunk's
float32 logits over the whole vocabulary exist only while that chunk is scored, computed a tile of
table rows at a time. Differentiated, the forward pass also computes the chunk's gradients from
the logits it already has (the loss is a sum, so the backward pass only scales them): three
products with the output table per position, not the four of a backward pass that recomputes the
logits (`benchmarks/loss_step.py` measures both; docs/benchmarks.md has the numbers). With a
tensor axis, each table part is read as the blocks of rows its devices hold and tiled within
them: the sums over the vocabulary cross the axis, the table never does.

`config.lm.loss_kernel='pallas'` scores with the fused head + cross-entropy kernel of
`lm/fused_loss.py` instead (Triton on GPUs, Pallas' interpreter elsewhere: for tests), each
device's answer positions compacted across its rows.
"""

import functools

import jax
import jax.numpy as jnp
import optax
from jax import lax
from jax.sharding import PartitionSpec as P

from semrec_jax import parallel
from semrec_jax.lm import fused_loss
from semrec_jax.models import attention

# Chunks (config.lm.loss_token_chunk 0: sized by `auto_token_chunk`) bound one chunk's float32
# logits per device: small on CPUs, where a chunk's re-read of the table is cheap next to its
# products and short chunks skip more positions without answers; large on accelerators, where
# every re-read of the table (and read-modify-write of its float32 gradient) costs time.
# TPUs' budget is smaller for their 16-32 GiB of HBM per chip.
CHUNK_LOGITS_BYTES = {"cpu": 2**28, "gpu": 2**32, "tpu": 2**30}
CPU_ROW_CHUNK = 64  # at most, per row on CPUs
VOCAB_TILE = 8192   # table rows per product: bounds what a sharded table gathers at once
KERNELS = ("xla", "pallas")  # config.lm.loss_kernel
_MASKED = -1e30  # logits of rows outside the vocabulary: exp() of them is 0


def auto_token_chunk(rows_per_device: int, length: int, vocab: int, platform: str) -> int:
  """Answer positions per row in one chunk (config.lm.loss_token_chunk=0): as many as keep the
  chunk's float32 logits [rows, chunk, vocab] within the platform's budget, a power of two (rows
  split evenly), capped at the row length and, on CPUs, at 64. Gemma 3 (263k columns) at 8 rows
  per device: 256 positions per row on a GPU, 64 on a TPU, 16 on a CPU."""
  budget = CHUNK_LOGITS_BYTES.get(platform, CHUNK_LOGITS_BYTES["gpu"])
  per_row = max(1, budget // (4 * vocab * max(rows_per_device, 1)))
  if platform == "cpu":
    per_row = min(per_row, CPU_ROW_CHUNK)
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
  chunked loss is tested against."""
  targets, valid = answer_targets(tokens, mask, segment_ids)
  # float32 softmax even for bfloat16 activations: the log-sum-exp over a large vocabulary needs it.
  losses = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)
  return jnp.sum(jnp.where(valid, losses, 0.0)), jnp.sum(valid)


def decoder_loss(model, batch: dict, token_chunk: int = CPU_ROW_CHUNK, kernel: str = "xla"):
  """(sum of answer-token losses, their count) of a Decoder on one packed batch, through the
  final hidden states and the chunked loss (or, kernel='pallas', the fused kernel)."""
  if kernel not in KERNELS:
    raise ValueError(f"config.lm.loss_kernel={kernel!r}: expected one of {', '.join(KERNELS)}")
  hidden, _ = model.hidden(batch["tokens"], batch["positions"], batch["segment_ids"])
  targets, valid = answer_targets(batch["tokens"], batch["mask"], batch["segment_ids"])
  if kernel == "pallas":
    total = fused_cross_entropy(hidden, model.embedder.output_tables(), targets, valid)
  else:  # whole tables (a slice of a sharded one would move it), padding rows masked
    tables, used = zip(*model.embedder.output_parts())
    total = chunked_cross_entropy(hidden, tables, targets, valid, token_chunk, used)
  return total, jnp.sum(valid)


def fused_kernel_refusal(mesh_shape: dict, platform: str) -> str | None:
  """Why the fused kernel cannot run on this mesh and platform (None: it can). It reads the
  output table whole on every device, so axes that shard the table (fsdp splits its width,
  tensor its rows) are refused rather than gathered whole each step; TPUs have no kernel yet."""
  if platform == "tpu":
    return "config.lm.loss_kernel='pallas' has no TPU kernel (Triton only); use xla on TPUs"
  sharded = [a for a in ("fsdp", "tensor") if mesh_shape.get(a, 1) > 1]
  if sharded:
    return (f"config.lm.loss_kernel='pallas' needs the output table whole on each device, and "
            f"mesh axis {' and '.join(sharded)} shards it; use loss_kernel=xla on this mesh")
  return None


def fused_cross_entropy(hidden, tables, targets, valid):
  """chunked_cross_entropy's sum through the fused kernel: per device (shard_map over the batch
  axes), answer positions moved to the front across all its rows, then one kernel call; the
  devices' sums added. On a platform without a GPU the kernel runs in Pallas' interpreter."""
  mesh = jax.sharding.get_abstract_mesh()
  where = attention.platform()
  why = fused_kernel_refusal({} if mesh.empty else dict(mesh.shape), where)
  if why:
    raise ValueError(why)
  axes = () if mesh.empty else tuple(a for a in parallel.BATCH_AXES if a in mesh.axis_names)

  def local(hidden, targets, valid, *tables):
    flat = lambda x: x.reshape(-1, *x.shape[2:])
    order = jnp.argsort(jnp.where(flat(valid), 0, 1), stable=True)
    total = fused_loss.linear_cross_entropy(
        flat(hidden)[order], tables, flat(targets)[order],
        flat(valid)[order].astype(jnp.float32), jnp.sum(valid), interpret=where != "gpu")
    return lax.psum(total, axes) if axes else total

  if not axes:
    return local(hidden, targets, valid, *tables)
  rows = P(axes)
  return jax.shard_map(local, mesh=mesh, in_specs=(rows, rows, rows) + (P(),) * len(tables),
                       out_specs=P(), check_vma=False)(hidden, targets, valid, *tables)


def chunked_cross_entropy(hidden, tables, targets, valid, token_chunk: int = CPU_ROW_CHUNK,
                          used=None):
  """Sum over valid positions of -log softmax(hidden @ vocabulary.T)[target].

  hidden [B, T, D]; tables: the output table split in parts ([V_i, D] each, e.g. the pretrained
  rows and the new-token rows), whose concatenation is the vocabulary; targets index it.
  used: rows of each part in the vocabulary (the rest, e.g. padding rows, never score); default
  all. Under a mesh with a tensor axis each part is read as [S, V_i / S, D], S blocks of rows as
  the tensor axis holds them, and tiled within each block: the table is never gathered whole.
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
  used = tuple(t.shape[0] for t in tables) if used is None else tuple(used)
  blocks = tuple(_row_blocks(t) for t in tables)
  return _chunked_loss(split(hidden), blocks, split(targets), split(weights), active, used)


def _tensor_size() -> int:
  mesh = jax.sharding.get_abstract_mesh()
  return 1 if mesh.empty or "tensor" not in mesh.axis_names else mesh.shape["tensor"]


def _row_blocks(table):
  """[V, D] as [S, V / S, D]: block s holds the rows tensor-axis device s holds (the axis splits
  rows into contiguous blocks, so the reshape moves nothing). S = 1 without a tensor axis, or
  where S does not divide V (that part is then gathered, as any replicated read would be)."""
  shards = _tensor_size()
  if table.shape[0] % shards:
    shards = 1
  blocks = table.reshape(shards, table.shape[0] // shards, table.shape[1])
  return parallel.constrain(blocks, "vocab", None, "embed") if shards > 1 else blocks


def _tiles(size: int, tile: int):
  """(tile, count, start(i)) covering rows [0, size): the last tile is moved back to end at
  `size` rather than padded (no copy of the table); the columns an earlier tile had are masked
  where a tile's results are summed."""
  tile = min(tile, size)
  return tile, -(-size // tile), lambda i: jnp.minimum(i * tile, size - tile)


def _columns(shards: int, rows: int, start, tile: int):
  """Index within the part [S, tile] of each column of the tile at `start` in every block."""
  return jnp.arange(shards)[:, None] * rows + (start + jnp.arange(tile))[None, :]


def _chunk_logits(h, blocks, used: int):
  """Float32 logits [B, C, S, R] of one chunk h [B, C, D] and one table part [S, R, D], a tile of
  each block's rows at a time (a sharded table is read where it lies, never gathered whole);
  rows past `used` at a large negative value."""
  shards, rows, _ = blocks.shape
  tile, count, start_of = _tiles(rows, VOCAB_TILE)

  def body(i, logits):
    start = start_of(i)
    part = jnp.einsum("bcd,svd->bcsv", h, lax.dynamic_slice_in_dim(blocks, start, tile, 1),
                      preferred_element_type=jnp.float32)
    return lax.dynamic_update_slice_in_dim(logits, part, start, 3)

  logits = lax.fori_loop(0, count, body,
                         jnp.zeros((*h.shape[:2], shards, rows), jnp.float32))
  if used < shards * rows:
    logits = jnp.where(_columns(shards, rows, 0, rows) < used, logits, _MASKED)
  return logits


def _chunk_loss(h, tables, targets, weights, used):
  """(weighted loss sum, float32 logits per table part [B, C, S, R], log-sum-exp [B, C], each
  target's index within each part) of one chunk h [B, C, D]; tables in h's dtype."""
  logits = [_chunk_logits(h, table, n) for table, n in zip(tables, used)]
  top = functools.reduce(jnp.maximum, [jnp.max(x, axis=(-2, -1)) for x in logits])
  lse = top + jnp.log(sum(jnp.sum(jnp.exp(x - top[..., None, None]), axis=(-2, -1))
                          for x in logits))
  starts = [sum(used[:i]) for i in range(len(tables))]
  local = [targets - start for start in starts]
  picked = sum(_target_logit(x, i) for x, i in zip(logits, local))
  return jnp.sum(weights * (lse - picked)), logits, lse, local


def _target_logit(logits, index):
  """Logits [B, C, S, R] at part-local indices [B, C] (0 where the index is outside the part): a
  gather on one block; across tensor-axis blocks a masked sum, which stays where they lie."""
  shards, rows = logits.shape[-2:]
  if shards > 1:
    return jnp.sum(jnp.where(_columns(shards, rows, 0, rows) == index[..., None, None], logits,
                             0.0), axis=(-2, -1))
  inside = (index >= 0) & (index < rows)
  found = jnp.take_along_axis(logits[..., 0, :], jnp.clip(index, 0, rows - 1)[..., None], -1)
  return jnp.where(inside, found[..., 0], 0.0)


def _chunk_loss_and_grads(h, tables, targets, weights, accumulated, used):
  """One chunk's loss sum, d sum / d h [B, C, D] (float32), and the output-table gradients
  `accumulated` ([S, R, D] per part) plus this chunk's: (softmax - one-hot) x weight, from the
  logits of the forward pass (kept, not recomputed), a tile of each block's rows at a time."""
  total, logits, lse, local = _chunk_loss(h, tables, targets, weights, used)
  dh, out = jnp.zeros(h.shape, jnp.float32), []
  for x, i, table, acc in zip(logits, local, tables, accumulated):
    shards, rows, _ = table.shape
    tile, count, start_of = _tiles(rows, VOCAB_TILE)

    def body(k, carry, x=x, i=i, table=table, shards=shards, rows=rows, tile=tile):
      dh, acc = carry
      start = start_of(k)
      columns = _columns(shards, rows, start, tile)
      fresh = start + jnp.arange(tile) >= k * tile  # rows no earlier tile had
      probs = jnp.exp(lax.dynamic_slice_in_dim(x, start, tile, 3) - lse[..., None, None])
      d = jnp.where(fresh, (probs - (i[..., None, None] == columns)) * weights[..., None, None],
                    0.0).astype(h.dtype)
      block = lax.dynamic_slice_in_dim(table, start, tile, 1)
      dh = dh + jnp.einsum("bcsv,svd->bcd", d, block, preferred_element_type=jnp.float32)
      part = jnp.einsum("bcsv,bcd->svd", d, h, preferred_element_type=jnp.float32)
      acc = lax.dynamic_update_slice_in_dim(
          acc, lax.dynamic_slice_in_dim(acc, start, tile, 1) + part, start, 1)
      return dh, acc

    dh, acc = lax.fori_loop(0, count, body, (dh, acc))
    out.append(acc)
  return total, dh, tuple(out)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _chunked_loss(h, tables, targets, weights, active, used):
  """h [n, B, C, D], targets and weights [n, B, C]: chunks of positions; tables [S, R, D] each;
  chunks >= `active` hold no answer position and are never visited (a loop of `active` steps,
  no branch per chunk). Returns the weighted sum of the losses."""
  tables = _in_dtype(tables, h.dtype)

  def chunk(j, total):
    h_j, targets_j, weights_j = (lax.dynamic_index_in_dim(x, j, keepdims=False)
                                 for x in (h, targets, weights))
    return total + _chunk_loss(h_j, tables, targets_j, weights_j, used)[0]

  return lax.fori_loop(0, active, chunk, jnp.zeros((), jnp.float32))


def _in_dtype(tables, dtype):
  """The tables in the activations' dtype, cast once for all chunks (bfloat16 products)."""
  return tuple(table.astype(dtype) for table in tables)


def _forward_rule(h, tables, targets, weights, active, used):
  cast = _in_dtype(tables, h.dtype)

  def chunk(j, carry):
    total, dh, accumulated = carry
    h_j, targets_j, weights_j = (lax.dynamic_index_in_dim(x, j, keepdims=False)
                                 for x in (h, targets, weights))
    part, dh_j, accumulated = _chunk_loss_and_grads(h_j, cast, targets_j, weights_j,
                                                    accumulated, used)
    dh = lax.dynamic_update_index_in_dim(dh, dh_j.astype(h.dtype), j, 0)
    return total + part, dh, accumulated

  start = (jnp.zeros((), jnp.float32), jnp.zeros(h.shape, h.dtype),
           tuple(jnp.zeros(t.shape, jnp.float32) for t in tables))
  total, dh, grads = lax.fori_loop(0, active, chunk, start)
  return total, (dh, tuple(g.astype(t.dtype) for g, t in zip(grads, tables)))


def _backward_rule(used, residuals, g):
  """The loss is a sum, so its gradients scale with the incoming cotangent."""
  del used
  dh, grads = residuals
  scale = lambda x: g.astype(x.dtype) * x
  return scale(dh), tuple(scale(x) for x in grads), None, None, None


_chunked_loss.defvjp(_forward_rule, _backward_rule)
