"""Decoding with the KV cache: greedy continuation (constrained beam search comes with eval)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from semrec_jax.models.decoder import Decoder


@functools.partial(jax.jit, static_argnums=(0,))
def _extend(graphdef, state, tokens, positions, cache):
  """Writes tokens [B, T] at `positions` into the cache; returns the last position's logits."""
  logits, cache = nnx.merge(graphdef, state)(tokens, positions=positions, cache=cache)
  return logits[:, -1], cache


def greedy(model: Decoder, prompt: list[int], max_new_tokens: int,
           eos_id: int | None = None) -> list[int]:
  """The greedy continuation of one prompt: prefill once, then one cached step per token."""
  graphdef, state = nnx.split(model)
  cache = model.init_cache(1, len(prompt) + max_new_tokens)
  logits, cache = _extend(graphdef, state, jnp.asarray([prompt], jnp.int32),
                          jnp.arange(len(prompt))[None], cache)
  out = []
  for i in range(max_new_tokens):
    token = int(np.argmax(np.asarray(logits[0])))
    out.append(token)
    if token == eos_id:
      break
    logits, cache = _extend(graphdef, state, jnp.asarray([[token]], jnp.int32),
                            jnp.asarray([[len(prompt) + i]], jnp.int32), cache)
  return out
