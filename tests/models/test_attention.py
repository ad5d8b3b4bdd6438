"""The attention kernels against XLA's dense-mask attention: splash in Pallas' interpreter (packed
segments, sliding window, grouped-query heads, sharded), the cuDNN call's arguments, `auto`."""

import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import AbstractDevice, AbstractMesh, AxisType

from semrec_jax import parallel
from semrec_jax.models import attention, configs
from semrec_jax.models.decoder import Decoder, layer_state

SCALE = 0.125


def packed(batch: int, length: int, seed: int = 0):
  """Segment ids and positions of rows packed with random-length examples, then padding."""
  rng = np.random.default_rng(seed)
  segments, positions = np.zeros((batch, length), np.int32), np.zeros((batch, length), np.int32)
  for row in range(batch):
    start, segment = 0, 1
    while start < length - 8:
      n = min(int(rng.integers(5, length // 2)), length - 8 - start)
      segments[row, start:start + n], positions[row, start:start + n] = segment, np.arange(n)
      start, segment = start + n, segment + 1
  return jnp.asarray(segments), jnp.asarray(positions)


def qkv(batch, length, heads, kv_heads, head_dim=64, seed=0):
  keys = jax.random.split(jax.random.key(seed), 4)
  q = jax.random.normal(keys[0], (batch, length, heads, head_dim))
  k = jax.random.normal(keys[1], (batch, length, kv_heads, head_dim))
  v = jax.random.normal(keys[2], (batch, length, kv_heads, head_dim))
  return q, k, v, jax.random.normal(keys[3], (batch, length, heads, head_dim))


def abstract_mesh(platform: str) -> AbstractMesh:
  """A one-device mesh of `platform`, as a step compiled for that platform sees it."""
  return AbstractMesh((1,), ("data",), axis_types=(AxisType.Auto,),
                      abstract_device=AbstractDevice(platform, None, platform))


def loss_and_grads(kind, q, k, v, weights, segments, window):
  """A loss over real tokens only (padding outputs differ between kernels and are never read)."""
  def loss(q, k, v):
    out = attention.attend(q, k, v, segments, scale=SCALE, window=window,
                           implementation=kind)
    return jnp.sum(jnp.where((segments > 0)[..., None, None], out * weights, 0.0)), out
  (value, out), grads = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(q, k, v)
  return value, jnp.where((segments > 0)[..., None, None], out, 0.0), grads


@pytest.mark.parametrize("length,heads,kv_heads,window", [
    (256, 4, 2, None),  # grouped-query, global
    (200, 4, 1, 48),    # multi-query, sliding window, length padded to 256
])
def test_splash_matches_xla(length, heads, kv_heads, window):
  segments, _ = packed(2, length)
  assert int(segments.max()) >= 3  # several examples per row
  q, k, v, weights = qkv(2, length, heads, kv_heads)
  want = loss_and_grads("xla", q, k, v, weights, segments, window)
  got = loss_and_grads("splash", q, k, v, weights, segments, window)
  np.testing.assert_allclose(got[1], want[1], atol=2e-5, rtol=1e-5)
  np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
  for g, w in zip(got[2], want[2]):
    assert float(jnp.abs(w).max()) > 0.1
    np.testing.assert_allclose(g, w, atol=5e-5, rtol=1e-4)


@pytest.mark.parametrize("kv_heads", [2, 1])  # key heads split over 'tensor', or copied per head
def test_splash_sharded_matches_xla(kv_heads):
  """Under a ('data', 'fsdp', 'tensor') = (2, 2, 2) mesh, splash runs in shard_map."""
  mesh = parallel.make_mesh(parallel.mesh_config(data=2, fsdp=2, tensor=2))
  arrays = (*qkv(4, 128, 4, kv_heads, seed=1), packed(4, 128, seed=1)[0])
  arrays = [jax.device_put(x, parallel.batch_sharding(mesh, x.ndim)) for x in arrays]

  def run(kind):
    def step(q, k, v, weights, segments):
      with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
        return loss_and_grads(kind, q, k, v, weights, segments, 64)
    return jax.jit(step)(*arrays)

  want, got = run("xla"), run("splash")
  np.testing.assert_allclose(got[1], want[1], atol=2e-5, rtol=1e-5)
  for g, w in zip(got[2], want[2]):
    np.testing.assert_allclose(g, w, atol=5e-5, rtol=1e-4)


def test_cudnn_call(monkeypatch):
  """cuDNN cannot run here: its call's arguments, run by XLA, equal the dense mask's result."""
  calls = []
  xla = jax.nn.dot_product_attention

  def record(*args, implementation=None, **kwargs):
    calls.append(dict(kwargs, implementation=implementation))
    return xla(*args, implementation="xla", **kwargs)

  segments, _ = packed(2, 96, seed=2)
  q, k, v, _ = qkv(2, 96, 4, 2, seed=2)
  want = attention.attend(q, k, v, segments, scale=SCALE, window=16,
                          implementation="xla")
  monkeypatch.setattr(jax.nn, "dot_product_attention", record)
  got = attention.cudnn(q, k, v, segments, scale=SCALE, window=16)
  call = calls[-1]
  assert call["implementation"] == "cudnn" and call["is_causal"] and call["scale"] == SCALE
  assert call["local_window_size"] == (15, 0) and call["mask"].shape == (2, 1, 96, 96)
  real = (segments > 0)[..., None, None]
  np.testing.assert_allclose(jnp.where(real, got, 0), jnp.where(real, want, 0), atol=1e-6)
  with pytest.raises(ValueError, match="'cudnn' cannot run on cpu"):
    attention.attend(q, k, v, segments, scale=SCALE, window=None,
                     implementation="cudnn")
  with jax.sharding.use_abstract_mesh(abstract_mesh("gpu")):
    with pytest.raises(ValueError, match="bfloat16 or float16 activations, got float32"):
      attention.attend(q, k, v, segments, scale=SCALE, window=None,
                       implementation="cudnn")


@pytest.mark.parametrize("platform,dtype,kind", [
    ("cpu", jnp.bfloat16, "xla"), ("tpu", jnp.float32, "splash"),
    ("gpu", jnp.bfloat16, "cudnn"), ("gpu", jnp.float32, "xla")])
def test_auto_follows_the_mesh_platform(platform, dtype, kind):
  with jax.sharding.use_abstract_mesh(abstract_mesh(platform)):
    assert attention.resolve("auto", dtype) == kind
  assert attention.resolve("auto", dtype) == "xla"  # no mesh: this CPU
  with pytest.raises(ValueError, match="config.lm.attention='flash'"):
    attention.resolve("flash", dtype)


def test_decoder_auto_is_xla_on_cpu_and_splash_agrees():
  """Positions jump by 150 after each example's 20th token: every kernel masks by token index
  within the example (layer 0's 128-token window keeps the tokens before the jump), RoPE alone
  reads positions, so xla and splash still agree."""
  c = configs.get("tiny", vocab_size=512, num_layers=2)  # layer 0: window 128, layer 1 global
  segments, positions = packed(2, 256, seed=3)
  positions = positions + 150 * (positions >= 20)
  tokens = jax.random.randint(jax.random.key(3), (2, 256), 1, 512) * (segments > 0)
  models = {kind: Decoder(c.replace(attention=kind), nnx.Rngs(0))
            for kind in ("xla", "auto", "splash")}

  def run(model):
    def loss(model):  # next-token loss within each example
      logits = model(tokens, positions, segments)
      logp = jnp.take_along_axis(jax.nn.log_softmax(logits[:, :-1]), tokens[:, 1:, None], -1)
      same = (segments[:, 1:] == segments[:, :-1]) & (segments[:, 1:] > 0)
      return -jnp.sum(jnp.where(same, logp[..., 0], 0)) / jnp.sum(same), logits
    (value, logits), grads = nnx.value_and_grad(loss, has_aux=True)(model)
    return value, jnp.where((segments > 0)[..., None], logits, 0), grads

  want = run(models["xla"])
  auto = run(models["auto"])
  assert float(auto[0]) == float(want[0])  # same kernel, same numbers
  np.testing.assert_array_equal(auto[1], want[1])
  got = run(models["splash"])
  np.testing.assert_allclose(float(got[0]), float(want[0]), rtol=1e-6)
  np.testing.assert_allclose(got[1], want[1], atol=1e-4)
  for layer in (0, 1):  # local, global
    grad = lambda g, i=layer: layer_state(g, c, i)["attention"]["k"][...]
    scale = float(jnp.abs(grad(want[2])).max())
    assert scale > 1e-4
    np.testing.assert_allclose(grad(got[2]), grad(want[2]), atol=1e-4 * scale)


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None, reason="needs libtpu (PyPI)")
def test_splash_compiles_for_a_tpu_slice(monkeypatch):
  """AOT: a bfloat16 decoder's forward and backward with splash (auto) for TPU v5e 2x2."""
  monkeypatch.setenv("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # other test processes may hold libtpu
  from jax.experimental import topologies  # pylint: disable=import-outside-toplevel
  topology = topologies.get_topology_desc(platform="tpu", topology_name="v5e:2x2")
  mesh = parallel.make_mesh(parallel.mesh_config(data=1, fsdp=2, tensor=2),
                            devices=topology.devices)
  c = configs.get("tiny", vocab_size=512, num_layers=2)
  model = nnx.eval_shape(lambda: Decoder(c, nnx.Rngs(0), dtype=jnp.bfloat16))
  graphdef, state = nnx.split(model)
  state = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state,
                       parallel.state_shardings(state, mesh))
  batch = jax.ShapeDtypeStruct((4, 512), jnp.int32, sharding=parallel.batch_sharding(mesh, 2))

  def loss(state, tokens, positions, segments):
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
      logits = nnx.merge(graphdef, state)(tokens, positions, segments)
    return jnp.mean(jax.nn.log_softmax(logits)[..., 0])

  compiled = jax.jit(jax.grad(loss)).lower(state, batch, batch, batch).compile()
  kernels = [line for line in compiled.as_text().splitlines()
             if 'custom_call_target="tpu_custom_call"' in line]
  # per layer the forward kernel and the backward's dq and dkv kernels, all splash
  assert len(kernels) == 3 * c.num_layers and all("splash_mha" in line for line in kernels)
  # each chip's share: 2 of the 4 rows (fsdp) and 2 of the 4 query heads (tensor)
  assert all("bf16[2,2,512,64]" in line for line in kernels)
