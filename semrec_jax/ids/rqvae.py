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
  """Per level, an exponential moving average of each code's share of the batch (not trained).

  It starts at 0 and each step adds (1 - decay) x share, so after t steps
  `usage / (1 - decay ** t)` is an unbiased average (as Adam corrects its moments); a code restarted
  by the trainer starts again from 0.
  """


@jax.custom_vjp
def bias_silu(y: jax.Array, bias: jax.Array) -> jax.Array:
  """silu(y + bias[:, None]) for feature-major y [F, B]; its backward recomputes the sigmoid.

  The gradient equals autodiff's. Saving only y (the matmul output, which exists anyway) and
  recomputing the sum and sigmoid in the backward pass's one fused loop, instead of storing the
  sigmoid, cuts the activation's memory traffic (what bounds it on a CPU: ~5% of the MLP step).
  """
  return jax.nn.silu(y + bias[:, None])


def _bias_silu_fwd(y, bias):
  a = y + bias[:, None]
  return a * jax.nn.sigmoid(a), (y, bias)


def _bias_silu_bwd(saved, grad):
  y, bias = jax.lax.optimization_barrier(saved)  # no CSE with the forward: recompute, don't store
  a = y + bias[:, None]
  s = jax.nn.sigmoid(a)
  dy = grad * (s * (1 + a * (1 - s)))
  return dy, dy.sum(axis=1)


bias_silu.defvjp(_bias_silu_fwd, _bias_silu_bwd)


class MLP(nnx.Module):
  """Linear layers with SiLU between them (none after the last).

  Computed feature-major (activations [features, batch]) with each kernel transposed once
  ([out, in], materialized): every matmul of the forward and backward pass is then in a layout
  XLA:CPU's fast GEMM takes (the weight gradient x^T g of the batch-major layout, which contracts
  the batch as the major dimension of both operands, runs ~1.5x slower there). Same parameters
  (kernel [in, out], bias [out]) and the same function as `nnx.Linear` layers on [batch, features].
  """

  def __init__(self, dims: tuple[int, ...], rngs: nnx.Rngs):
    self.layers = nnx.List([
        nnx.Linear(a, b, rngs=rngs,
                   kernel_init=param_init(nnx.initializers.lecun_normal(), "embed", "mlp"),
                   bias_init=param_init(nnx.initializers.zeros_init(), "mlp"))
        for a, b in zip(dims[:-1], dims[1:])])

  def __call__(self, x: jax.Array) -> jax.Array:
    """[batch, in] -> [batch, out]."""
    return self.feature_major(x.T).T

  def feature_major(self, h: jax.Array) -> jax.Array:
    """[in, batch] -> [out, batch]."""
    for i, layer in enumerate(self.layers):
      # The barrier keeps XLA from folding the transpose back into the dot's dimension numbers.
      y = jax.lax.optimization_barrier(layer.kernel[...].T) @ h
      h = bias_silu(y, layer.bias[...]) if i < len(self.layers) - 1 else \
          y + layer.bias[...][:, None]
    return h


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
    codes, _, quantized, residuals = self._quantize(z, codes)
    return codes, quantized, residuals

  def _quantize(self, z, codes=None):
    """`quantize` plus the chosen codewords [L, B, D] (differentiable w.r.t. the codebooks)."""
    residual, picked, codewords, residuals = z, [], [], []
    for level in range(self.config.num_levels):
      codebook = self.codebooks[level]
      idx = nearest_code(residual, codebook) if codes is None else codes[:, level]
      q = codebook[idx]
      residuals.append(residual)
      picked.append(idx)
      codewords.append(q)
      residual = residual - jax.lax.stop_gradient(q)  # each codebook learns from its own level
    return (jnp.stack(picked, axis=1), jnp.stack(codewords), sum(codewords),
            jnp.stack(residuals))

  def __call__(self, x: jax.Array, codes: jax.Array | None = None):
    """Returns (reconstruction, codes, losses dict)."""
    reconstruction, codes, _, losses = self.forward(x, codes)
    return reconstruction, codes, losses

  def forward(self, x: jax.Array, codes: jax.Array | None = None):
    """Returns (reconstruction, codes, residuals [L, B, D] entering each level, losses dict)."""
    x_t = x.T  # the MLPs run feature-major (see MLP)
    z = self.encoder.feature_major(x_t).T
    codes, codewords, z_q, residuals = self._quantize(z, codes)
    codebook_loss = jnp.mean((jax.lax.stop_gradient(residuals) - codewords) ** 2, axis=(1, 2))
    commitment = jnp.mean((residuals - jax.lax.stop_gradient(codewords)) ** 2, axis=(1, 2))
    if self.config.estimator == "rotation":
      z_st = rotation_trick(z, jax.lax.stop_gradient(z_q))
    elif self.config.estimator == "ste":
      z_st = z + jax.lax.stop_gradient(z_q - z)
    else:
      raise ValueError(f"unknown gradient estimator {self.config.estimator!r}")
    reconstruction_t = self.decoder.feature_major(z_st.T)
    reconstruction = reconstruction_t.T
    recon = jnp.mean((reconstruction_t - x_t) ** 2)
    quant = jnp.sum(codebook_loss + self.config.beta * commitment)
    return reconstruction, codes, residuals, {
        "loss": recon + quant, "recon": recon, "quant": quant, "codebook": codebook_loss,
        "commitment": commitment}

  def decode_codes(self, codes: jax.Array) -> jax.Array:
    codewords = self.codebooks[jnp.arange(self.config.num_levels)[:, None], codes.T]
    return self.decoder(codewords.sum(0))
