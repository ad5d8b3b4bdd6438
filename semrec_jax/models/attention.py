"""Self-attention kernels behind one call, picked by DecoderConfig.attention (config.lm.attention).

  xla     jax.nn.dot_product_attention with a dense [B, 1, T, T] mask built from token indices and
          segment ids: runs anywhere. (The KV-cache path of decoding, in decoder.py, always uses
          XLA, with a mask from the cache slots' positions.)
  cudnn   cuDNN flash attention (GPU, bfloat16/float16): causal and the sliding window are the
          kernel's own index masks; segment ids enter as a [B, 1, T, S] mask, which cuDNN adds
          as a bias, since jax.nn.dot_product_attention (jax 0.10) takes no segment ids.
  splash  Pallas splash attention (TPU): causal or local mask, SegmentIds, grouped-query heads,
          shard_map over the batch (and head) mesh axes; on a CPU it runs in Pallas' interpreter
          (slow: for tests).
  auto    cudnn on GPU (xla for float32 activations or shapes cuDNN rejects), splash on TPU,
          xla elsewhere. The platform is the step's mesh's (AOT compiles for a TPU from a CPU
          host), else the default backend.

Every kernel masks by token index within a segment (causal, and the sliding window counted in
tokens); positions enter through RoPE only, applied before the kernel, so all three give the same
numbers for any positions, including rows whose positions jump. Padding (segment 0) attends to
padding in the fused kernels and to nothing in xla; its outputs are never read.
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.pallas.ops.tpu import splash_attention as splash
from jax.sharding import PartitionSpec as P

from semrec_jax import parallel

IMPLEMENTATIONS = ("auto", "xla", "cudnn", "splash")
_LANES = 128  # splash's kv blocks are multiples of the TPU lane width; T is padded to it


def dense_mask(q_pos, q_seg, k_pos, k_seg, window: int | None) -> jax.Array:
  """[B, T, S] True where query t may attend key s: same non-padding segment, key not later,
  and within `window` positions on sliding-window layers. Keys at position -1 are empty slots."""
  mask = ((q_seg[:, :, None] == k_seg[:, None, :]) & (q_seg[:, :, None] != 0)
          & (k_pos[:, None, :] <= q_pos[:, :, None]) & (k_pos[:, None, :] >= 0))
  if window is not None:
    mask &= q_pos[:, :, None] - k_pos[:, None, :] < window
  return mask


def platform() -> str:
  """The platform being compiled for: the current abstract mesh's devices', else the default."""
  device = getattr(jax.sharding.get_abstract_mesh(), "abstract_device", None)
  return device.platform if device is not None else jax.default_backend()


def resolve(name: str, dtype) -> str:
  """The kernel `name` stands for here ('auto' picks by platform and activation dtype)."""
  if name not in IMPLEMENTATIONS:
    raise ValueError(f"config.lm.attention={name!r}: expected one of {IMPLEMENTATIONS}")
  if name != "auto":
    return name
  where = platform()
  if where == "tpu":
    return "splash"
  if where == "gpu" and jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16):
    return "cudnn"
  return "xla"


def attend(q, k, v, segment_ids, *, scale: float, window: int | None,
           implementation: str = "auto") -> jax.Array:
  """Causal self-attention of q [B, T, N, H] over k, v [B, T, K, H] (K divides N): [B, T, N, H]."""
  kind, where = resolve(implementation, q.dtype), platform()
  if (kind == "cudnn" and where != "gpu") or (kind == "splash" and where not in ("tpu", "cpu")):
    raise ValueError(f"config.lm.attention={kind!r} cannot run on {where}; use auto or xla")
  if kind == "cudnn":
    if jnp.dtype(q.dtype) not in (jnp.bfloat16, jnp.float16):
      raise ValueError(f"config.lm.attention='cudnn' needs bfloat16 or float16 activations, got "
                       f"{jnp.dtype(q.dtype)}; use xla or auto")
    try:
      return cudnn(q, k, v, segment_ids, scale=scale, window=window)
    except NotImplementedError:  # head size or GPU cuDNN rejects at trace time: auto uses XLA
      if implementation == "cudnn":
        raise
      kind = "xla"
  if kind == "splash":
    return splash_attention(q, k, v, segment_ids, scale=scale, window=window,
                            interpret=where != "tpu")
  index = jnp.broadcast_to(jnp.arange(q.shape[1]), segment_ids.shape)
  mask = dense_mask(index, segment_ids, index, segment_ids, window)
  return jax.nn.dot_product_attention(q, k, v, mask=mask[:, None], scale=scale)


def cudnn(q, k, v, segment_ids, *, scale: float, window: int | None) -> jax.Array:
  """cuDNN flash attention: causal (and windowed) by index; segments as a mask (becomes a bias)."""
  same = segment_ids[:, :, None] == segment_ids[:, None, :]
  return jax.nn.dot_product_attention(
      q, k, v, mask=same[:, None], scale=scale, is_causal=True, implementation="cudnn",
      local_window_size=None if window is None else (window - 1, 0))


def _block(length: int) -> int:
  return next(b for b in (512, 256, 128) if length % b == 0)


def _splash_kernel(heads: int, length: int, window: int | None, interpret: bool):
  """A splash kernel for one row: [heads, length, H] queries; causal, or local when windowed.
  Built inside each trace (its mask tables become that trace's constants); jax caches the
  numpy mask processing."""
  shape = (length, length)
  mask = (splash.CausalMask(shape) if window is None or window >= length
          else splash.LocalMask(shape, window_size=(window - 1, 0), offset=0))
  b = _block(length)
  blocks = splash.BlockSizes(block_q=b, block_kv=b, block_kv_compute=b, block_q_dkv=b,
                             block_kv_dkv=b, block_kv_dkv_compute=b, block_q_dq=b, block_kv_dq=b)
  return splash.make_splash_mha(splash.MultiHeadMask([mask] * heads), block_sizes=blocks,
                                head_shards=1, q_seq_shards=1, interpret=interpret)


def splash_attention(q, k, v, segment_ids, *, scale: float, window: int | None,
                     interpret: bool = False) -> jax.Array:
  """Splash attention, under shard_map over the mesh's batch (and head) axes when there is one."""
  batch, length, heads, _ = q.shape
  kv_heads = k.shape[2]
  padded = -(-length // _LANES) * _LANES
  pad = [(0, 0), (0, padded - length)]
  segment_ids = jnp.pad(segment_ids, pad)  # padding is segment 0: real tokens never see it
  # [B, N, T, H]; splash does not scale the queries itself.
  q, k, v = (jnp.pad(x, pad + [(0, 0), (0, 0)]).transpose(0, 2, 1, 3)
             for x in ((q * jnp.asarray(scale, q.dtype)).astype(q.dtype), k, v))

  mesh = jax.sharding.get_abstract_mesh()
  batch_axes = tuple(a for a in parallel.BATCH_AXES if a in mesh.axis_names)
  head_axis = "tensor" if "tensor" in mesh.axis_names and mesh.shape["tensor"] > 1 else None
  if head_axis and heads % mesh.shape[head_axis]:
    head_axis = None  # heads that do not split stay whole on every device (correct, redundant)
  if head_axis and kv_heads % mesh.shape[head_axis]:
    # Each device's query heads need their own key heads: give every query head its copy.
    k, v = (jnp.repeat(x, heads // kv_heads, axis=1) for x in (k, v))
  if batch_axes and batch % int(np.prod([mesh.shape[a] for a in batch_axes])):
    batch_axes = ()

  def run(q, k, v, segment_ids):
    kernel = _splash_kernel(q.shape[1], padded, window, interpret)
    ids = splash.SegmentIds(q=segment_ids, kv=segment_ids)
    return jax.vmap(kernel, in_axes=(0, 0, 0, splash.SegmentIds(0, 0)))(q, k, v, ids)

  if not mesh.empty:
    qkv = P(batch_axes or None, head_axis)
    run = jax.shard_map(run, mesh=mesh, in_specs=(qkv, qkv, qkv, P(batch_axes or None)),
                        out_specs=qkv, check_vma=False)
  return run(q, k, v, segment_ids).transpose(0, 2, 1, 3)[:, :length]
