"""LM training: one jitted, sharded step with donation; two stages; Orbax checkpoints holding the
model, optimizer, step and grain iterator state; pre-emption safe (a stop signal saves first).
A step is one update, of one batch or of `grad_accum` micro-batches (token-weighted), and its loss
is the chunked cross-entropy of `lm/loss.py` (no [batch, seq, vocab] logits).

Stage `new_rows` trains only the new-token rows (`NewTokens` parameters), `embeddings` every
embedding table, `all` everything; frozen parameters get neither gradients nor optimizer state
(`nnx.Optimizer(..., wrt=filter)`), so they stay bit-identical.
"""

import json
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax import nnx
from tensorboardX import SummaryWriter

from semrec_jax import batching, checkpoint, console, multihost, parallel, storage
from semrec_jax.lm import loss
from semrec_jax.lm.input_pipeline import BATCH_KEYS
from semrec_jax.models import attention, flops
from semrec_jax.models.decoder import Decoder, NewTokens

TRAINABLE = {"new_rows": NewTokens, "embeddings": nnx.All(nnx.Param, nnx.PathContains("embedder")),
             "all": nnx.Param}


def _is_norm_scale(path) -> bool:
  """Whether a parameter path ends at an RMSNorm scale (a vector, or a stack of them under the
  scanned groups: the rank alone cannot tell them from a matrix)."""
  return any(getattr(k, "key", getattr(k, "name", None)) == "scale" for k in path)


def optimizer(c, steps: int) -> optax.GradientTransformation:
  """AdamW for `steps` updates: linear warmup, cosine decay, global-norm clipping. Weight decay
  applies to matrices only (norm scales are left alone, as Gemma and Llama were trained).
  config.lm.adam_mu_dtype='bfloat16' keeps the first moment in bfloat16 (a quarter less optimizer
  state; the second moment stays float32, where bfloat16's 8 bits of mantissa would bias it)."""
  warmup = max(1, c.warmup_steps)
  # Linear warmup from lr/warmup (not 0: the first update already learns) to lr, then cosine.
  schedule = optax.warmup_cosine_decay_schedule(
      c.learning_rate / warmup, c.learning_rate, warmup, max(steps, warmup + 1),
      end_value=0.1 * c.learning_rate)
  decayed = lambda params: jax.tree_util.tree_map_with_path(
      lambda path, _: not _is_norm_scale(path), params)
  mu_dtype = c.get("adam_mu_dtype", "float32")
  if mu_dtype not in ("float32", "bfloat16"):
    raise ValueError(f"config.lm.adam_mu_dtype={mu_dtype!r}: expected float32 or bfloat16")
  return optax.chain(optax.clip_by_global_norm(c.clip_norm),
                     optax.adamw(schedule, weight_decay=c.weight_decay, mask=decayed,
                                 mu_dtype=jnp.dtype(mu_dtype)))


class LMTrainer:
  """Owns (model, optimizer) state for one training stage and its compiled step.

  Given an abstract model (`nnx.eval_shape`), the state stays abstract (shapes, dtypes and
  shardings, no arrays): enough to AOT-compile the step for devices this machine does not have
  (`python -m semrec_jax.aot`).
  """

  def __init__(self, model: Decoder, c, trainable: str, steps: int, mesh):
    if trainable not in TRAINABLE:
      raise ValueError(f"unknown trainable set {trainable!r}; expected {sorted(TRAINABLE)}")
    self.mesh, self.wrt = mesh, TRAINABLE[trainable]
    self.model_config = model.config
    abstract = isinstance(jax.tree.leaves(nnx.state(model))[0], jax.ShapeDtypeStruct)
    make_optimizer = lambda: nnx.Optimizer(model, optimizer(c, steps), wrt=self.wrt)
    opt = nnx.eval_shape(make_optimizer) if abstract else make_optimizer()
    self.graphdef, self.state = nnx.split((model, opt))
    self.state_sharding = parallel.state_shardings(self.state, mesh)
    if abstract:
      self.state = jax.tree.map(
          lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), self.state,
          self.state_sharding)
    else:
      self.state = jax.device_put(self.state, self.state_sharding)
    self.accumulate = c.grad_accum
    self.loss_chunk_config = c.get("loss_token_chunk", 0)
    self.loss_kernel = c.get("loss_kernel", "xla")
    micro = parallel.batch_sharding(mesh, 2)
    stacked = parallel.batch_sharding(mesh, 3, batch_axis=1)
    self.compiles = 0
    steps_in = {k: stacked if self.accumulate > 1 else micro for k in BATCH_KEYS}
    self.step = jax.jit(self._step, donate_argnums=0,
                        in_shardings=(self.state_sharding, steps_in),
                        out_shardings=(self.state_sharding, None))
    self._eval_step = jax.jit(self._loss_sum,
                              in_shardings=(self.state_sharding, {k: micro for k in BATCH_KEYS}))

  def _batch_loss(self, model: Decoder, batch: dict):
    """(sum of answer-token losses, their count) of `model` on one packed batch, traced under
    the mesh so the model's activation sharding constraints apply."""
    with jax.sharding.use_abstract_mesh(self.mesh.abstract_mesh):
      return loss.decoder_loss(model, batch, self.loss_token_chunk(*batch["tokens"].shape),
                               self.loss_kernel)

  def loss_token_chunk(self, rows: int, length: int) -> int:
    """Answer positions per row in a chunk of the loss for [rows, length] micro-batches: the
    config's, or (0) sized for the mesh's platform, each device's rows and the vocabulary."""
    if self.loss_chunk_config:
      return self.loss_chunk_config
    with jax.sharding.use_abstract_mesh(self.mesh.abstract_mesh):
      platform = attention.platform()
    return loss.auto_token_chunk(rows // parallel.data_parallel_size(self.mesh), length,
                                 self.model_config.output_vocab_size, platform)

  def _loss_sum(self, state, batch):
    return self._batch_loss(nnx.merge(self.graphdef, state)[0], batch)

  def _step(self, state, batch):
    """One update from one batch, or (grad_accum > 1) from a stack of micro-batches [k, rows,
    seq]: each micro-batch's loss sum is scaled by 1 / (answer tokens in the whole batch) and
    the losses and gradients are added over the micro-batches (`lax.scan`), so every answer token
    weighs the same as in one batch of their union. The logged grad norm is the one clipping sees."""
    self.compiles += 1  # runs only while tracing: counts compilations
    model, opt = nnx.merge(self.graphdef, state)
    graphdef, trained, rest = nnx.split(model, self.wrt, ...)
    micro = batch if self.accumulate > 1 else jax.tree.map(lambda x: x[None], batch)
    # The answer-token count is known from the masks before any forward pass, so 1/count scales
    # the loss itself: the gradients come out as means, with no pass over them afterwards.
    rows = lambda x: x.reshape(-1, x.shape[-1])
    _, valid = loss.answer_targets(rows(micro["tokens"]), rows(micro["mask"]),
                                   rows(micro["segment_ids"]))
    count = jnp.sum(valid)
    scale = 1.0 / jnp.maximum(count, 1).astype(jnp.float32)

    def mean_part(p, b):
      total, _ = self._batch_loss(nnx.merge(graphdef, p, rest), b)
      return total * scale

    mean, grads = batching.scan_sum(lambda b: (jax.value_and_grad(mean_part)(trained, b), None),
                                    micro)[0]
    opt.update(model, grads)
    return nnx.state((model, opt)), {"loss": mean, "targets": count,
                                     "tokens": jnp.sum(batch["segment_ids"] > 0),
                                     "grad_norm": optax.tree.norm(grads)}

  @property
  def model(self) -> Decoder:
    return nnx.merge(self.graphdef, self.state)[0]

  def evaluate(self, batches: list[dict]) -> float:
    """Mean answer-token loss over this process's `batches` together with every other
    process's. All processes run the same number of steps on equal shapes: batches are padded
    with empty rows (segment 0: no loss) and a process with fewer batches adds empty ones."""
    share = max(1, parallel.data_parallel_size(self.mesh) // parallel.input_shard(self.mesh)[1])
    steps, rows, width = multihost.max_over_processes(
        [len(batches), max([len(b["tokens"]) for b in batches], default=0),
         max([b["tokens"].shape[1] for b in batches], default=1)]).tolist()
    rows = -(-rows // share) * share
    total, count = 0.0, 0
    for i in range(steps):
      batch = {k: np.zeros((rows, width), np.int32) for k in BATCH_KEYS}
      if i < len(batches):
        for k in BATCH_KEYS:
          given = batches[i][k]
          batch[k][:given.shape[0], :given.shape[1]] = given
      s, n = self._eval_step(self.state, self.put(batch))
      total, count = total + float(s), count + int(n)
    return total / max(count, 1)

  def put(self, batch: dict) -> dict:
    """This process's rows -> global arrays on the mesh: one batch [rows, seq], or grad_accum
    micro-batches stacked [k, rows, seq] for one accumulating step."""
    return {k: parallel.global_batch(np.asarray(batch[k], np.int32), self.mesh,
                                     batch_axis=np.ndim(batch[k]) - 2) for k in BATCH_KEYS}


class _Preemption:
  """Stops training at a step every process agrees on, with a checkpoint.

  One process: SIGTERM and SIGINT set a flag checked after every step. Several processes: SIGTERM
  is left to JAX's preemption service (the notice a Cloud TPU or a cluster scheduler sends), read
  through Orbax's sync point, which costs no collective per step; a Ctrl-C (SIGINT) on one
  process is agreed on by an all-gather every `check_every` steps.
  """

  def __init__(self, mngr, check_every: int):
    self.mngr, self.check_every = mngr, max(1, check_every)
    self.signalled = False
    self.single = jax.process_count() == 1

  def __enter__(self):
    signals = (signal.SIGTERM, signal.SIGINT) if self.single else (signal.SIGINT,)
    self._old = {s: signal.signal(s, self._handle) for s in signals}
    return self

  def _handle(self, signum, frame):
    del frame
    logging.warning("signal %d: saving a checkpoint, then stopping", signum)
    self.signalled = True

  def requested(self, step: int) -> bool:
    if self.single:
      return self.signalled
    if self.mngr.reached_preemption(step):
      return True
    return step % self.check_every == 0 and bool(
        multihost.max_over_processes(np.int32(self.signalled)))

  def __exit__(self, *exc):
    for s, handler in self._old.items():
      signal.signal(s, handler)


class _Log:
  """Records to metrics.jsonl and TensorBoard, written by process 0 only."""

  def __init__(self, metrics_path: str, tensorboard_dir: str | None, step_offset: int):
    self.active = multihost.is_primary()
    self.offset = step_offset
    self.file = storage.Appender(metrics_path) if self.active else None
    self.events = storage.Mirror(tensorboard_dir) if self.active and tensorboard_dir else None
    self.writer = SummaryWriter(self.events.local) if self.events else None

  def write(self, record: dict, prefix: str) -> None:
    logging.info("lm %s", record)  # the log file; the terminal shows a progress bar
    if not self.active:
      return
    self.file.write(json.dumps(record) + "\n")
    self.file.flush()
    if self.writer:
      for name, value in record.items():
        if name not in ("step", "stage") and value is not None:
          self.writer.add_scalar(name if "/" in name else f"{prefix}/{name}", value,
                                 self.offset + record["step"])
      self.writer.flush()

  def sync(self) -> None:
    """Copies new tensorboard events up to a remote workdir (at checkpoints, not every line)."""
    if self.events:
      self.events.sync()

  def close(self) -> None:
    if self.active:
      self.file.close()
      if self.writer:
        self.writer.close()
        self.events.close()


def train(trainer: LMTrainer, batches, steps: int, ckpt_dir: str, c, meta: dict,
          metrics_path: str, on_step=None, tensorboard_dir: str | None = None,
          step_offset: int = 0, evaluate=None) -> dict:
  """Runs (or resumes) `steps` steps (updates); returns {"step", "preempted", "heldout"}.

  `batches` is a grain DatasetIterator of one step's input each (host arrays of this process's
  rows, or global arrays already on the devices: `input_pipeline.training_batches`); its state is saved
  with every checkpoint. Log lines
  (loss, grad norm, tokens/s, step time, model TFLOP/s per device and MFU on accelerators) go to
  `metrics_path` (JSON lines) and, with `tensorboard_dir`, to TensorBoard event files at global
  step `step_offset + step`. `evaluate()` -> {"heldout/<task>": loss} runs every c.eval_every
  steps and at the end; its last result is returned. `on_step(step)` runs after each step (tests
  deliver signals with it).
  """
  mngr = checkpoint.manager(ckpt_dir, max_to_keep=c.keep_checkpoints)
  start = 0
  latest = mngr.latest_step()
  if latest is not None:
    trainer.state, saved = checkpoint.restore(mngr, latest, trainer.state, with_meta=True,
                                              data_iterator=batches)
    if saved.get("tokenizer") != meta.get("tokenizer"):
      raise ValueError(f"checkpoint {ckpt_dir}/{latest} was trained with tokenizer "
                       f"{saved.get('tokenizer')}, this run has {meta.get('tokenizer')}; "
                       "resume with the same tokenizer or start a new run (--overwrite)")
    start = latest
    console.say(f"lm {meta.get('stage', '')}: resuming at step {start}")
  preempted, heldout = False, None
  bar = console.Progress(f"lm {meta.get('stage', '')}".strip(), steps, start)
  log = _Log(metrics_path, tensorboard_dir, step_offset)
  tag = {"stage": meta["stage"]} if "stage" in meta else {}
  eval_every = c.get("eval_every", 0)
  with _Preemption(mngr, c.get("preemption_check_every", 10)) as preemption:
    # Token counts stay on the device until a log line needs them, so steps are not synced.
    tick, token_counts = time.time(), []
    for step in range(start, steps):
      batch = next(batches)
      if not isinstance(batch["tokens"], jax.Array):  # host arrays: this process's rows
        batch = trainer.put(batch)
      trainer.state, metrics = trainer.step(trainer.state, batch)
      token_counts.append(metrics["tokens"])
      if on_step:
        on_step(step + 1)
      done, stop = step + 1 == steps, preemption.requested(step + 1)
      if (step + 1) % c.log_every == 0 or done or stop:
        loss = float(metrics["loss"])  # waits for the step
        elapsed = max(time.time() - tick, 1e-9)
        seconds = elapsed / len(token_counts)
        tokens_per_s = sum(int(n) for n in token_counts) / elapsed
        log.write({**tag, "step": step + 1, "loss": loss,
                   "grad_norm": float(metrics["grad_norm"]), "step_s": round(seconds, 4),
                   "tokens_per_s": round(tokens_per_s, 1),
                   **flops.utilisation(trainer.model_config,
                                       batch["tokens"].size // batch["tokens"].shape[-1],
                                       batch["tokens"].shape[-1], seconds)},
                  "train")
        bar.update(step + 1, f"loss {loss:.3f}, {tokens_per_s:,.0f} tokens/s")
        tick, token_counts = time.time(), []
      if evaluate and ((eval_every and (step + 1) % eval_every == 0) or done):
        evaluation_start = time.time()
        heldout = evaluate()
        log.write({**tag, "step": step + 1, **heldout}, "heldout")
        tick += time.time() - evaluation_start  # evaluation time is not training time
      if (step + 1) % c.checkpoint_every == 0 or done or stop:
        checkpoint.save(mngr, step + 1, trainer.state, meta={**meta, "step": step + 1},
                        data_iterator=batches)
        log.sync()
      if stop:
        preempted = True
        break
  mngr.wait_until_finished()
  mngr.close()
  log.close()
  bar.close()
  return {"step": step + 1 if steps > start else start, "preempted": preempted,
          "heldout": heldout}
