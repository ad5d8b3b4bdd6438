"""Model FLOPs of a decoder train step and the accelerator peaks that turn them into MFU.

FLOPs per step (as MaxText counts them): 6 * P * B * T for the matmul parameters P (every
projection and the output head; the embedding lookup is free) plus causal attention
6 * L * B * T^2 * N * H (QK^T and AV, forward and backward, half the square for causality; sliding
windows are counted as full). MFU divides by the chip's dense bf16 peak.
"""

import jax

from semrec_jax.models.configs import DecoderConfig

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "TPU v4": 275.0,
                    "TPU v5 lite": 197.0, "TPU v5e": 197.0, "TPU v5p": 459.0, "TPU v6": 918.0}


def train_step_flops(c: DecoderConfig, batch: int, seq: int) -> float:
  d, n, k, h = c.embed_dim, c.num_heads, c.num_kv_heads, c.head_dim
  per_layer = d * n * h * 2 + d * k * h * 2 + 3 * d * c.mlp_dim
  matmul_params = c.num_layers * per_layer + c.padded_vocab_size * d
  attention = 6 * c.num_layers * batch * seq * seq * n * h
  return 6 * matmul_params * batch * seq + attention


def peak_tflops_per_device(device=None) -> float | None:
  """Dense bf16 peak of `device` (default: the first), or None for CPUs and unknown chips."""
  device = device or jax.devices()[0]
  if device.platform == "cpu":
    return None
  kind = device.device_kind.lower()
  return next((v for k, v in PEAK_BF16_TFLOPS.items() if k.lower() in kind), None)


def utilisation(c: DecoderConfig, batch: int, seq: int, step_seconds: float) -> dict:
  """{"tflops_per_device", "mfu"} of a train step that took `step_seconds` (mfu None on CPU)."""
  tflops = train_step_flops(c, batch, seq) / step_seconds / 1e12 / jax.device_count()
  peak = peak_tflops_per_device()
  return {"tflops_per_device": round(tflops, 4), "mfu": round(tflops / peak, 4) if peak else None}
