"""A BERT encoder in Flax NNX (post-LayerNorm, GELU), as used by sentence-transformers models."""

import dataclasses
import json

import jax
import jax.numpy as jnp
from flax import nnx

from semrec_jax.parallel import param_init


@dataclasses.dataclass(frozen=True)
class BertConfig:
  vocab_size: int = 30522
  hidden_size: int = 384
  num_hidden_layers: int = 6
  num_attention_heads: int = 12
  intermediate_size: int = 1536
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12

  @classmethod
  def from_json(cls, path: str) -> "BertConfig":
    with open(path) as f:
      raw = json.load(f)
    if raw.get("model_type") != "bert" or raw.get("hidden_act", "gelu") != "gelu":
      raise ValueError(f"{path}: expected a BERT model with GELU, got model_type="
                       f"{raw.get('model_type')!r}, hidden_act={raw.get('hidden_act')!r}")
    return cls(**{f.name: raw[f.name] for f in dataclasses.fields(cls) if f.name in raw})


def _dense(din, dout, in_axis, out_axis, rngs):
  return nnx.Linear(din, dout, rngs=rngs,
                    kernel_init=param_init(nnx.initializers.normal(0.02), in_axis, out_axis),
                    bias_init=param_init(nnx.initializers.zeros_init(), out_axis))


def _layer_norm(dim, eps, rngs):
  return nnx.LayerNorm(dim, epsilon=eps, rngs=rngs,
                       scale_init=param_init(nnx.initializers.ones_init(), "embed"),
                       bias_init=param_init(nnx.initializers.zeros_init(), "embed"))


class BertLayer(nnx.Module):

  def __init__(self, c: BertConfig, rngs: nnx.Rngs):
    d, self.heads = c.hidden_size, c.num_attention_heads
    self.query = _dense(d, d, "embed", "heads", rngs)
    self.key = _dense(d, d, "embed", "heads", rngs)
    self.value = _dense(d, d, "embed", "heads", rngs)
    self.attention_out = _dense(d, d, "heads", "embed", rngs)
    self.attention_norm = _layer_norm(d, c.layer_norm_eps, rngs)
    self.intermediate = _dense(d, c.intermediate_size, "embed", "mlp", rngs)
    self.output = _dense(c.intermediate_size, d, "mlp", "embed", rngs)
    self.output_norm = _layer_norm(d, c.layer_norm_eps, rngs)

  def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
    b, t, d = x.shape
    split = lambda y: y.reshape(b, t, self.heads, d // self.heads)
    attended = jax.nn.dot_product_attention(
        split(self.query(x)), split(self.key(x)), split(self.value(x)),
        mask=mask[:, None, None, :])
    x = self.attention_norm(x + self.attention_out(attended.reshape(b, t, d)))
    hidden = jax.nn.gelu(self.intermediate(x), approximate=False)
    return self.output_norm(x + self.output(hidden))


class BertEncoder(nnx.Module):
  """Token ids -> contextual vectors; `embed` gives mean-pooled, L2-normalised sentence vectors."""

  def __init__(self, config: BertConfig, rngs: nnx.Rngs):
    c = self.config = config
    init = nnx.initializers.normal(0.02)
    self.word_embeddings = nnx.Embed(c.vocab_size, c.hidden_size, rngs=rngs,
                                     embedding_init=param_init(init, "vocab", "embed"))
    self.position_embeddings = nnx.Embed(c.max_position_embeddings, c.hidden_size, rngs=rngs,
                                         embedding_init=param_init(init, None, "embed"))
    self.token_type_embeddings = nnx.Embed(c.type_vocab_size, c.hidden_size, rngs=rngs,
                                           embedding_init=param_init(init, None, "embed"))
    self.embedding_norm = _layer_norm(c.hidden_size, c.layer_norm_eps, rngs)
    self.layers = nnx.List([BertLayer(c, rngs) for _ in range(c.num_hidden_layers)])

  def __call__(self, ids: jax.Array, mask: jax.Array) -> jax.Array:
    positions = jnp.arange(ids.shape[1])[None, :]
    x = (self.word_embeddings(ids) + self.position_embeddings(positions)
         + self.token_type_embeddings(jnp.zeros_like(ids)))
    x = self.embedding_norm(x)
    for layer in self.layers:
      x = layer(x, mask)
    return x

  def embed(self, ids: jax.Array, mask: jax.Array) -> jax.Array:
    hidden = self(ids, mask)
    weights = mask[..., None].astype(hidden.dtype)
    pooled = (hidden * weights).sum(1) / jnp.maximum(weights.sum(1), 1e-9)
    return pooled / jnp.maximum(jnp.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)
