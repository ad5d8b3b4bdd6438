"""RQ-VAE pieces: the rotation trick, k-means, dead-code restarts, sharded parity, checkpoints."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from semrec_jax import checkpoint, parallel
from semrec_jax.ids import assign, recipes
from semrec_jax.ids.kmeans import kmeans
from semrec_jax.ids.rqvae import RQVAE, RQVAEConfig, rotation_trick
from semrec_jax.ids.train import Trainer, train


def small_config(**overrides):
  c = ml_collections.ConfigDict({
      "levels": 2, "codebook_size": 16, "latent_dim": 8, "hidden_dims": (32,), "batch_size": 64,
      "steps": 30, "eval_every": 10, "val_fraction": 0.1, "seed": 0})
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


def test_dead_codes_come_back():
  c = small_config()
  trainer = Trainer(c, recipes.get("default"), 16, parallel.make_mesh())
  x = clustered(256)
  trainer.seed_codebooks(x, jax.random.key(0))
  model, opt = nnx.merge(trainer.graphdef, trainer.state)
  model.codebooks[0, :4] = 1e3  # 4 codes no residual will ever pick
  trainer.state = jax.device_put(nnx.state((model, opt)), trainer.state_sharding)
  trainer.state, _ = trainer.train_step(trainer.state, trainer.put(x[:64]))
  assert np.all(np.asarray(trainer.model.usage[0, :4]) == 0)
  trainer.state, dead = trainer.restart(trainer.state, trainer.put(x[:64]), jax.random.key(1))
  assert int(dead[0]) >= 4
  assert float(jnp.abs(trainer.model.codebooks[0, :4]).max()) < 100
  trainer.state, _ = trainer.train_step(trainer.state, trainer.put(x[:256]))
  codes = assign.encode_all(trainer.model, x)[0]
  assert len(set(codes[:, 0]) & {0, 1, 2, 3}) >= 2


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
