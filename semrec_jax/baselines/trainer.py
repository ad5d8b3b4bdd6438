"""SASRec training: jitted sharded steps, early stopping on validation NDCG@10, Orbax checkpoints.

The state (model + AdamW) follows the parameters' logical axes on the mesh; each batch of user
rows is split over the data axes. Every `eval_every` steps the model ranks the whole catalog for a
fixed subset of validation users; the best checkpoint by NDCG@10 is kept for testing, the latest
for resuming, and training stops after `patience` evaluations without a better one.
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
from semrec_jax.baselines import losses
from semrec_jax.batching import index_batches
from semrec_jax.protocol import metrics
from semrec_jax.models.sasrec import CodeSASRec


def optimizer(c) -> optax.GradientTransformation:
  lr = optax.linear_schedule(0.0, c.learning_rate, max(1, c.warmup_steps))
  return optax.chain(optax.clip_by_global_norm(1.0),
                     optax.adamw(lr, b2=0.98, weight_decay=c.weight_decay))


class Trainer:
  """Owns the model/optimizer state and the compiled train and ranking functions."""

  def __init__(self, model: nnx.Module, c, mesh: jax.sharding.Mesh):
    self.c, self.mesh = c, mesh
    parallel.shard_model(model, mesh)
    opt = nnx.Optimizer(model, optimizer(c), wrt=nnx.Param)
    self.graphdef, self.state = nnx.split((model, opt))
    state_sharding = parallel.state_shardings(self.state, mesh)
    rows = parallel.batch_sharding(mesh, ndim=2)
    self.rows_sharding = rows
    self.train_step = jax.jit(self._train_step, in_shardings=(state_sharding, rows, rows, None),
                              out_shardings=(state_sharding, None), donate_argnums=0)
    self.rank_step = jax.jit(self._rank_step, in_shardings=(state_sharding, rows, rows),
                             out_shardings=(rows, rows), static_argnums=3)

  @property
  def model(self) -> nnx.Module:
    return nnx.merge(self.graphdef, self.state)[0]

  def _train_step(self, state, inputs, targets, step):
    model, opt = nnx.merge(self.graphdef, state)
    key = jax.random.fold_in(jax.random.key(self.c.seed), step)

    def loss_fn(model):
      hidden = model(inputs, rngs=nnx.Rngs(dropout=jax.random.fold_in(key, 0)))
      if isinstance(model, CodeSASRec):
        return losses.code_loss(model, hidden, targets)
      return losses.item_loss(model, hidden, targets, self.c.loss, jax.random.fold_in(key, 1),
                              self.c.negatives)

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    opt.update(model, grads)
    return nnx.state((model, opt)), loss

  def _rank_step(self, state, rows, candidates, k: int):
    """Top-k items of the whole catalog [B, k] and the scores of `candidates` [B, M]."""
    model, _ = nnx.merge(self.graphdef, state)
    scores = model.item_scores(model(rows)[:, -1]).astype(jnp.float32)
    return jax.lax.top_k(scores, k)[1], jnp.take_along_axis(scores, candidates, axis=1)

  def step(self, inputs: np.ndarray, targets: np.ndarray, step: int) -> jax.Array:
    put = lambda x: jax.device_put(x, self.rows_sharding)
    self.state, loss = self.train_step(self.state, put(inputs), put(targets),
                                       jnp.asarray(step, jnp.int32))
    return loss

  def rank(self, rows: np.ndarray, candidates: np.ndarray, k: int,
           batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(top-k items [users, k], candidate scores [users, M]) in batches over the mesh; the last
    batch is padded to a whole batch (one compiled program) and the padding dropped."""
    batch_size = max(1, batch_size // parallel.data_parallel_size(self.mesh)) * \
        parallel.data_parallel_size(self.mesh)
    tops, picked = [], []
    for start in range(0, len(rows), batch_size):
      chunk, cand = rows[start:start + batch_size], candidates[start:start + batch_size]
      n = len(chunk)
      if n < batch_size:
        chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - n, 0)])
        cand = np.concatenate([cand, np.repeat(cand[-1:], batch_size - n, 0)])
      top, scores = self.rank_step(self.state, jax.device_put(chunk, self.rows_sharding),
                                   jax.device_put(cand, self.rows_sharding), k)
      tops.append(np.asarray(top)[:n])
      picked.append(np.asarray(scores)[:n])
    return np.concatenate(tops), np.concatenate(picked)


@dataclasses.dataclass
class TrainResult:
  trainer: Trainer
  best_step: int
  history: list[dict]
  stopped_early: bool
  seconds: float  # training time summed over the interrupted runs, if any


def validation_ndcg(trainer: Trainer, rows: np.ndarray, targets: np.ndarray,
                    batch_size: int) -> float:
  top, _ = trainer.rank(rows, targets[:, None], 10, batch_size)
  return metrics.ranking_metrics(top, targets, "v", cutoffs=(10,))["v/ndcg@10"]


def train(trainer: Trainer, inputs: np.ndarray, targets: np.ndarray, val_rows: np.ndarray,
          val_targets: np.ndarray, ckpt_dir: str, name: str) -> TrainResult:
  """Trains (or resumes) until `steps` or early stopping; returns the best state in `trainer`."""
  c, started = trainer.c, time.time()
  latest = checkpoint.manager(os.path.join(ckpt_dir, "latest"), max_to_keep=1)
  best = checkpoint.manager(os.path.join(ckpt_dir, "best"), max_to_keep=1,
                            best_metric="val_ndcg@10", best_mode="max")
  start, history, stopped, before = latest.latest_step(), [], False, 0.0
  if start is None:
    start = 0
  else:
    trainer.state, meta = checkpoint.restore(latest, start, trainer.state, with_meta=True)
    history, stopped, before = meta["history"], meta["stopped_early"], meta["seconds"]
    console.say(f"{name}: resuming from step {start}")
  batch_size = min(c.batch_size, len(inputs)) // parallel.data_parallel_size(trainer.mesh) * \
      parallel.data_parallel_size(trainer.mesh)
  stream = index_batches(len(inputs), batch_size, c.seed, start)
  tick, losses_seen = time.time(), []
  bar = console.Progress(name, c.steps, start)
  for step in range(start, c.steps):
    if stopped:
      break
    rows = next(stream)
    losses_seen.append(trainer.step(inputs[rows], targets[rows], step))
    bar.update(step + 1)
    if (step + 1) % c.log_every == 0:
      rate = len(losses_seen) / (time.time() - tick)
      bar.update(step + 1, f"loss {float(losses_seen[-1]):.3f}, {rate * batch_size:,.0f} seq/s")
    if (step + 1) % c.eval_every and step + 1 != c.steps:
      continue
    ndcg = validation_ndcg(trainer, val_rows, val_targets, c.eval_batch_size)
    record = {"step": step + 1, "train_loss": round(float(np.mean(jax.device_get(losses_seen))), 5),
              "val_ndcg@10": round(ndcg, 5),
              "sequences_per_s": round(len(losses_seen) * batch_size / (time.time() - tick), 1)}
    history.append(record)
    best_so_far = max(r["val_ndcg@10"] for r in history)
    since_best = len(history) - 1 - max(i for i, r in enumerate(history)
                                        if r["val_ndcg@10"] == best_so_far)
    stopped = since_best >= c.patience
    logging.info("%s: step %d loss %.4f validation NDCG@10 %.4f (best %.4f)%s", name, step + 1,
                 record["train_loss"], ndcg, best_so_far,
                 ", stopping early" if stopped else "")
    meta = {"history": history, "stopped_early": stopped,
            "seconds": before + time.time() - started}  # over every run that trained it
    checkpoint.save(latest, step + 1, trainer.state, meta=meta)
    checkpoint.save(best, step + 1, trainer.state, meta=meta, metrics={"val_ndcg@10": ndcg})
    tick, losses_seen = time.time(), []
  bar.close()
  latest.wait_until_finished()
  best.wait_until_finished()
  best_step = best.best_step()
  trainer.state = checkpoint.restore(best, best_step, trainer.state)
  latest.close()
  best.close()
  return TrainResult(trainer, best_step, history, stopped, before + time.time() - started)
