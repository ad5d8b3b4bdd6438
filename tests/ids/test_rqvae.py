"""RQ-VAE pieces: the rotation trick, k-means, usage EMA and dead-code restarts, sharded parity,
checkpoints."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from semrec_jax import checkpoint, parallel
from semrec_jax.ids import assign, recipes
from semrec_jax.ids.kmeans import kmeans
from semrec_jax.ids.rqvae import MLP, RQVAE, RQVAEConfig, bias_silu, rotation_trick
from semrec_jax.ids.train import Trainer, train


def small_config(**overrides):
  c = ml_collections.ConfigDict({
      "levels": 2, "codebook_size": 16, "latent_dim": 8, "hidden_dims": (32,), "batch_size": 64,
      "steps": 30, "eval_every": 10, "val_fraction": 0.1, "seed": 0, "usage_decay": 0.99,
      "reset_every": 5, "reset_threshold": 0.01, "cpu_microbatch": 0})
  c.update(overrides)
  return c


def clustered(n=512, dim=16, clusters=8, seed=0):
  rng = np.random.default_rng(seed)
  centers = rng.normal(size=(clusters, dim)) * 3
  return (centers[rng.integers(0, clusters, n)] + rng.normal(size=(n, dim)) * 0.3).astype(
      np.float32)


def test_rotation_trick_forward_is_the_code_and_gradient_reaches_the_input():
  e = jax.random.normal(jax.random.key(0), (6, 8))
  q = jax.random.normal(jax.random.key(1), (6, 8))
  np.testing.assert_allclose(rotation_trick(e, q), q, atol=1e-5)
  grad = jax.grad(lambda e: jnp.sum(rotation_trick(e, q) ** 2))(e)
  assert np.all(np.linalg.norm(grad, axis=1) > 1e-3)
  # The rotation keeps the gradient's angle to e equal to the upstream gradient's angle to q.
  upstream = 2 * q
  cos_e = jnp.sum(grad * e, -1) / (jnp.linalg.norm(grad, axis=-1) * jnp.linalg.norm(e, axis=-1))
  cos_q = jnp.sum(upstream * q, -1) / (jnp.linalg.norm(upstream, axis=-1) *
                                       jnp.linalg.norm(q, axis=-1))
  np.testing.assert_allclose(cos_e, cos_q, atol=1e-5)


@pytest.mark.parametrize("estimator", ["rotation", "ste"])
def test_encoder_gets_gradients_through_the_quantizer(estimator):
  model = RQVAE(RQVAEConfig(input_dim=16, hidden_dims=(32,), latent_dim=8, num_levels=2,
                            codebook_size=8, estimator=estimator), nnx.Rngs(0))
  x = jnp.asarray(clustered(64))
  reconstruction, codes, _ = model(x)
  np.testing.assert_allclose(reconstruction, model.decode_codes(codes), atol=1e-5)
  grads = nnx.grad(lambda m: m(x)[2]["recon"])(model)
  encoder_grad = grads["encoder"]["layers"][0]["kernel"][...]
  assert float(jnp.abs(encoder_grad).max()) > 0


def test_bias_silu_matches_autodiff_of_silu():
  y = jax.random.normal(jax.random.key(0), (6, 10)) * 3
  b = jax.random.normal(jax.random.key(1), (6,))
  g = jax.random.normal(jax.random.key(2), (6, 10))
  reference = lambda y, b: jnp.sum(g * jax.nn.silu(y + b[:, None]))
  np.testing.assert_allclose(bias_silu(y, b), jax.nn.silu(y + b[:, None]), rtol=1e-6)
  for ours, theirs in zip(jax.grad(lambda y, b: jnp.sum(g * bias_silu(y, b)), (0, 1))(y, b),
                          jax.grad(reference, (0, 1))(y, b)):
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_feature_major_mlp_is_the_linear_layers_batch_major():
  mlp = MLP((16, 32, 8), nnx.Rngs(0))
  x = jnp.asarray(clustered(64))
  expected = mlp.layers[1](jax.nn.silu(mlp.layers[0](x)))
  np.testing.assert_allclose(mlp(x), expected, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(mlp.feature_major(x.T), expected.T, rtol=1e-5, atol=1e-5)
  loss = lambda m: jnp.sum(m(x) ** 2)
  ours = nnx.grad(loss)(mlp)
  theirs = nnx.grad(lambda m: jnp.sum(m.layers[1](jax.nn.silu(m.layers[0](x))) ** 2))(mlp)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
               nnx.to_pure_dict(ours), nnx.to_pure_dict(theirs))


def test_kmeans_recovers_planted_clusters():
  rng = np.random.default_rng(3)
  centers = rng.normal(size=(10, 6)) * 10
  labels = np.repeat(np.arange(10), 50)
  x = (centers[labels] + rng.normal(size=(500, 6))).astype(np.float32)
  centroids, assignment = kmeans(jax.random.key(0), jnp.asarray(x), 10)
  assignment = np.asarray(assignment)
  for c in range(10):  # each planted cluster maps to exactly one centroid, and vice versa
    assert len(set(assignment[labels == c])) == 1
  assert len(set(assignment)) == 10
  matched = np.asarray(centroids)[assignment[::50]]
  np.testing.assert_allclose(matched, centers, atol=0.5)


def _codes(trainer, x):
  model = trainer.model
  return np.asarray(jax.jit(lambda x: model.quantize(model.encoder(x)))(x)[0])


def _with_unreachable_codes(trainer, x, level=0, codes=(0, 1, 2, 3)):
  """Seeds the codebooks, then moves `codes` of `level` where no residual will ever pick them."""
  trainer.seed_codebooks(x, jax.random.key(0))
  model, opt = nnx.merge(trainer.graphdef, trainer.state)
  model.codebooks[level, np.asarray(codes)] = 1e3
  trainer.state = jax.device_put(nnx.state((model, opt)), trainer.state_sharding)


def test_usage_ema_matches_a_hand_computation():
  c = small_config(usage_decay=0.9, reset_every=0)
  trainer = Trainer(c, recipes.get("default"), 16, parallel.make_mesh())
  x = clustered(256)
  trainer.seed_codebooks(x, jax.random.key(0))
  expected = np.zeros((2, 16))
  for step in range(3):
    batch = x[64 * step:64 * (step + 1)]
    share = np.stack([np.bincount(level, minlength=16) for level in _codes(trainer, batch).T]) / 64
    expected = 0.9 * expected + 0.1 * share
    trainer.state, out = trainer.train_step(trainer.state, trainer.put(batch))
    assert not np.asarray(out["reset"]).any()
  np.testing.assert_allclose(np.asarray(trainer.model.usage[...]), expected, atol=1e-6)
  assert expected.sum() == pytest.approx(2 * (1 - 0.9 ** 3))


def test_unused_codes_reset_at_the_interval_only_and_used_codes_never():
  c = small_config(reset_every=3, reset_threshold=0.01)
  trainer = Trainer(c, recipes.get("default"), 16, parallel.make_mesh())
  x = clustered(256)
  _with_unreachable_codes(trainer, x)
  always_used = None
  for step in range(1, 7):
    batch = x[np.random.default_rng(step).choice(256, 64, replace=False)]
    codes = _codes(trainer, batch)
    used = np.zeros((2, 16), bool)
    for level in range(2):
      used[level, codes[:, level]] = True
    always_used = used if always_used is None else always_used & used
    residuals = np.asarray(trainer.model.quantize(trainer.model.encoder(jnp.asarray(batch)))[2])
    trainer.state, out = trainer.train_step(trainer.state, trainer.put(batch))
    reset = np.asarray(out["reset"])
    codebooks = np.asarray(trainer.model.codebooks[...])
    assert not (reset & always_used).any()  # a code picked at every step is never reset
    if step == 1:
      assert not reset.any() and np.all(codebooks[0, :4] == 1e3)  # between intervals: kept
    if step == 3:  # never picked: reset at the interval, to rows of this batch's residuals
      assert reset[0, :4].all()
      for code in range(4):
        assert np.abs(residuals[0] - codebooks[0, code]).max(axis=1).min() < 1e-6
      np.testing.assert_array_equal(np.asarray(trainer.model.usage[0, :4]), 0)
    if step == 4:
      assert not reset.any()
  assert len(set(_codes(trainer, x)[:, 0]) & {0, 1, 2, 3}) >= 2  # restarted codes get used


def test_no_reset_on_the_last_step_or_when_disabled():
  x = clustered(256)
  for overrides in ({"steps": 3, "reset_every": 3}, {"reset_every": 0}):
    trainer = Trainer(small_config(**overrides), recipes.get("default"), 16, parallel.make_mesh())
    _with_unreachable_codes(trainer, x)
    for _ in range(3):
      trainer.state, out = trainer.train_step(trainer.state, trainer.put(x[:64]))
      assert not np.asarray(out["reset"]).any()


def test_steps_on_device_rows_equal_steps_on_host_batches_and_compile_once():
  c = small_config()
  mesh = parallel.make_mesh()
  a, b = Trainer(c, recipes.get("default"), 16, mesh), Trainer(c, recipes.get("default"), 16, mesh)
  x = clustered(256)
  data = b.put_data(x)
  for step in range(6):  # across a reset (step 5)
    rows = np.random.default_rng(step).choice(256, 64, replace=False)
    a.state, out_a = a.train_step(a.state, a.put(x[rows]))
    b.state, out_b = b.train_rows(b.state, data, b.put_rows(rows))
    np.testing.assert_array_equal(np.asarray(out_a["reset"]), np.asarray(out_b["reset"]))
  jax.tree.map(np.testing.assert_array_equal, _params(a.model), _params(b.model))
  assert b.train_rows._cache_size() == 1


def test_microbatched_step_equals_one_pass_on_the_sharded_mesh():
  mesh = parallel.make_mesh()
  whole = Trainer(small_config(), recipes.get("default"), 16, mesh)
  split = Trainer(small_config(cpu_microbatch=16), recipes.get("default"), 16, mesh)
  assert (whole.chunks(64), split.chunks(64)) == (1, 4)  # 16 rows: 2 on each of 8 devices
  assert split.chunks(40) == 5  # 8 rows: 1 a device
  fallback = Trainer(small_config(cpu_microbatch=4), recipes.get("default"), 16, mesh)
  assert fallback.chunks(104) == 1  # 13 rows a device: no split near 4 rows, so one pass
  x = clustered(256)
  for trainer in (whole, split):
    _with_unreachable_codes(trainer, x)
  data = split.put_data(x)
  for step in range(5):  # a reset at step 5
    rows = np.random.default_rng(step).choice(256, 64, replace=False)
    whole.state, a = whole.train_step(whole.state, whole.put(x[rows]))
    split.state, b = split.train_rows(split.state, data, split.put_rows(rows))
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(a["reset"]), np.asarray(b["reset"]))
  assert np.asarray(b["reset"])[0, :4].all()
  jax.tree.map(lambda p, q: np.testing.assert_allclose(p, q, atol=1e-5), _params(whole.model),
               _params(split.model))
  np.testing.assert_allclose(whole.model.usage[...], split.model.usage[...], atol=1e-6)


def _params(model):
  return jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))


def test_sharded_training_matches_single_device(tmp_path):
  x = clustered(512)
  c = small_config(steps=12, eval_every=6)
  sharded = train(c, recipes.get("default"), x, parallel.make_mesh(), str(tmp_path / "a"))
  single = train(c, recipes.get("default"), x, parallel.make_mesh(devices=jax.devices()[:1]),
                 str(tmp_path / "b"))
  assert parallel.make_mesh().shape["data"] == 8
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-4, rtol=2e-3),
               _params(sharded.model), _params(single.model))
  assert [r["step"] for r in sharded.history] == [6, 12]


def test_restore_reproduces_codes_and_resume_continues(tmp_path):
  x = clustered(512)
  c = small_config(steps=20, eval_every=10)
  mesh = parallel.make_mesh()
  result = train(c, recipes.get("default"), x, mesh, str(tmp_path))
  codes = assign.assign(result.model, x, "unique")["ids"]
  fresh = Trainer(c, recipes.get("default"), 16, mesh)
  mngr = checkpoint.manager(str(tmp_path / "best"), best_metric="val_loss")
  fresh.state = checkpoint.restore(mngr, result.best_step, fresh.state)
  np.testing.assert_array_equal(assign.assign(fresh.model, x, "unique")["ids"], codes)
  # Asking for more steps resumes from the latest checkpoint (step 20) instead of starting over.
  longer = train(small_config(steps=30, eval_every=10), recipes.get("default"), x, mesh,
                 str(tmp_path))
  assert [r["step"] for r in longer.history] == [10, 20, 30]
  assert longer.history[:2] == result.history
