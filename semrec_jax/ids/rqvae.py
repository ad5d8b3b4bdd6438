"""RQ-VAE in Flax NNX: MLP encoder -> L residual codebooks of K codes -> MLP decoder.

Gradient estimators through the quantizer (both leave the forward value equal to the codes):
  'rotation'  the rotation trick (Fifty et al., 2024): the encoder output is rotated and scaled
              onto its quantized vector by a matrix treated as a constant, so the gradient keeps the
              angle between encoder output and code;
  'ste'       the straight-through estimator, z + stop_gradient(z_q - z).
Loss = reconstruction MSE + sum over levels of codebook MSE + beta x commitment MSE.
"""

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from semrec_jax.parallel import param_init


@dataclasses.dataclass(frozen=True)
class RQVAEConfig:
  input_dim: int
  hidden_dims: tuple[int, ...] = (512, 256, 128)
  latent_dim: int = 32
  num_levels: int = 3
  codebook_size: int = 256
  beta: float = 0.25
  estimator: str = "rotation"  # rotation | ste


class CodeUsage(nnx.Variable):
  """Per-level code hit counts since the last dead-code restart (not trained)."""


class MLP(nnx.Module):
  """Linear layers with SiLU between them (none after the last)."""

  def __init__(self, dims: tuple[int, ...], rngs: nnx.Rngs):
    self.layers = nnx.List([
        nnx.Linear(a, b, rngs=rngs,
                   kernel_init=param_init(nnx.initializers.lecun_normal(), "embed", "mlp"),
                   bias_init=param_init(nnx.initializers.zeros_init(), "mlp"))
        for a, b in zip(dims[:-1], dims[1:])])

  def __call__(self, x: jax.Array) -> jax.Array:
    for i, layer in enumerate(self.layers):
      x = layer(x)
      if i < len(self.layers) - 1:
        x = jax.nn.silu(x)
    return x


def nearest_code(residual: jax.Array, codebook: jax.Array) -> jax.Array:
  """Index of the codebook row closest (squared L2) to each residual row."""
  distances = (jnp.sum(residual ** 2, -1, keepdims=True) - 2 * residual @ codebook.T
               + jnp.sum(codebook ** 2, -1)[None, :])
  return jnp.argmin(distances, axis=-1)


def rotation_trick(e: jax.Array, q: jax.Array, eps: float = 1e-8) -> jax.Array:
  """Returns q in the forward pass; the gradient reaches e through a constant rotation + scale."""
  e_norm = jnp.linalg.norm(e, axis=-1, keepdims=True)
  q_norm = jnp.linalg.norm(q, axis=-1, keepdims=True)
  e_hat = e / (e_norm + eps)
  q_hat = q / (q_norm + eps)
  r = e_hat + q_hat
  r = r / (jnp.linalg.norm(r, axis=-1, keepdims=True) + eps)
  r, q_hat, e_hat = map(jax.lax.stop_gradient, (r, q_hat, e_hat))
  scale = jax.lax.stop_gradient(q_norm / (e_norm + eps))
  rotated = (e - 2 * jnp.sum(e * r, -1, keepdims=True) * r
             + 2 * jnp.sum(e * e_hat, -1, keepdims=True) * q_hat)
  return scale * rotated


class RQVAE(nnx.Module):

  def __init__(self, config: RQVAEConfig, rngs: nnx.Rngs):
    self.config = c = config
    self.encoder = MLP((c.input_dim, *c.hidden_dims, c.latent_dim), rngs)
    self.decoder = MLP((c.latent_dim, *reversed(c.hidden_dims), c.input_dim), rngs)
    init = param_init(nnx.initializers.uniform(1.0 / c.codebook_size), None, "codebook",
                      "code_dim")
    self.codebooks = nnx.Param(init(rngs.params(), (c.num_levels, c.codebook_size,
                                                    c.latent_dim)))
    self.usage = CodeUsage(jnp.zeros((c.num_levels, c.codebook_size), jnp.float32))

  def quantize(self, z: jax.Array, codes: jax.Array | None = None):
    """Residual quantization of z; `codes` [B, L] forces the choice (else nearest per level).

    Returns (codes [B, L], quantized [B, D], residuals [L, B, D]: the input at each level).
    """
    residual, picked, quantized, residuals = z, [], jnp.zeros_like(z), []
    for level in range(self.config.num_levels):
      codebook = self.codebooks[level]
      idx = nearest_code(residual, codebook) if codes is None else codes[:, level]
      q = codebook[idx]
      residuals.append(residual)
      picked.append(idx)
      quantized = quantized + q
      residual = residual - jax.lax.stop_gradient(q)  # each codebook learns from its own level
    return jnp.stack(picked, axis=1), quantized, jnp.stack(residuals)

  def __call__(self, x: jax.Array, codes: jax.Array | None = None):
    """Returns (reconstruction, codes, losses dict)."""
    z = self.encoder(x)
    codes, z_q, residuals = self.quantize(z, codes)
    codewords = self.codebooks[jnp.arange(self.config.num_levels)[:, None], codes.T]  # [L, B, D]
    codebook_loss = jnp.mean((jax.lax.stop_gradient(residuals) - codewords) ** 2, axis=(1, 2))
    commitment = jnp.mean((residuals - jax.lax.stop_gradient(codewords)) ** 2, axis=(1, 2))
    if self.config.estimator == "rotation":
      z_st = rotation_trick(z, jax.lax.stop_gradient(z_q))
    elif self.config.estimator == "ste":
      z_st = z + jax.lax.stop_gradient(z_q - z)
    else:
      raise ValueError(f"unknown gradient estimator {self.config.estimator!r}")
    reconstruction = self.decoder(z_st)
    recon = jnp.mean((reconstruction - x) ** 2)
    quant = jnp.sum(codebook_loss + self.config.beta * commitment)
    return reconstruction, codes, {"loss": recon + quant, "recon": recon, "quant": quant,
                                   "codebook": codebook_loss, "commitment": commitment}

  def decode_codes(self, codes: jax.Array) -> jax.Array:
    codewords = self.codebooks[jnp.arange(self.config.num_levels)[:, None], codes.T]
    return self.decoder(codewords.sum(0))
