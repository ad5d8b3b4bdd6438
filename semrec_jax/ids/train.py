"""RQ-VAE training: data-parallel jitted steps, k-means seeding, dead-code restarts, Orbax.

Batches come from a grain pipeline over item indices (semrec_jax.batching: a resumed run sees the
same batches); the training embeddings stay on the device and each step takes only its row
indices. The state (model + optimizer) is replicated and each batch is split over the mesh's data
axes. Each step also keeps an exponential moving average of every code's share of the batch;
every `reset_every` steps the codes whose average share is below `reset_threshold` x the uniform
1/K move to random residuals of that step's batch (all inside the compiled step: no host sync).
Checkpoints: the latest (for resuming) and the best by validation loss (for assignment).
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

from semrec_jax import batching, checkpoint, console, parallel
from semrec_jax.batching import index_batches
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
    if not 0 <= c.usage_decay < 1:
      raise ValueError(f"config.ids.usage_decay must be in [0, 1), got {c.usage_decay}")
    model = RQVAE(model_config(c, recipe, input_dim), nnx.Rngs(c.seed))
    parallel.shard_model(model, mesh)
    opt = nnx.Optimizer(model, optimizer(recipe, c.steps), wrt=nnx.Param)
    self.graphdef, state = nnx.split((model, opt))
    self.state_sharding = parallel.state_shardings(state, mesh)
    # All of it on the mesh (the optimizer's counters too), so the step compiles once.
    self.state = jax.device_put(state, self.state_sharding)
    self.batch_sharding = parallel.batch_sharding(mesh, ndim=2)
    self.rows_sharding = parallel.batch_sharding(mesh, ndim=1)
    step_out = (self.state_sharding, None)
    self.train_step = jax.jit(self._train_step, in_shardings=(self.state_sharding,
                                                               self.batch_sharding),
                              out_shardings=step_out, donate_argnums=0)
    self.train_rows = jax.jit(self._train_rows, in_shardings=(
        self.state_sharding, parallel.replicated(mesh), self.rows_sharding),
                              out_shardings=step_out, donate_argnums=0)
    self.eval_step = jax.jit(self._eval_step, in_shardings=(self.state_sharding,
                                                             self.batch_sharding))

  @property
  def model(self) -> RQVAE:
    return nnx.merge(self.graphdef, self.state)[0]

  def chunks(self, batch_size: int) -> int:
    """How many microbatches a step of `batch_size` rows runs in (see `grads_in_chunks`)."""
    if jax.default_backend() != "cpu" or not self.c.cpu_microbatch:
      return 1
    dp, least = parallel.data_parallel_size(self.mesh), -(-batch_size // self.c.cpu_microbatch)
    return next((n for n in range(least, 4 * least + 1)
                 if batch_size % n == 0 and batch_size // n % dp == 0), 1)

  def _train_step(self, state, x, fetch=lambda x: x):
    """A step on the batch x [B, D] (or on `fetch(x)`, see `_train_rows`)."""
    model, opt = nnx.merge(self.graphdef, state)
    chunks = microbatches(x, self.chunks(x.shape[0]))
    grads, codes, residuals, losses = grads_in_chunks(model, chunks, fetch)
    opt.update(model, grads)
    losses["reset"] = self._track_usage(model, opt.step[...], codes, residuals)
    return nnx.state((model, opt)), losses

  def _train_rows(self, state, data, rows):
    """A step on rows `rows` of the device-resident `data` (no batch crosses from the host;
    each microbatch gathers its own rows)."""
    return self._train_step(state, rows, fetch=lambda r: data[r])

  def _track_usage(self, model: RQVAE, step: jax.Array, codes: jax.Array,
                   residuals: jax.Array) -> jax.Array:
    """Updates the usage EMA after step `step` (1-based); on a reset step (a multiple of
    `reset_every` before the last), codes whose average share of the batch is below
    `reset_threshold` / K take random rows of this batch's `residuals` [L, B, D] and restart their
    EMA from 0. Returns the mask of codes reset [L, K]."""
    c, (levels, k) = self.c, model.usage.shape
    share = jax.vmap(lambda level: jnp.bincount(level, length=k))(codes.T) / codes.shape[0]
    usage = c.usage_decay * model.usage[...] + (1 - c.usage_decay) * share
    average = usage / (1 - c.usage_decay ** step.astype(jnp.float32))
    due = (c.reset_every > 0) & (step % max(c.reset_every, 1) == 0) & (step < c.steps)
    dead = due & (average * k < c.reset_threshold)
    picks = jax.random.randint(jax.random.fold_in(jax.random.key(c.seed), step), (levels, k), 0,
                               codes.shape[0])
    samples = jnp.take_along_axis(residuals, picks[..., None], axis=1)  # [L, K, D]
    model.codebooks[...] = jnp.where(dead[..., None], samples, model.codebooks[...])
    model.usage[...] = jnp.where(dead, 0.0, usage)
    return dead

  def _eval_step(self, state, x):
    model, _ = nnx.merge(self.graphdef, state)
    _, _, losses = model(x)
    return losses

  def put(self, x: np.ndarray) -> jax.Array:
    return jax.device_put(x, self.batch_sharding)

  def put_data(self, x: np.ndarray) -> jax.Array:
    """Training embeddings, replicated on every device once, for `train_rows`."""
    return jax.device_put(x, parallel.replicated(self.mesh))

  def put_rows(self, rows: np.ndarray) -> jax.Array:
    return jax.device_put(np.asarray(rows, np.int32), self.rows_sharding)

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


def microbatches(x: jax.Array, chunks: int) -> jax.Array:
  """[B, ...] -> [chunks, B / chunks, ...]: microbatch i holds rows i, i + chunks, i + 2 chunks...
  (so under data parallelism each device keeps its share of every microbatch)."""
  return x.reshape(x.shape[0] // chunks, chunks, *x.shape[1:]).swapaxes(0, 1)


def grads_in_chunks(model: RQVAE, chunks: jax.Array, fetch=lambda x: x):
  """Gradients of the mean loss over a batch split into microbatches (`microbatches`), summed
  by a scan over `chunks` [n, ...]; `fetch` maps one slice of it to its embeddings [B / n, D].

  Returns (grads, codes [B, L], residuals [L, B, D], mean losses), rows in the batch's order.
  The same gradient as one pass over the batch (every loss is a mean over rows), up to float
  summation order. Why: on a CPU, XLA maps and unmaps a step's temporary buffer on every call
  (~170 MB at batch 8192, so ~40k page faults a step); microbatches of ~1k rows keep it under the
  allocator's mmap threshold, and their activations in cache.
  """
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  def grads(x):
    def loss_fn(params):
      _, codes, residuals, losses = nnx.merge(graphdef, params, rest).forward(x)
      return losses["loss"], (codes, residuals, losses)
    (_, aux), g = jax.value_and_grad(loss_fn, has_aux=True)(params)
    return g, aux

  n = chunks.shape[0]
  total, (codes, residuals, losses) = batching.scan_sum(lambda chunk: grads(fetch(chunk)),
                                                         chunks)
  rows = n * codes.shape[1]
  codes = codes.swapaxes(0, 1).reshape(rows, -1)  # back to the batch's row order
  residuals = residuals.transpose(1, 2, 0, 3).reshape(residuals.shape[1], rows, -1)
  return (jax.tree.map(lambda g: g / n, total), codes, residuals,
          jax.tree.map(lambda v: v.mean(0), losses))


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
  trainer = Trainer(c, recipe, embeddings.shape[1], mesh)
  latest = checkpoint.manager(os.path.join(ckpt_dir, "latest"), max_to_keep=1)
  best = checkpoint.manager(os.path.join(ckpt_dir, "best"), max_to_keep=1, best_metric="val_loss")
  start = latest.latest_step()
  history = []
  key = jax.random.key(c.seed)
  if start is None:
    start = 0
    first = x_train[next(index_batches(len(x_train), batch_size, c.seed))]
    trainer.seed_codebooks(x_train if recipe.init == "all" else first,
                           jax.random.fold_in(key, 1 << 30))
  else:
    trainer.state, meta = checkpoint.restore(latest, start, trainer.state, with_meta=True)
    history = meta["history"]
    console.say(f"rqvae: resuming from step {start}")
  stream = index_batches(len(x_train), batch_size, c.seed, start)
  data = trainer.put_data(x_train)
  tick, resets = time.time(), []
  bar = console.Progress("rqvae", c.steps, start)
  for step in range(start, c.steps):
    trainer.state, losses = trainer.train_rows(trainer.state, data, trainer.put_rows(next(stream)))
    bar.update(step + 1)
    if c.reset_every > 0 and (step + 1) % c.reset_every == 0 and step + 1 < c.steps:
      resets.append(np.asarray(losses["reset"]).sum(axis=1).tolist())
      logging.info("rqvae step %d: codes reset per level %s", step + 1, resets[-1])
    if (step + 1) % c.eval_every == 0 or step + 1 == c.steps:
      val = trainer.evaluate(x_val, batch_size)
      record = {"step": step + 1, "train_loss": float(losses["loss"]),
                "train_recon": float(losses["recon"]), "val_loss": val["loss"],
                "val_recon": val["recon"], "codes_reset": [sum(r) for r in zip(*resets)] or
                [0] * c.levels, "steps_per_s": c.eval_every / (time.time() - tick)}
      resets = []
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
