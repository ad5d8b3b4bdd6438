"""The chunked cross-entropy equals the loss on full logits, value and gradients."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from semrec_jax import parallel
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


@pytest.mark.parametrize("answer_share,chunk,scale", [(1.0, 16, 1.0), (0.15, 8, 0.25),
                                                     (0.3, 64, 3.0)])
def test_chunked_loss_and_gradients_equal_the_full_loss(answer_share, chunk, scale):
  """Two output tables (pretrained rows + 37 new tokens, padding rows excluded), a chunk that
  does not divide the row (padded), sparse answers (chunks skipped), packed rows and padding; the
  loss scaled (the gradients the forward pass computed scale with the cotangent)."""
  config = configs.get("tiny", vocab_size=1000, num_new_tokens=37, num_layers=1, embed_dim=64,
                       mlp_dim=64, num_heads=2, head_dim=16)
  model = Decoder(config, nnx.Rngs(0))
  batch = _batch(3, 50, 1037, answer_share)

  def full(m):
    logits = m(batch["tokens"], batch["positions"], batch["segment_ids"])
    total, count = loss.next_token_loss(logits, batch["tokens"], batch["mask"],
                                        batch["segment_ids"])
    return scale * total, count

  def chunked(m):
    total, count = loss.decoder_loss(m, batch, token_chunk=chunk)
    return scale * total, count

  (want, want_n), want_grads = nnx.value_and_grad(full, has_aux=True)(model)
  (got, got_n), got_grads = nnx.value_and_grad(chunked, has_aux=True)(model)
  assert int(got_n) == int(want_n) > 0
  assert float(got) == pytest.approx(float(want), rel=1e-5)
  primal, _ = loss.decoder_loss(model, batch, token_chunk=chunk)  # undifferentiated: no grads
  assert float(primal) * scale == pytest.approx(float(want), rel=1e-5)
  scale = max(float(jnp.abs(g).max()) for g in jax.tree.leaves(want_grads))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5 * scale),
               got_grads, want_grads)
  new_rows = got_grads["embedder"]["new_embedding"][...]
  assert float(jnp.abs(new_rows[37:]).max()) == 0  # padding rows never score


@pytest.mark.parametrize("dtype,tolerance", [(jnp.float32, 1e-5), (jnp.bfloat16, 2e-2)])
def test_several_vocabulary_tiles_with_a_ragged_last_one(monkeypatch, dtype, tolerance):
  """Tiles of 96 rows: the 1,000 pretrained rows take 11 (the last moved back over 56 rows an
  earlier tile had), the 128 new-token rows 2; float32 and bf16 activations against the loss on
  full logits (float32 products of the same values)."""
  monkeypatch.setattr(loss, "VOCAB_TILE", 96)
  config = configs.get("tiny", vocab_size=1000, num_new_tokens=37, num_layers=1, embed_dim=64,
                       mlp_dim=64, num_heads=2, head_dim=16)
  model = Decoder(config, nnx.Rngs(0), dtype=dtype)
  batch = _batch(3, 40, 1037, 0.5, seed=1)

  def full(m):
    logits = m(batch["tokens"], batch["positions"], batch["segment_ids"])
    return loss.next_token_loss(logits, batch["tokens"], batch["mask"], batch["segment_ids"])[0]

  want, want_grads = nnx.value_and_grad(full)(model)
  got, got_grads = nnx.value_and_grad(lambda m: loss.decoder_loss(m, batch, token_chunk=16)[0])(
      model)
  assert float(got) == pytest.approx(float(want), rel=tolerance / 10)
  top = max(float(jnp.abs(g).max()) for g in jax.tree.leaves(want_grads))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a, np.float32),
                                                       np.asarray(b, np.float32),
                                                       atol=tolerance * top), got_grads, want_grads)
  table = got_grads["embedder"]["embedding"][...]
  assert float(jnp.abs(table[904:1000]).max()) > 0  # the moved-back tile's rows have gradients


def test_no_answer_positions_give_zero_loss_and_gradients():
  config = configs.get("tiny", vocab_size=300, num_layers=1, embed_dim=32, mlp_dim=32,
                       num_heads=2, head_dim=16)
  model = Decoder(config, nnx.Rngs(1))
  batch = {**_batch(2, 24, 300, 0.0), "mask": jnp.zeros((2, 24), jnp.int32)}
  (total, count), grads = nnx.value_and_grad(
      lambda m: loss.decoder_loss(m, batch, token_chunk=8), has_aux=True)(model)
  assert (float(total), int(count)) == (0.0, 0)
  assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads)) == 0


def test_auto_chunk_bounds_a_chunks_logits_by_platform():
  gemma = 262_144 + 1027
  assert loss.auto_token_chunk(8, 128, 9219, "cpu") == 64     # tiny: the CPU cap
  assert loss.auto_token_chunk(8, 32, 9219, "cpu") == 32      # the row length
  assert loss.auto_token_chunk(8, 1024, gemma, "cpu") == 16   # <= 256 MiB of logits
  assert loss.auto_token_chunk(8, 1024, gemma, "gpu") == 256  # <= 4 GiB: 8 x 1024 in 4 chunks
  assert loss.auto_token_chunk(16, 2048, gemma, "gpu") == 128
  assert loss.auto_token_chunk(24, 2048, gemma, "tpu") == 32   # a power of two: rows split evenly
  assert loss.auto_token_chunk(4000, 2048, gemma, "gpu") == 1  # never below one position
  for rows, platform in ((8, "gpu"), (24, "tpu"), (8, "cpu"), (3, "tpu")):
    chunk = loss.auto_token_chunk(rows, 4096, gemma, platform)
    assert rows * chunk * gemma * 4 <= loss.CHUNK_LOGITS_BYTES[platform]


def test_a_tensor_parallel_loss_reads_the_table_where_it_lies():
  """data=4 x tensor=2: each device scores its own half of the vocabulary's rows (the compiled
  loss and gradients gather no array with the table's 4,096 rows) and the sum is the one device's."""
  rng = np.random.default_rng(0)
  hidden = jnp.asarray(rng.normal(size=(8, 32, 64)), jnp.float32)
  table = jnp.asarray(rng.normal(size=(4096, 64)) * 0.1, jnp.float32)
  targets = jnp.asarray(rng.integers(0, 4000, (8, 32)), jnp.int32)
  valid = jnp.asarray(rng.random((8, 32)) < 0.5)
  mesh = parallel.make_mesh(parallel.mesh_config(data=4, tensor=2))

  plain = jax.value_and_grad(
      lambda h, t: loss.chunked_cross_entropy(h, (t,), targets, valid, 8, used=(4000,)),
      argnums=(0, 1))

  def grads(h, t):
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
      return plain(h, t)

  rows = NamedSharding(mesh, P(("data", "fsdp")))
  placed = (jax.device_put(hidden, rows), jax.device_put(table, NamedSharding(mesh, P("tensor"))))
  compiled = jax.jit(grads).lower(*placed).compile()
  gathered = re.findall(r"= \w+\[([0-9,]*)\][^ ]* all-gather", compiled.as_text())
  assert not [g for g in gathered if "4096" in g.split(",")]
  (got, (dh, dt)), (want, (dh1, dt1)) = compiled(*placed), plain(hidden, table)
  assert float(got) == pytest.approx(float(want), rel=1e-5)
  np.testing.assert_allclose(dh, dh1, atol=1e-6)
  np.testing.assert_allclose(dt, dt1, atol=1e-6)
  assert float(jnp.abs(dt[4000:]).max()) == 0  # rows past `used` never score
