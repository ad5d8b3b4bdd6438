"""The GRPO step: rollout log-probs against a full forward pass, one update on a sharded mesh
against one device, and the direction an update moves the policy."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from semrec_jax import parallel
from semrec_jax.models import configs
from semrec_jax.models.decoder import Decoder
from semrec_jax.prefer.trainer import PreferenceTrainer, rollout_logprobs

VOCAB, ANSWER = 120, 4


def _model():
  return Decoder(configs.get("tiny", vocab_size=VOCAB, num_new_tokens=9, num_layers=2), nnx.Rngs(0))


def _config(**overrides):
  return ml_collections.ConfigDict({
      "learning_rate": 1e-2, "warmup_steps": 0, "clip_norm": 1.0, "weight_decay": 0.0,
      "clip": 0.2, "kl_weight": 0.04, **overrides})


def _batch(rng, rows=8):
  """Prompts of 3-9 tokens, then a 3-token answer (mask 1), left-aligned and padded with 0."""
  tokens, mask = np.zeros((rows, 16), np.int32), np.zeros((rows, 16), np.int32)
  for r in range(rows):
    n = int(rng.integers(3, 10))
    tokens[r, :n + 3] = rng.integers(1, VOCAB + 9, n + 3)
    mask[r, n:n + 3] = 1
  return {"tokens": tokens, "mask": mask,
          "advantages": rng.normal(size=rows).astype(np.float32)}


def test_rollout_logprobs_are_the_full_softmax_at_the_answer_tokens():
  model = _model()
  batch = _batch(np.random.default_rng(0))
  logp, valid = rollout_logprobs(model, jnp.asarray(batch["tokens"]), jnp.asarray(batch["mask"]),
                                 ANSWER)
  full = np.asarray(jax.nn.log_softmax(model(jnp.asarray(batch["tokens"])), axis=-1))
  for r in range(len(batch["tokens"])):
    # The answer's first token is predicted from the prompt's last: 2 of its 3 tokens follow an
    # answer token, plus that first one: 3 targets, the 4th slot empty.
    start = int(np.argmax(batch["mask"][r]))
    expected = [full[r, t - 1, batch["tokens"][r, t]] for t in range(start, start + 3)]
    assert np.asarray(valid[r]).tolist() == [True, True, True, False]
    np.testing.assert_allclose(np.asarray(logp[r, :3]), expected, atol=1e-5)
    assert float(logp[r, 3]) == 0.0


def _run(mesh, steps=2):
  trainer = PreferenceTrainer(_model(), _config(), steps, mesh, ANSWER)
  rng = np.random.default_rng(1)
  out = []
  for _ in range(steps):
    trainer.state, metrics = trainer.step(trainer.state, trainer.reference,
                                          trainer.put(_batch(rng)))
    out.append({k: float(v) for k, v in metrics.items()})
  return trainer, out


def test_sharded_step_equals_one_device_and_the_reference_stays():
  assert jax.device_count() == 8
  one, one_metrics = _run(parallel.make_mesh(devices=jax.devices()[:1]))
  many, many_metrics = _run(parallel.make_mesh(parallel.mesh_config(data=2, fsdp=2, tensor=2)))
  for a, b in zip(one_metrics, many_metrics):
    assert a == pytest.approx(b, rel=1e-4, abs=1e-6)
  assert one_metrics[0]["kl"] == 0.0 and one_metrics[1]["kl"] > 0  # the policy moved away
  flat = lambda t: np.concatenate([np.ravel(x) for x in jax.tree.leaves(nnx.state(t, nnx.Param))])
  # Adam moves a parameter by about lr * sign(grad): where a gradient is ~0, summation order on
  # the mesh can flip its sign (a few elements, each at most 2 lr * steps apart).
  diffs = np.abs(flat(one.model) - flat(many.model))
  assert np.mean(diffs > 2e-5) < 2e-3 and diffs.max() <= 2 * 1e-2 * 2
  start = flat(_model())
  np.testing.assert_array_equal(
      np.concatenate([np.ravel(x) for x in jax.tree.leaves(one.reference)]), start)
  assert np.abs(flat(one.model) - start).max() > 1e-3


def test_updates_raise_the_rollout_with_the_higher_advantage():
  mesh = parallel.make_mesh(devices=jax.devices()[:1])
  trainer = PreferenceTrainer(_model(), _config(kl_weight=0.0), 3, mesh, ANSWER)
  batch = _batch(np.random.default_rng(2), rows=2)
  batch["tokens"][1] = batch["tokens"][0]
  batch["mask"][1] = batch["mask"][0]
  start = int(np.argmax(batch["mask"][0]))
  batch["tokens"][1, start:start + 3] = (batch["tokens"][0, start:start + 3] + 1) % VOCAB + 1
  batch["advantages"] = np.array([1.0, -1.0], np.float32)  # same prompt, two answers
  logp = lambda: np.asarray(rollout_logprobs(
      trainer.model, jnp.asarray(batch["tokens"]), jnp.asarray(batch["mask"]), ANSWER)[0]).sum(1)
  before = logp()
  for _ in range(3):
    trainer.state, _ = trainer.step(trainer.state, trainer.reference, trainer.put(batch))
  after = logp()
  assert after[0] > before[0] and after[1] < before[1]


def test_the_supervised_loss_beside_grpo_is_the_taught_answers_mean_nll():
  """supervised_weight w adds w x the mean negative log-likelihood of the supervised rows' answer
  tokens (empty rows count for nothing) to the GRPO loss of the same batch."""
  mesh = parallel.make_mesh(devices=jax.devices()[:1])
  rng = np.random.default_rng(3)
  batch = _batch(rng)
  taught = _batch(rng, rows=4)
  taught["tokens"][3], taught["mask"][3] = 0, 0  # an empty row (padding to the data devices)
  batch.update(supervised_tokens=taught["tokens"], supervised_mask=taught["mask"])
  full = np.asarray(jax.nn.log_softmax(_model()(jnp.asarray(taught["tokens"])), axis=-1))
  picked = [full[r, t - 1, taught["tokens"][r, t]] for r in range(3)
            for t in np.flatnonzero(taught["mask"][r])]
  losses = {}
  for w in (0.0, 0.5):
    trainer = PreferenceTrainer(_model(), _config(supervised_weight=w), 1, mesh, ANSWER)
    _, metrics = trainer.step(trainer.state, trainer.reference, trainer.put(batch))
    losses[w] = float(metrics["loss"])
  assert float(metrics["supervised_nll"]) == pytest.approx(-np.mean(picked), rel=1e-5)
  assert losses[0.5] == pytest.approx(losses[0.0] + 0.5 * -np.mean(picked), rel=1e-5)
  with pytest.raises(ValueError, match="lacks"):
    trainer.put(_batch(rng))


def _taught_run(mesh, micro_batches, steps=2):
  trainer = PreferenceTrainer(_model(), _config(supervised_weight=0.5,
                                                micro_batches=micro_batches), steps, mesh, ANSWER)
  rng = np.random.default_rng(4)
  out = []
  for _ in range(steps):
    batch, taught = _batch(rng), _batch(rng, rows=8)
    batch.update(supervised_tokens=taught["tokens"], supervised_mask=taught["mask"])
    trainer.state, metrics = trainer.step(trainer.state, trainer.reference, trainer.put(batch))
    out.append({k: float(v) for k, v in metrics.items()})
  return trainer, out


def test_micro_batches_on_a_mesh_make_the_one_batch_update():
  """Two micro-batches on a data x fsdp x tensor mesh: the same losses, metrics and parameters
  as the whole batch on one device (the token-weighted clip fraction aside: a mean of the
  micro-batches' own fractions)."""
  one, one_metrics = _taught_run(parallel.make_mesh(devices=jax.devices()[:1]), 1)
  many, many_metrics = _taught_run(
      parallel.make_mesh(parallel.mesh_config(data=2, fsdp=2, tensor=2)), 2)
  for a, b in zip(one_metrics, many_metrics):
    del a["clipped_fraction"], b["clipped_fraction"]
    assert a == pytest.approx(b, rel=1e-4, abs=1e-6)
  assert one_metrics[1]["supervised_nll"] > 0 and one_metrics[1]["kl"] > 0
  flat = lambda t: np.concatenate([np.ravel(x) for x in jax.tree.leaves(nnx.state(t, nnx.Param))])
  diffs = np.abs(flat(one.model) - flat(many.model))
  assert np.mean(diffs > 2e-5) < 2e-3 and diffs.max() <= 2 * 1e-2 * 2
  odd = PreferenceTrainer(_model(), _config(micro_batches=3), 1,
                          parallel.make_mesh(devices=jax.devices()[:1]), ANSWER)
  with pytest.raises(ValueError, match="do not split into 3 micro-batches"):
    odd.put(_batch(np.random.default_rng(0)))
