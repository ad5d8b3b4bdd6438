"""LM training: one jitted, sharded step with donation; two stages; Orbax checkpoints holding the
model, optimizer, step and grain iterator state; pre-emption safe (SIGTERM/SIGINT save first).

Stage `new_rows` trains only the new-token rows (`NewTokens` parameters), `embeddings` every
embedding table, `all` everything; frozen parameters get neither gradients nor optimizer state
(`nnx.Optimizer(..., wrt=filter)`), so they stay bit-identical.
"""

import json
import os
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax import nnx
from tensorboardX import SummaryWriter

from semrec_jax import checkpoint, parallel
from semrec_jax.lm.loss import next_token_loss
from semrec_jax.models.decoder import Decoder, NewTokens

TRAINABLE = {"new_rows": NewTokens, "embeddings": nnx.All(nnx.Param, nnx.PathContains("embedder")),
             "all": nnx.Param}


def optimizer(c, steps: int) -> optax.GradientTransformation:
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, c.learning_rate, max(1, c.warmup_steps), max(steps, c.warmup_steps + 1),
      end_value=0.1 * c.learning_rate)
  tx = optax.chain(optax.clip_by_global_norm(c.clip_norm),
                   optax.adamw(schedule, weight_decay=c.weight_decay))
  return optax.MultiSteps(tx, c.grad_accum) if c.grad_accum > 1 else tx


class LMTrainer:
  """Owns (model, optimizer) state for one training stage and its compiled step."""

  def __init__(self, model: Decoder, c, trainable: str, steps: int, mesh):
    if trainable not in TRAINABLE:
      raise ValueError(f"unknown trainable set {trainable!r}; expected {sorted(TRAINABLE)}")
    self.mesh, self.wrt = mesh, TRAINABLE[trainable]
    opt = nnx.Optimizer(model, optimizer(c, steps), wrt=self.wrt)
    self.graphdef, self.state = nnx.split((model, opt))
    self.state_sharding = parallel.state_shardings(self.state, mesh)
    self.state = jax.device_put(self.state, self.state_sharding)
    batch = parallel.batch_sharding(mesh, 2)
    self.compiles = 0
    batches = {k: batch for k in _BATCH_KEYS}
    self.step = jax.jit(self._step, donate_argnums=0,
                        in_shardings=(self.state_sharding, batches),
                        out_shardings=(self.state_sharding, None))
    self._eval_step = jax.jit(self._loss_sum, in_shardings=(self.state_sharding, batches))

  def _loss_sum(self, state, batch):
    return _batch_loss(nnx.merge(self.graphdef, state)[0], batch)

  def _step(self, state, batch):
    self.compiles += 1  # runs only while tracing: counts compilations
    model, opt = nnx.merge(self.graphdef, state)

    def loss_fn(model):
      total, count = _batch_loss(model, batch)
      return total / jnp.maximum(count, 1), count

    (loss, count), grads = nnx.value_and_grad(
        loss_fn, argnums=nnx.DiffState(0, self.wrt), has_aux=True)(model)
    opt.update(model, grads)
    return nnx.state((model, opt)), {"loss": loss, "targets": count,
                                     "tokens": jnp.sum(batch["segment_ids"] > 0),
                                     "grad_norm": optax.global_norm(grads)}

  @property
  def model(self) -> Decoder:
    return nnx.merge(self.graphdef, self.state)[0]

  def evaluate(self, batches) -> float:
    """Mean answer-token loss over finite `batches`; short batches are padded with empty rows
    (segment 0: no loss) to a multiple of the data-parallel size."""
    total, count = 0.0, 0
    dp = parallel.data_parallel_size(self.mesh)
    for batch in batches:
      pad = (-len(batch["tokens"])) % dp
      batch = {k: np.concatenate([v, np.zeros((pad,) + v.shape[1:], v.dtype)])
               for k, v in batch.items()}
      s, n = self._eval_step(self.state, self.put(batch))
      total, count = total + float(s), count + int(n)
    return total / max(count, 1)

  def put(self, batch: dict) -> dict:
    return {k: parallel.global_batch(np.asarray(batch[k], np.int32), self.mesh)
            for k in _BATCH_KEYS}


_BATCH_KEYS = ("tokens", "mask", "segment_ids", "positions")


def _batch_loss(model: Decoder, batch: dict):
  """(sum of answer-token losses, their count) of `model` on one packed batch."""
  logits = model(batch["tokens"], batch["positions"], batch["segment_ids"])
  return next_token_loss(logits, batch["tokens"], batch["mask"], batch["segment_ids"])


class _Preemption:
  """Turns SIGTERM/SIGINT into a flag the loop checks after each step."""

  def __init__(self):
    self.requested = False

  def __enter__(self):
    self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)}
    return self

  def _handle(self, signum, frame):
    del frame
    logging.warning("signal %d: saving a checkpoint, then stopping", signum)
    self.requested = True

  def __exit__(self, *exc):
    for s, handler in self._old.items():
      signal.signal(s, handler)


def train(trainer: LMTrainer, batches, steps: int, ckpt_dir: str, c, meta: dict,
          metrics_path: str, on_step=None, tensorboard_dir: str | None = None,
          step_offset: int = 0) -> dict:
  """Runs (or resumes) `steps` steps; returns {"step", "preempted"}.

  `batches` is a grain DatasetIterator; its state is saved with every checkpoint. Log lines go to
  `metrics_path` (JSON lines) and, with `tensorboard_dir`, to TensorBoard event files at global
  step `step_offset + step`. `on_step(step)` runs after each step (tests deliver signals with it).
  """
  mngr = checkpoint.manager(ckpt_dir, max_to_keep=c.keep_checkpoints)
  start = 0
  latest = mngr.latest_step()
  if latest is not None:
    trainer.state, saved = checkpoint.restore(mngr, latest, trainer.state, with_meta=True)
    batches.set_state(saved["data_iterator"])
    start = latest
    logging.info("resuming LM training at step %d", start)
  preempted = False
  writer = SummaryWriter(tensorboard_dir) if tensorboard_dir else None
  with _Preemption() as preemption, open(metrics_path, "a") as log:
    tick, tokens = time.time(), 0
    for step in range(start, steps):
      trainer.state, metrics = trainer.step(trainer.state, trainer.put(next(batches)))
      tokens += int(metrics["tokens"])
      if on_step:
        on_step(step + 1)
      done = step + 1 == steps
      if (step + 1) % c.log_every == 0 or done or preemption.requested:
        seconds = time.time() - tick
        record = {"step": step + 1, "loss": float(metrics["loss"]),
                  "grad_norm": float(metrics["grad_norm"]),
                  "tokens_per_s": round(tokens / max(seconds, 1e-9), 1)}
        log.write(json.dumps(record) + "\n")
        log.flush()
        if writer:
          for name, value in record.items():
            if name != "step":
              writer.add_scalar(f"train/{name}", value, step_offset + step + 1)
          writer.flush()
        logging.info("lm %s", record)
        tick, tokens = time.time(), 0
      if (step + 1) % c.checkpoint_every == 0 or done or preemption.requested:
        checkpoint.save(mngr, step + 1, trainer.state,
                        meta={**meta, "data_iterator": batches.get_state(), "step": step + 1})
      if preemption.requested:
        preempted = True
        break
  mngr.wait_until_finished()
  mngr.close()
  if writer:
    writer.close()
  return {"step": step + 1 if steps > start else start, "preempted": preempted}
