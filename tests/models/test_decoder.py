"""The decoder on small random configs: packing, the KV cache, sharding and compilation."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from semrec_jax import parallel
from semrec_jax.models import configs, params
from semrec_jax.lm import decoding
from semrec_jax.models.decoder import Decoder, NewTokens, take_cache_rows
from tests.conftest import FIXTURES

SHARDING_GOLDEN = os.path.join(FIXTURES, "sharding")
REFERENCE_MESH = dict(data=1, fsdp=4, tensor=2)


def tiny(**overrides):
  return configs.get("tiny", vocab_size=512, num_new_tokens=40, **overrides)


@pytest.fixture(scope="module")
def model():
  return Decoder(tiny(), nnx.Rngs(0))


def test_new_tokens_are_their_own_parameter(model):
  c = model.config
  assert c.padded_vocab_size == 640 and c.padded_vocab_size % 128 == 0
  new = nnx.state(model, NewTokens)
  assert jax.tree.leaves(new)[0].shape == (128, 256)
  logits = model(jnp.array([[1, 2, 512 + 39]]))
  assert logits.shape == (1, 3, 640)
  assert float(logits[..., 512 + 40:].max()) < -1e30  # padding rows are masked


def test_packed_equals_unpacked(model):
  rng = np.random.default_rng(0)
  a, b = rng.integers(1, 552, 9), rng.integers(1, 552, 6)
  packed = jnp.asarray(np.concatenate([a, b, [0]])[None])
  segments = jnp.asarray([[1] * 9 + [2] * 6 + [0]])
  positions = jnp.asarray([list(range(9)) + list(range(6)) + [0]])
  out = model(packed, positions=positions, segment_ids=segments)[0]
  np.testing.assert_allclose(out[:9], model(jnp.asarray(a[None]))[0], atol=1e-4)
  np.testing.assert_allclose(out[9:15], model(jnp.asarray(b[None]))[0], atol=1e-4)


def test_sliding_window_limits_attention():
  c = tiny(sliding_window=4, global_every=10, num_layers=2)  # both layers local
  m = Decoder(c, nnx.Rngs(1))
  tokens = np.random.default_rng(1).integers(1, 500, (1, 12))
  changed = tokens.copy()
  changed[0, 0] = (tokens[0, 0] + 7) % 500 + 1
  a, b = m(jnp.asarray(tokens))[0], m(jnp.asarray(changed))[0]
  # with 2 local layers of window 4, token 0 reaches at most positions 0..6
  assert float(jnp.abs(a[3] - b[3]).max()) > 1e-4
  np.testing.assert_allclose(a[7:], b[7:], atol=1e-5)


def test_kv_cache_matches_full_forward(model):
  tokens = jnp.asarray(np.random.default_rng(2).integers(1, 552, (2, 10)))
  full = model(tokens)
  cache = model.init_cache(2, 16)
  logits, cache = model(tokens[:, :6], cache=cache)
  np.testing.assert_allclose(logits, full[:, :6], atol=1e-4)
  for t in range(6, 10):
    step, cache = model(tokens[:, t:t + 1], positions=jnp.full((2, 1), t), cache=cache)
    np.testing.assert_allclose(step[:, 0], full[:, t], atol=1e-4)


def test_a_write_past_the_cache_sets_its_overflow_flag_and_decoding_raises(model):
  tokens = jnp.asarray(np.random.default_rng(3).integers(1, 552, (2, 6)))
  _, cache = model(tokens, cache=model.init_cache(2, 8))
  segments = jnp.asarray([[1], [0]])  # row 1 is padding: its write past the end is meant to go
  for t in (6, 7):
    _, cache = model(tokens[:, :1], positions=jnp.full((2, 1), t), cache=cache)
  assert not bool(cache["overflow"])
  _, padded = model(tokens[:, :1], jnp.full((2, 1), 8), jnp.asarray([[0], [0]]), cache)
  assert not bool(padded["overflow"])
  _, cache = model(tokens[:, :1], jnp.full((2, 1), 8), segments, cache)
  assert bool(cache["overflow"])
  assert bool(take_cache_rows(cache, jnp.asarray([1, 1]))["overflow"])  # sticky, beams or not
  with pytest.raises(decoding.CacheOverflow, match="KV cache of 8 positions overflowed"):
    decoding.check_cache(cache["overflow"], 8)


def test_padded_prefill_and_cached_steps_equal_unpadded():
  """Right-padded prompts of different lengths, then cached steps at each row's own positions,
  with sliding windows shorter than the sequence: every row equals its unpadded run."""
  m = Decoder(tiny(sliding_window=4, global_every=2, num_layers=3), nnx.Rngs(4))
  rng = np.random.default_rng(4)
  lengths, steps, width = [9, 5, 2], 5, 9
  prompts = [rng.integers(1, 552, n) for n in lengths]
  follow = rng.integers(1, 552, (len(lengths), steps))
  tokens = np.zeros((len(lengths), width), np.int32)
  segments = np.zeros_like(tokens)
  for b, p in enumerate(prompts):
    tokens[b, :len(p)], segments[b, :len(p)] = p, 1
  positions = np.where(segments > 0, np.arange(width), 0)  # padding at position 0, as packed
  cache = m.init_cache(len(lengths), width + steps)
  logits, cache = m(jnp.asarray(tokens), jnp.asarray(positions), jnp.asarray(segments), cache)
  padded = [[logits[b, n - 1]] for b, n in enumerate(lengths)]
  for t in range(steps):
    step, cache = m(jnp.asarray(follow[:, t:t + 1]), jnp.asarray(np.array(lengths)[:, None] + t),
                    cache=cache)
    for b in range(len(lengths)):
      padded[b].append(step[b, 0])
  for b, p in enumerate(prompts):
    full = m(jnp.asarray(np.concatenate([p, follow[b]])[None]))[0]
    np.testing.assert_allclose(np.stack(padded[b]), full[len(p) - 1:], atol=1e-4)


def test_hidden_states_score_a_subset_of_the_vocabulary(model):
  tokens = jnp.asarray(np.random.default_rng(5).integers(1, 552, (2, 7)))
  x, _ = model.hidden(tokens)
  subset = jnp.asarray([3, 511, 512, 551])  # base and new rows
  np.testing.assert_allclose(model.embedder.decode_subset(x, subset), model(tokens)[..., subset],
                             atol=1e-4)


def test_bf16_activations_give_float32_logits_not_rounded_to_bf16():
  """Beam ranks must not depend on the platform's activation dtype: logits of bf16 hidden states
  are the exact product of the bf16 values, in float32 (bf16 would round 16..32 to 0.125 steps)."""
  m = Decoder(tiny(), nnx.Rngs(0), dtype=jnp.bfloat16)
  tokens = jnp.asarray(np.random.default_rng(6).integers(1, 552, (2, 7)))
  x, _ = m.hidden(tokens)
  assert x.dtype == jnp.bfloat16
  x = (x * 40).astype(jnp.bfloat16)  # logits of tens, where bf16 steps are 0.125
  subset = jnp.asarray(np.arange(500, 552))
  rows = np.asarray(m.embedder.output_rows(subset).astype(jnp.bfloat16), np.float64)
  exact = np.asarray(x, np.float64) @ rows.T
  assert np.abs(exact).max() > 16
  for logits in (m.embedder.decode_subset(x, subset), m.embedder.decode(x)[..., 500:552]):
    assert logits.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(logits), exact, atol=2e-3)
  rounded = np.asarray(jnp.asarray(exact, jnp.bfloat16), np.float64)
  assert np.abs(rounded - exact).max() > 0.02  # what bf16 logits would have lost


def _sharded(config, mesh):
  m = Decoder(config, nnx.Rngs(0))
  return parallel.shard_model(m, mesh)


def test_fsdp_and_tensor_parallel_match_single_device():
  c = tiny()
  mesh = parallel.make_mesh(parallel.mesh_config(**REFERENCE_MESH))
  sharded = _sharded(c, mesh)
  single = Decoder(c, nnx.Rngs(0))
  q = sharded.groups.blocks[0].attention.q[...]  # [groups, embed, heads, kv]
  assert q.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor", None)
  assert len(q.addressable_shards) == 8 and q.addressable_shards[0].data.shape == (2, 64, 2, 64)
  tokens = jnp.asarray(np.random.default_rng(3).integers(1, 552, (8, 16)))
  graphdef, state = nnx.split(sharded)
  traces = []

  @jax.jit
  def forward(state, tokens):
    traces.append(1)
    return nnx.merge(graphdef, state)(tokens)

  batch = jax.device_put(tokens, parallel.batch_sharding(mesh, 2))
  forward(state, batch)
  forward(state, batch + 1)
  assert len(traces) == 1  # compiled once for a fixed shape
  np.testing.assert_allclose(forward(state, batch), single(tokens), atol=1e-4, rtol=1e-5)


def sharding_table(name: str) -> dict:
  """Each parameter's shape and PartitionSpec on the reference mesh (no memory allocated)."""
  config = configs.get(name, num_new_tokens=1027)
  abstract = params.abstract_model(config)
  state = nnx.state(abstract, nnx.Param)
  devices = np.array(jax.devices()[:8])
  mesh = parallel.make_mesh(parallel.mesh_config(**REFERENCE_MESH), devices=devices)
  specs = parallel.state_shardings(state, mesh)
  out = {}
  for (path, variable), (_, sharding) in zip(nnx.to_flat_state(state), nnx.to_flat_state(specs)):
    key = "/".join(map(str, path))
    if key.startswith(("groups/", "tail/")) and key.split("/")[1:3] != ["blocks", "0"]:
      continue  # every block of a group has the same table as the first
    out[key] = {"shape": list(variable.shape), "spec": [s if s is None or isinstance(s, str)
                                                        else list(s)
                                                        for s in sharding.get_value().spec]}
  return out


@pytest.mark.parametrize("name", sorted(configs.CONFIGS))
def test_partition_specs_match_golden(name):
  with open(os.path.join(SHARDING_GOLDEN, f"{name}.json")) as f:
    assert sharding_table(name) == json.load(f)


def test_remat_policies_keep_the_numbers_and_cut_the_step_memory():
  """The layers run under a scan (two groups of two and a tail layer here); recomputing in the
  backward pass changes what the compiled step keeps, never the loss or the gradients."""
  tokens = jnp.asarray(np.random.default_rng(6).integers(1, 500, (4, 256)))
  results = {}
  for remat in ("none", "dots", "full"):
    graphdef, state = nnx.split(Decoder(tiny(num_layers=5, remat=remat), nnx.Rngs(0)))
    assert graphdef is not None and state["groups"]["blocks"][0]["mlp"]["up"].shape[0] == 2

    def loss(state, graphdef=graphdef):
      logits = nnx.merge(graphdef, state)(tokens)
      logp = jax.nn.log_softmax(logits[:, :-1])
      return -jnp.mean(jnp.take_along_axis(logp, tokens[:, 1:, None], -1))
    step = jax.jit(jax.value_and_grad(loss))
    temp = step.lower(state).compile().memory_analysis().temp_size_in_bytes
    results[remat] = (*step(state), temp)
  value, grads, temp = results["none"]
  for remat in ("dots", "full"):
    np.testing.assert_allclose(results[remat][0], value, rtol=1e-6)
    for got, want in zip(jax.tree.leaves(results[remat][1]), jax.tree.leaves(grads)):
      np.testing.assert_allclose(got, want, atol=1e-6)
  # Measured: 299 MiB of temporaries without remat, 124 with dots, 116 with full.
  assert results["dots"][2] < 0.6 * temp and results["full"][2] <= results["dots"][2]


def test_unknown_remat_policy_is_named():
  with pytest.raises(ValueError, match="remat policy 'some'"):
    Decoder(tiny(remat="some"), nnx.Rngs(0))(jnp.ones((1, 4), jnp.int32))


def test_unrolled_layer_scan_equals_the_rolled_one():
  """scan_unroll (on for tiny, off for the pretrained families) changes the program, never the
  logits, the gradients or the cache it writes."""
  tokens = jnp.asarray(np.random.default_rng(7).integers(1, 552, (2, 12)))
  assert configs.get("tiny").scan_unroll and not configs.get("gemma3_1b").scan_unroll
  results = {}
  for unroll in (False, True):
    graphdef, state = nnx.split(Decoder(tiny(num_layers=5, scan_unroll=unroll), nnx.Rngs(0)))

    def loss(state, graphdef=graphdef):
      logp = jax.nn.log_softmax(nnx.merge(graphdef, state)(tokens)[:, :-1])
      return -jnp.mean(jnp.take_along_axis(logp, tokens[:, 1:, None], -1))
    m = nnx.merge(graphdef, state)
    _, cache = m(tokens[:, :8], cache=m.init_cache(2, 16))
    step, _ = m(tokens[:, 8:9], positions=jnp.full((2, 1), 8), cache=cache)
    results[unroll] = (*jax.jit(jax.value_and_grad(loss))(state), cache, step)
  for got, want in zip(jax.tree.leaves(results[True]), jax.tree.leaves(results[False])):
    np.testing.assert_allclose(got, want, atol=1e-5)
