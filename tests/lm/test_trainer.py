"""LM training steps: frozen parameters, compile-once, sharding parity, pre-emption and resume."""

import json
import os
import shutil
import signal

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from semrec_jax import parallel
from semrec_jax.lm import fitting, input_pipeline, tasks
from semrec_jax.lm import trainer as trainer_lib
from semrec_jax.models import configs
from semrec_jax.models.decoder import Decoder, NewTokens


def lm_config(**overrides):
  c = ml_collections.ConfigDict({
      "learning_rate": 3e-3, "warmup_steps": 2, "clip_norm": 1.0, "weight_decay": 0.01,
      "grad_accum": 1, "log_every": 1, "checkpoint_every": 2, "keep_checkpoints": 2})
  c.update(overrides)
  return c


def batches(data, tokenizer):
  sources = tasks.sources(data["split"]["train"], data["items"], data["sids"], 20, seed=0,
                          budget=fitting.Budget(tokenizer, 128))
  stream = input_pipeline.mixture(sources, {"next_item": 2, "text_to_sid": 1, "sid_to_text": 1}, 0,
                            tokenizer, 128)
  return iter(input_pipeline.packed_batches(stream, 128, 8))


def model_for(tokenizer, seed=0, dtype=jnp.float32):
  config = configs.get("tiny", vocab_size=tokenizer.vocab_size, num_layers=2, embed_dim=128,
                       mlp_dim=256, num_heads=2, head_dim=32)
  return Decoder(config, nnx.Rngs(seed), dtype=dtype)


def _params(model, kind=nnx.Param):
  return jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, kind)))


def test_new_rows_stage_freezes_everything_else(data, tokenizer):
  model = model_for(tokenizer)
  frozen = _params(model, nnx.Not(NewTokens))
  new_before = _params(model, NewTokens)
  trainer = trainer_lib.LMTrainer(model, lm_config(), "new_rows", 10, parallel.make_mesh())
  assert trainer.loss_token_chunk(8, 128) == 64  # no loss_token_chunk: auto, 64 per row on CPUs
  it = batches(data, tokenizer)
  for _ in range(3):
    trainer.state, metrics = trainer.step(trainer.state, trainer.put(next(it)))
  assert trainer.compiles == 1
  jax.tree.map(np.testing.assert_array_equal, _params(trainer.model, nnx.Not(NewTokens)), frozen)
  moved = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), _params(trainer.model, NewTokens),
                       new_before)
  assert max(jax.tree.leaves(moved)) > 0
  _, opt = nnx.merge(trainer.graphdef, trainer.state)
  adam_sizes = sum(x.size for x in jax.tree.leaves(nnx.state(opt, nnx.optimizer.OptState)))
  new_size = sum(x.size for x in jax.tree.leaves(new_before))
  assert adam_sizes <= 2 * new_size + 8  # mu and nu for the new rows only, plus counters


def test_sharded_step_matches_single_device(data, tokenizer):
  it = batches(data, tokenizer)
  batch = next(it)
  results = []
  for mesh in (parallel.make_mesh(parallel.mesh_config(data=2, fsdp=2, tensor=2)),
               parallel.make_mesh(devices=jax.devices()[:1])):
    trainer = trainer_lib.LMTrainer(model_for(tokenizer), lm_config(), "all", 10, mesh)
    trainer.state, metrics = trainer.step(trainer.state, trainer.put(batch))
    results.append((float(metrics["loss"]), float(metrics["grad_norm"]),
                    _params(trainer.model)))
  (loss, grad_norm, sharded), (loss1, grad_norm1, single) = results
  assert loss == pytest.approx(loss1, rel=1e-5)
  assert grad_norm == pytest.approx(grad_norm1, rel=1e-4)
  # Adam's first step moves every parameter by about lr * sign(grad); a gradient that is ~0 in
  # both runs may differ in sign by rounding, so allow that for a handful of entries.
  lr = lm_config().learning_rate
  diffs = np.concatenate([np.abs(a - b).ravel() for a, b in zip(jax.tree.leaves(sharded),
                                                                jax.tree.leaves(single))])
  assert np.mean(diffs > 1e-5) < 1e-3 and diffs.max() <= 2 * lr
  moved = np.concatenate([np.abs(a - b).ravel() for a, b in zip(
      jax.tree.leaves(sharded), jax.tree.leaves(_params(model_for(tokenizer))))])
  assert np.median(moved) > 0.1 * lr  # the step really changed the parameters


def test_bfloat16_activations_keep_float32_parameters(data, tokenizer):
  batch = next(batches(data, tokenizer))
  losses = {}
  for dtype in (jnp.float32, jnp.bfloat16):
    trainer = trainer_lib.LMTrainer(model_for(tokenizer, dtype=dtype), lm_config(), "all", 10,
                                    parallel.make_mesh())
    for _ in range(2):
      trainer.state, metrics = trainer.step(trainer.state, trainer.put(batch))
    losses[dtype] = float(metrics["loss"])
    assert {x.dtype for x in jax.tree.leaves(_params(trainer.model))} == {np.dtype("float32")}
  assert losses[jnp.bfloat16] == pytest.approx(losses[jnp.float32], rel=2e-2)


def test_accumulated_micro_batches_equal_one_batch_of_their_union(data, tokenizer):
  """Micro-batches with different answer-token counts: the accumulating step weighs every
  answer token alike, exactly as one step on the concatenated batch (optax.MultiSteps would
  average the micro-batch means instead)."""
  it = batches(data, tokenizer)
  parts = [next(it), next(it)]
  counts = [int(((p["mask"][:, 1:] > 0) & (p["segment_ids"][:, 1:] > 0)).sum()) for p in parts]
  parts[1]["mask"][4:] = 0  # the second micro-batch keeps about half its answer tokens
  counts[1] = int(((parts[1]["mask"][:, 1:] > 0) & (parts[1]["segment_ids"][:, 1:] > 0)).sum())
  assert counts[1] < 0.7 * counts[0]
  union = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
  results = []
  stacked = {k: np.stack([p[k] for p in parts]) for k in parts[0]}
  for accumulate, batch in ((2, stacked), (1, union)):
    trainer = trainer_lib.LMTrainer(model_for(tokenizer), lm_config(grad_accum=accumulate),
                                    "all", 8, parallel.make_mesh())
    trainer.state, metrics = trainer.step(trainer.state, trainer.put(batch))
    results.append((float(metrics["loss"]), float(metrics["grad_norm"]),
                    int(metrics["targets"]), _params(trainer.model)))
  (loss, norm, targets, params), (loss1, norm1, targets1, params1) = results
  assert targets == targets1 and loss == pytest.approx(loss1, rel=1e-5)
  assert norm == pytest.approx(norm1, rel=1e-4)
  # Adam's first step moves each parameter by about lr * sign(grad): where a gradient is ~0 the
  # two summation orders may round to different signs, so allow that for a handful of entries.
  diffs = np.concatenate([np.abs(a - b).ravel() for a, b in zip(jax.tree.leaves(params),
                                                                jax.tree.leaves(params1))])
  assert np.mean(diffs > 1e-5) < 1e-4 and diffs.max() <= 2 * lm_config().learning_rate


def test_weight_decay_leaves_norm_scales_alone(data, tokenizer):
  """With a zero learning-rate gradient signal removed (clip 0 makes every update pure decay),
  matrices shrink and norm scales do not move."""
  model = model_for(tokenizer)
  before = _params(model)
  c = lm_config(clip_norm=0.0, weight_decay=0.5, warmup_steps=1)
  trainer = trainer_lib.LMTrainer(model, c, "all", 4, parallel.make_mesh())
  trainer.state, _ = trainer.step(trainer.state, trainer.put(next(batches(data, tokenizer))))
  after = _params(trainer.model)
  first = lambda p: p["groups"]["blocks"][0]  # stacked over the scanned groups
  for scales in (lambda p: p["final_norm"]["scale"],
                 lambda p: first(p)["pre_attention_norm"]["scale"]):  # [groups, dim]
    assert np.abs(scales(after) - scales(before)).max() == 0
  q0, q1 = first(before)["attention"]["q"], first(after)["attention"]["q"]
  np.testing.assert_allclose(q1, q0 * (1 - 0.5 * c.learning_rate / 1), rtol=1e-5)


def _run(tmp, data, tokenizer, steps, kill_at=None):
  trainer = trainer_lib.LMTrainer(model_for(tokenizer), lm_config(), "all", steps,
                                  parallel.make_mesh())
  on_step = (lambda s: os.kill(os.getpid(), signal.SIGTERM) if s == kill_at else None)
  out = trainer_lib.train(trainer, batches(data, tokenizer), steps, str(tmp / "ckpt"),
                          lm_config(), {"tokenizer": tokenizer.fingerprint()},
                          str(tmp / "metrics.jsonl"), on_step=on_step)
  return out, trainer


def test_sigterm_then_resume_matches_an_uninterrupted_run(tmp_path, data, tokenizer):
  full, full_trainer = _run(tmp_path / "full", data, tokenizer, 6)
  assert (full["step"], full["preempted"]) == (6, False)
  killed, _ = _run(tmp_path / "cut", data, tokenizer, 6, kill_at=3)
  assert (killed["step"], killed["preempted"]) == (3, True)
  # A later save that a kill cut short leaves Orbax's temporary folder (a step folder appears
  # only when complete): Orbax removes it and the run resumes from step 3.
  ckpt = tmp_path / "cut" / "ckpt"
  shutil.copytree(ckpt / "3", ckpt / "4.orbax-checkpoint-tmp-1")
  resumed, resumed_trainer = _run(tmp_path / "cut", data, tokenizer, 6)
  assert (resumed["step"], resumed["preempted"]) == (6, False)
  assert sorted(os.listdir(ckpt)) == ["4", "6"]  # the real step 4, then 6
  trainer = trainer_lib.LMTrainer(model_for(tokenizer), lm_config(), "all", 8,
                                  parallel.make_mesh())
  with pytest.raises(ValueError, match="tokenizer"):
    trainer_lib.train(trainer, batches(data, tokenizer), 8, str(ckpt), lm_config(),
                      {"tokenizer": "another"}, str(tmp_path / "other.jsonl"))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6),
               _params(resumed_trainer.model), _params(full_trainer.model))

  def curve(folder):
    with open(folder / "metrics.jsonl") as f:
      return [(r["step"], round(r["loss"], 5)) for r in map(json.loads, f)]

  assert curve(tmp_path / "cut") == curve(tmp_path / "full")
  assert [s for s, _ in curve(tmp_path / "full")] == [1, 2, 3, 4, 5, 6]


def test_a_bfloat16_first_moment_halves_it_and_trains_alike(data, tokenizer):
  """config.lm.adam_mu_dtype=bfloat16: mu in bfloat16, nu and the parameters float32, and the
  first steps' losses as with a float32 mu."""
  it = batches(data, tokenizer)
  batch = [next(it) for _ in range(3)]
  losses, moments = {}, {}
  for mu in ("float32", "bfloat16"):
    trainer = trainer_lib.LMTrainer(model_for(tokenizer), lm_config(adam_mu_dtype=mu), "all", 10,
                                    parallel.make_mesh())
    for b in batch:
      trainer.state, metrics = trainer.step(trainer.state, trainer.put(b))
    losses[mu] = float(metrics["loss"])
    _, opt = nnx.merge(trainer.graphdef, trainer.state)
    adam = nnx.to_pure_dict(nnx.state(opt, nnx.optimizer.OptState))
    flat = jax.tree_util.tree_leaves_with_path(adam)
    moments[mu] = {name: {x.dtype for p, x in flat if name in jax.tree_util.keystr(p)}
                   for name in ("mu", "nu")}
    assert {x.dtype for x in jax.tree.leaves(_params(trainer.model))} == {np.dtype("float32")}
  assert moments["float32"] == {"mu": {np.dtype("float32")}, "nu": {np.dtype("float32")}}
  assert moments["bfloat16"] == {"mu": {jnp.dtype("bfloat16")}, "nu": {np.dtype("float32")}}
  assert losses["bfloat16"] == pytest.approx(losses["float32"], rel=1e-2)
  assert losses["bfloat16"] != losses["float32"]  # the rounding is real
