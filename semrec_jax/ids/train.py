"""RQ-VAE training: data-parallel jitted steps, k-means seeding, dead-code restarts, Orbax.

Batches come from a grain pipeline over item indices (semrec_jax.batches: a resumed run sees the
same batches). The state (model + optimizer) is replicated and each batch is split over the mesh's
data axes. Checkpoints: the latest (for resuming) and the best by validation loss (for assignment).
"""

import dataclasses
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax import nnx

from semrec_jax import checkpoint, console, parallel
from semrec_jax.batches import index_batches
from semrec_jax.ids.kmeans import kmeans
from semrec_jax.ids.recipes import Recipe
from semrec_jax.ids.rqvae import RQVAE, RQVAEConfig


@dataclasses.dataclass
class TrainResult:
  model: RQVAE
  best_step: int
  best_val_loss: float
  history: list[dict]


def model_config(c, recipe: Recipe, input_dim: int) -> RQVAEConfig:
  return RQVAEConfig(input_dim=input_dim, hidden_dims=tuple(c.hidden_dims),
                     latent_dim=c.latent_dim, num_levels=c.levels, codebook_size=c.codebook_size,
                     beta=recipe.beta, estimator=recipe.estimator)


def optimizer(recipe: Recipe, steps: int) -> optax.GradientTransformation:
  if recipe.schedule == "cosine":
    lr = optax.warmup_cosine_decay_schedule(
        0.0, recipe.learning_rate, max(1, int(recipe.warmup_fraction * steps)), steps,
        end_value=0.1 * recipe.learning_rate)
  elif recipe.schedule == "constant":
    lr = recipe.learning_rate
  else:
    raise ValueError(f"unknown schedule {recipe.schedule!r}")
  adamw = optax.adamw(lr, weight_decay=recipe.weight_decay)
  return optax.chain(optax.clip_by_global_norm(recipe.clip_norm), adamw) if recipe.clip_norm \
      else adamw


class Trainer:
  """Owns the model/optimizer state and the compiled step functions for one training run."""

  def __init__(self, c, recipe: Recipe, input_dim: int, mesh: jax.sharding.Mesh):
    self.c, self.recipe, self.mesh = c, recipe, mesh
    model = RQVAE(model_config(c, recipe, input_dim), nnx.Rngs(c.seed))
    parallel.shard_model(model, mesh)
    opt = nnx.Optimizer(model, optimizer(recipe, c.steps), wrt=nnx.Param)
    self.graphdef, self.state = nnx.split((model, opt))
    self.state_sharding = parallel.state_shardings(self.state, mesh)
    self.batch_sharding = parallel.batch_sharding(mesh, ndim=2)
    self.train_step = jax.jit(self._train_step, in_shardings=(self.state_sharding,
                                                               self.batch_sharding),
                              out_shardings=(self.state_sharding, None), donate_argnums=0)
    self.restart = jax.jit(self._restart, donate_argnums=0,
                           in_shardings=(self.state_sharding, self.batch_sharding, None),
                           out_shardings=(self.state_sharding, None))
    self.eval_step = jax.jit(self._eval_step, in_shardings=(self.state_sharding,
                                                             self.batch_sharding))

  @property
  def model(self) -> RQVAE:
    return nnx.merge(self.graphdef, self.state)[0]

  def _train_step(self, state, x):
    model, opt = nnx.merge(self.graphdef, state)

    def loss_fn(model):
      _, codes, losses = model(x)
      return losses["loss"], (codes, losses)

    (_, (codes, losses)), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
    opt.update(model, grads)
    k = model.config.codebook_size
    model.usage[...] = model.usage[...] + jax.vmap(
        lambda level_codes: jnp.bincount(level_codes, length=k))(codes.T)
    return nnx.state((model, opt)), losses

  def _restart(self, state, x, key):
    """Replaces codes unused since the last restart with random current residuals."""
    model, opt = nnx.merge(self.graphdef, state)
    _, _, residuals = model.quantize(model.encoder(x))
    dead = model.usage[...] == 0
    picks = jax.random.randint(key, dead.shape, 0, x.shape[0])
    samples = jax.vmap(lambda r, p: r[p])(residuals, picks)  # [L, K, D]
    model.codebooks[...] = jnp.where(dead[..., None], samples, model.codebooks[...])
    model.usage[...] = jnp.zeros_like(model.usage[...])
    return nnx.state((model, opt)), dead.sum(axis=1)

  def _eval_step(self, state, x):
    model, _ = nnx.merge(self.graphdef, state)
    _, _, losses = model(x)
    return losses

  def put(self, x: np.ndarray) -> jax.Array:
    return jax.device_put(x, self.batch_sharding)

  def seed_codebooks(self, x: np.ndarray, key: jax.Array) -> None:
    """k-means per level on the encoded residuals of x (the recipe picks which rows and seeding)."""
    model, opt = nnx.merge(self.graphdef, self.state)
    residual = model.encoder(jnp.asarray(x))
    codebooks = []
    for level in range(model.config.num_levels):
      init = "kmeans++" if self.recipe.init == "all" else "random"
      centroids, assignment = kmeans(jax.random.fold_in(key, level), residual,
                                     model.config.codebook_size, init=init)
      codebooks.append(centroids)
      residual = residual - centroids[assignment]
    model.codebooks[...] = jnp.stack(codebooks)
    self.state = jax.device_put(nnx.state((model, opt)), self.state_sharding)

  def evaluate(self, x: np.ndarray, batch_size: int) -> dict:
    """Mean losses over x (rows padded to the data-parallel size are not counted)."""
    totals, count, dp = {}, 0, parallel.data_parallel_size(self.mesh)
    for start in range(0, len(x), batch_size):
      chunk = x[start:start + batch_size]
      usable = len(chunk) // dp * dp
      if usable == 0:
        continue
      losses = self.eval_step(self.state, self.put(chunk[:usable]))
      for name in ("loss", "recon", "quant"):
        totals[name] = totals.get(name, 0.0) + float(losses[name]) * usable
      count += usable
    return {name: value / count for name, value in totals.items()}


def split_validation(num_items: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
  order = np.random.default_rng(seed).permutation(num_items)
  n_val = int(round(fraction * num_items))
  return np.sort(order[n_val:]), np.sort(order[:n_val])


def train(c, recipe: Recipe, embeddings: np.ndarray, mesh: jax.sharding.Mesh,
          ckpt_dir: str) -> TrainResult:
  """Trains (or resumes) an RQ-VAE on the rows of `embeddings`; returns the best model."""
  train_rows, val_rows = split_validation(len(embeddings), c.val_fraction, c.seed)
  x_train, x_val = embeddings[train_rows], embeddings[val_rows]
  dp = parallel.data_parallel_size(mesh)
  batch_size = max(dp, min(c.batch_size, len(x_train)) // dp * dp)
  steps_per_epoch = max(1, len(x_train) // batch_size)
  restart_every = recipe.restart_every_epochs * steps_per_epoch
  trainer = Trainer(c, recipe, embeddings.shape[1], mesh)
  latest = checkpoint.manager(os.path.join(ckpt_dir, "latest"), max_to_keep=1)
  best = checkpoint.manager(os.path.join(ckpt_dir, "best"), max_to_keep=1, best_metric="val_loss")
  start = latest.latest_step()
  history = []
  key = jax.random.key(c.seed)
  if start is None:
    start = 0
    first = x_train[next(index_batches(len(x_train), batch_size, c.seed))]
    trainer.seed_codebooks(x_train if recipe.init == "all" else first, jax.random.fold_in(key, 1 << 30))
  else:
    trainer.state, meta = checkpoint.restore(latest, start, trainer.state, with_meta=True)
    history = meta["history"]
    console.say(f"rqvae: resuming from step {start}")
  stream = index_batches(len(x_train), batch_size, c.seed, start)
  tick = time.time()
  bar = console.Progress("rqvae", c.steps, start)
  for step in range(start, c.steps):
    trainer.state, losses = trainer.train_step(trainer.state, trainer.put(x_train[next(stream)]))
    bar.update(step + 1)
    if (step + 1) % restart_every == 0 and step + 1 < c.steps:
      batch = x_train[np.random.default_rng((c.seed, step)).choice(len(x_train), batch_size)]
      trainer.state, _ = trainer.restart(trainer.state, trainer.put(batch),
                                         jax.random.fold_in(key, step))
    if (step + 1) % c.eval_every == 0 or step + 1 == c.steps:
      val = trainer.evaluate(x_val, batch_size)
      record = {"step": step + 1, "train_loss": float(losses["loss"]),
                "train_recon": float(losses["recon"]), "val_loss": val["loss"],
                "val_recon": val["recon"], "steps_per_s": c.eval_every / (time.time() - tick)}
      history.append(record)
      logging.info("rqvae %s", record)
      bar.update(step + 1, f"val loss {val['loss']:.4f}")
      meta = {"history": history, "recipe": recipe.name}
      checkpoint.save(latest, step + 1, trainer.state, meta=meta)
      checkpoint.save(best, step + 1, trainer.state, meta=meta, metrics={"val_loss": val["loss"]})
      tick = time.time()
  bar.close()
  latest.wait_until_finished()
  best.wait_until_finished()
  best_step = best.best_step()
  trainer.state = checkpoint.restore(best, best_step, trainer.state)
  best_val = min(r["val_loss"] for r in history if r["step"] == best_step)
  latest.close()
  best.close()
  return TrainResult(trainer.model, best_step, best_val, history)
