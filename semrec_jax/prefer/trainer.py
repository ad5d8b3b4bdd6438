"""The preference step: one GRPO update from a batch of scored rollouts, jitted and sharded like
the `lm` step (the same optimizer and parameter shardings).

The model the policy is held near (the supervised one, `reference`) is its parameters only,
restored once and never updated: no second optimizer state. Each batch of rollouts makes one
update, so the policy that made them is the policy being trained: its log-probabilities enter the
ratio as constants (ratio 1, its gradient the policy gradient), and the clip matters only for
updates that reuse a batch (not done here).

With `supervised_weight` > 0 the step also keeps the supervised next-item loss: the mean
negative log-likelihood of each next-item prompt's true answer (rows "supervised_tokens" and
"supervised_mask"), weighted and added to the GRPO loss, so the policy is pulled towards what
`lm` was taught while the rewards move it.
"""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from semrec_jax import batching, parallel
from semrec_jax.lm import loss as loss_lib
from semrec_jax.lm.trainer import optimizer
from semrec_jax.models.decoder import Decoder
from semrec_jax.prefer import grpo

BATCH_KEYS = ("tokens", "mask", "advantages")
SUPERVISED_KEYS = ("supervised_tokens", "supervised_mask")


def rollout_logprobs(model: Decoder, tokens, mask, answer_len: int):
  """(log-probs [N, A], valid [N, A]): each row's first `answer_len` predicted answer tokens
  (mask 1: the rollout, not the prompt), under the whole vocabulary's softmax in float32. Rows
  are one left-aligned example each, padded with 0 (segment 0). Only the answer positions meet
  the output table: [N, A, V] logits, not [N, T, V]."""
  segment_ids = (jnp.arange(tokens.shape[1]) < jnp.sum(tokens != 0, axis=1, keepdims=True))
  segment_ids = segment_ids.astype(jnp.int32)
  hidden, _ = model.hidden(tokens, segment_ids=segment_ids)
  targets, valid = loss_lib.answer_targets(tokens, mask, segment_ids)
  order = jnp.argsort(jnp.where(valid, 0, 1), axis=1, stable=True)[:, :answer_len]
  hidden = jnp.take_along_axis(hidden, order[..., None], axis=1)
  targets = jnp.take_along_axis(targets, order, axis=1)
  valid = jnp.take_along_axis(valid, order, axis=1)
  logits = model.embedder.decode(hidden)  # float32
  picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  logp = picked - jax.nn.logsumexp(logits, axis=-1)
  return jnp.where(valid, logp, 0.0), valid


class PreferenceTrainer:
  """Owns the policy's (model, optimizer) state, the reference parameters and the compiled
  step. `c`: config.prefer (learning_rate, warmup_steps, clip_norm, weight_decay, clip,
  kl_weight, supervised_weight, micro_batches)."""

  def __init__(self, model: Decoder, c, steps: int, mesh, answer_len: int):
    self.mesh, self.c, self.answer_len = mesh, c, answer_len
    opt = nnx.Optimizer(model, optimizer(c, steps), wrt=nnx.Param)
    self.graphdef, self.state = nnx.split((model, opt))
    self.state_sharding = parallel.state_shardings(self.state, mesh)
    self.state = jax.device_put(self.state, self.state_sharding)
    params = nnx.state(model, nnx.Param)
    reference_sharding = parallel.state_shardings(params, mesh)
    self.reference = jax.device_put(jax.tree.map(jnp.copy, params), reference_sharding)
    self.supervised_weight = float(c.get("supervised_weight", 0.0))
    self.micro_batches = int(c.get("micro_batches", 1))
    self.keys = BATCH_KEYS + (SUPERVISED_KEYS if self.supervised_weight > 0 else ())
    # Every array is stacked [micro_batches, rows, ...]: rows split over the data devices.
    self.batch_sharding = {k: parallel.batch_sharding(mesh, 2 if k == "advantages" else 3,
                                                      batch_axis=1) for k in self.keys}
    self.step = jax.jit(self._step, donate_argnums=0,
                        in_shardings=(self.state_sharding, reference_sharding,
                                      self.batch_sharding),
                        out_shardings=(self.state_sharding, None))

  def _logprobs(self, model, batch, prefix=""):
    with jax.sharding.use_abstract_mesh(self.mesh.abstract_mesh):
      return rollout_logprobs(model, batch[prefix + "tokens"], batch[prefix + "mask"],
                              self.answer_len)

  def _step(self, state, reference, batch):
    """One update from micro-batches of rollouts (`lax.scan`, one micro-batch's activations
    alive at a time): the GRPO loss is a mean over rollouts and every micro-batch holds as many,
    so each contributes 1/k of it; the supervised NLL is a mean over the whole batch's taught
    tokens, counted from the masks before any forward pass."""
    model, opt = nnx.merge(self.graphdef, state)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    share = 1.0 / batch["tokens"].shape[0]  # of the GRPO loss, per micro-batch
    taught = (jnp.maximum(jnp.sum(batch["supervised_mask"]), 1).astype(jnp.float32)
              if self.supervised_weight > 0 else None)  # answer tokens of the supervised rows

    def micro_objective(p, micro):
      ref_logp, _ = self._logprobs(nnx.merge(graphdef, reference, rest), micro)
      policy = nnx.merge(graphdef, p, rest)
      logp, valid = self._logprobs(policy, micro)
      loss, metrics = grpo.clipped_objective(logp, jax.lax.stop_gradient(logp),
                                             jax.lax.stop_gradient(ref_logp),
                                             micro["advantages"], valid, self.c.clip,
                                             self.c.kl_weight)
      loss, metrics = loss * share, {k: v * share for k, v in metrics.items()}
      if self.supervised_weight > 0:
        answer, _ = self._logprobs(policy, micro, "supervised_")
        nll = -answer.sum() / taught
        loss, metrics = loss + self.supervised_weight * nll, {**metrics, "supervised_nll": nll}
      return loss, metrics

    def one(micro):
      (value, metrics), grads = jax.value_and_grad(micro_objective, has_aux=True)(params, micro)
      return (value, metrics, grads), None

    (value, metrics, grads), _ = batching.scan_sum(one, batch)
    opt.update(model, grads)
    return nnx.state((model, opt)), {"loss": value, **metrics}

  @property
  def model(self) -> Decoder:
    return nnx.merge(self.graphdef, self.state)[0]

  def put(self, batch: dict) -> dict:
    """Host arrays of the whole batch onto the mesh (one process), split into `micro_batches`
    consecutive blocks of rows."""
    missing = [k for k in self.keys if k not in batch]
    if missing:
      raise ValueError(f"the batch lacks {missing} (supervised_weight "
                       f"{self.supervised_weight} needs the supervised rows)")
    out = {}
    for k in self.keys:
      rows = np.asarray(batch[k])
      if len(rows) % self.micro_batches:
        raise ValueError(f"{len(rows)} rows of {k!r} do not split into {self.micro_batches} "
                         "micro-batches")
      out[k] = jax.device_put(rows.reshape(self.micro_batches, -1, *rows.shape[1:]),
                              self.batch_sharding[k])
    return out
