"""The tiled cross-entropy equals the loss on full logits, value and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from semrec_jax.lm import loss
from semrec_jax.models import configs
from semrec_jax.models.decoder import Decoder


def _batch(rows, length, vocab, answer_share, seed=0):
  rng = np.random.default_rng(seed)
  segments = np.ones((rows, length), np.int32)
  segments[0, length // 2:] = 2            # two packed examples
  segments[-1, length - 7:] = 0            # padding
  return {"tokens": jnp.asarray(rng.integers(1, vocab, (rows, length)), jnp.int32),
          "mask": jnp.asarray(rng.random((rows, length)) < answer_share, jnp.int32),
          "segment_ids": jnp.asarray(segments),
          "positions": jnp.asarray(np.tile(np.arange(length), (rows, 1)), jnp.int32)}


@pytest.mark.parametrize("answer_share,chunk,tile", [(1.0, 16, 96), (0.15, 8, 250), (0.3, 64, 4096)])
def test_tiled_loss_and_gradients_equal_the_full_loss(answer_share, chunk, tile):
  """Two output tables (pretrained rows + 37 new tokens, padding rows excluded), a tile that does
  not divide the vocabulary (the last tile moves back), sparse answers (chunks skipped), packed
  rows and padding."""
  config = configs.get("tiny", vocab_size=1000, num_new_tokens=37, num_layers=1, embed_dim=64,
                       mlp_dim=64, num_heads=2, head_dim=16)
  model = Decoder(config, nnx.Rngs(0))
  batch = _batch(3, 50, 1037, answer_share)

  def full(m):
    logits = m(batch["tokens"], batch["positions"], batch["segment_ids"])
    return loss.next_token_loss(logits, batch["tokens"], batch["mask"], batch["segment_ids"])

  (want, want_n), want_grads = nnx.value_and_grad(full, has_aux=True)(model)
  (got, got_n), got_grads = nnx.value_and_grad(
      lambda m: loss.decoder_loss(m, batch, token_chunk=chunk, vocab_tile=tile),
      has_aux=True)(model)
  assert int(got_n) == int(want_n) > 0
  assert float(got) == pytest.approx(float(want), rel=1e-5)
  scale = max(float(jnp.abs(g).max()) for g in jax.tree.leaves(want_grads))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5 * scale),
               got_grads, want_grads)
  new_rows = got_grads["embedder"]["new_embedding"][...]
  assert float(jnp.abs(new_rows[37:]).max()) == 0  # padding rows never score


def test_no_answer_positions_give_zero_loss_and_gradients():
  config = configs.get("tiny", vocab_size=300, num_layers=1, embed_dim=32, mlp_dim=32,
                       num_heads=2, head_dim=16)
  model = Decoder(config, nnx.Rngs(1))
  batch = {**_batch(2, 24, 300, 0.0), "mask": jnp.zeros((2, 24), jnp.int32)}
  (total, count), grads = nnx.value_and_grad(
      lambda m: loss.decoder_loss(m, batch, token_chunk=8, vocab_tile=64), has_aux=True)(model)
  assert (float(total), int(count)) == (0.0, 0)
  assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads)) == 0


def test_auto_chunk_is_64_per_row_on_cpus_and_16k_positions_per_device_elsewhere():
  assert loss.auto_token_chunk(8, 128, "cpu") == 64
  assert loss.auto_token_chunk(8, 32, "cpu") == 32
  assert loss.auto_token_chunk(8, 1024, "gpu") == 1024   # the 1B benchmark's shape: one chunk
  assert loss.auto_token_chunk(16, 2048, "gpu") == 1024
  assert loss.auto_token_chunk(24, 2048, "tpu") == 512   # a power of two: rows split evenly
  assert loss.auto_token_chunk(1000, 2048, "gpu") == 64  # never below the CPU chunk
