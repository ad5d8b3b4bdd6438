"""The `prefer` stage: GRPO after `lm`, on rule rewards (semrec_jax/prefer/), from the final `lm`
checkpoint restored on any mesh; `config.prefer.steps = 0` (the default) leaves it off.

Output in WORKDIR/prefer/: checkpoints/ (Orbax: model, optimizer and step, with the lm's
tokenizer and config beside them, so eval/restore.py loads it as it loads the LM), metrics.jsonl
(loss, KL, mean reward per task and the share of groups whose rewards varied, per step) and
info.json. Step s draws its prompts from the training split with a generator seeded by (seed, s),
so a resumed run draws what an uninterrupted one would: the checkpoint needs no input-pipeline
state.
"""

import json
import os

import jax
import numpy as np
from flax import nnx

from semrec_jax import checkpoint, console, defaults, multihost, parallel, storage
from semrec_jax.data import tfds_builders
from semrec_jax.eval import language, restore, steering
from semrec_jax.lm import decoding, phrasing, tasks
from semrec_jax.prefer import rollouts
from semrec_jax.prefer.trainer import PreferenceTrainer
from semrec_jax.stages import StageError

TASKS = ("next_item", "steering", "explanation", "bundle")


def check(c) -> None:
  """config.prefer errors found before any stage runs."""
  if c.steps < 0 or c.prompts_per_step < 1 or c.group_size < 2:
    raise StageError(f"config.prefer: steps >= 0, prompts_per_step >= 1 and group_size >= 2 "
                     f"(a group of one has nothing to compare); got {c.steps}, "
                     f"{c.prompts_per_step}, {c.group_size}")
  shares = (c.steering_share, c.explanation_share, c.get("bundle_share", 0.0))
  if min(shares) < 0 or sum(shares) > 1:
    raise StageError("config.prefer.steering_share, explanation_share and bundle_share must be "
                     f">= 0 and sum to <= 1 (the rest: next item); got {', '.join(map(str, shares))}"
                     + (f"; steering_share is {defaults.base_config().prefer.steering_share} by "
                        "default: lower it to make room for the others" if sum(shares) > 1 else ""))
  if not 0 <= c.get("prefix_credit", 0.0) <= 1:
    raise StageError("config.prefer.prefix_credit must be in [0, 1] (a miss earns at most that, "
                     f"a hit 1); got {c.prefix_credit}")
  if not 0 <= c.get("update_prompts", 0) <= c.prompts_per_step:
    raise StageError("config.prefer.update_prompts must be in [0, prompts_per_step] (0: every "
                     f"prompt's group); got {c.update_prompts} with prompts_per_step "
                     f"{c.prompts_per_step}")
  if c.get("micro_batches", 1) < 1:
    raise StageError(f"config.prefer.micro_batches must be >= 1; got {c.micro_batches}")
  if c.get("supervised_weight", 0.0) < 0:
    raise StageError("config.prefer.supervised_weight must be >= 0 (0: GRPO alone); got "
                     f"{c.supervised_weight}")
  if c.get("compared_temperature", 1.0) <= 0:
    raise StageError("config.prefer.compared_temperature must be > 0: explanation rollouts draw "
                     f"the compared item; got {c.compared_temperature}")
  if max(shares[1:]) > 0 and c.text_temperature <= 0:
    raise StageError("config.prefer.text_temperature must be > 0: explanation and bundle-name "
                     "rollouts are samples")


def _kept_metrics(path, step: int) -> str:
  """metrics.jsonl's lines up to `step` (a resumed run rewrites the steps after its checkpoint)."""
  if not path.is_file():
    return ""
  return "".join(line for line in path.read_text().splitlines(keepends=True)
                 if json.loads(line)["step"] <= step)


class Prompts:
  """Where a step's prompts come from: the training records, those whose next item shares an
  attribute with the history the prompt shows (explanations), the lm stage's training bundles
  (bundle names: training items only) and the catalog's values."""

  def __init__(self, lm, records: list[dict], c):
    self.lm, self.records, self.c = lm, records, c
    self.values = steering.attribute_values(lm.items)
    if not any(steering.requestable(v) for v in self.values.values()):
      self.values = None  # nothing to steer by
    self.item_values = language.item_values(lm.items)
    attrs = phrasing.item_attributes(lm.items)
    self.explainable = ([r for r in records if language.explainable(r, attrs,
                                                                    lm.config.max_history)]
                        if c.explanation_share > 0 else [])
    self.bundles = (tasks.bundles(attrs, lm.sids, lm.config.seed, held_out=False)
                    if c.get("bundle_share", 0.0) > 0 else [])

  def counts(self) -> dict[str, int]:
    """Prompts per step of each task (a task with nothing to ask gives its share to next item)."""
    c = self.c
    steer = round(c.prompts_per_step * c.steering_share) if self.values is not None else 0
    explain = round(c.prompts_per_step * c.explanation_share) if self.explainable else 0
    bundle = round(c.prompts_per_step * c.get("bundle_share", 0.0)) if len(self.bundles) else 0
    return {"steering": steer, "explanation": explain, "bundle": bundle,
            "next_item": c.prompts_per_step - steer - explain - bundle}

  def groups(self, decoder, step: int) -> list:
    """This step's groups; prompts and samples drawn from (seed, step) only."""
    c, lm, counts = self.c, self.lm, self.counts()
    rng = np.random.default_rng([c.seed, step])
    draw = lambda pool, n: [pool[int(u)] for u in rng.choice(len(pool), n, replace=False)]
    asked = draw(self.records, counts["next_item"] + counts["steering"])
    seed = c.seed * 100_003 + step
    history = lm.config.max_history
    groups = rollouts.next_item_groups(decoder, lm.tokenizer, lm.sids, asked[counts["steering"]:],
                                       history, c.group_size, temperature=c.temperature, seed=seed,
                                       codes=lm.codes, prefix_credit=c.get("prefix_credit", 0.0))
    if counts["steering"]:
      groups += rollouts.steering_groups(decoder, lm.tokenizer, lm.sids,
                                         asked[:counts["steering"]], self.values, history,
                                         c.group_size, rng, temperature=c.temperature, seed=seed)
    if counts["explanation"]:
      groups += rollouts.explanation_groups(decoder, lm, draw(self.explainable,
                                                              counts["explanation"]),
                                            self.item_values, history, c.group_size,
                                            c.text_temperature, seed,
                                            c.get("sample_compared_item", True),
                                            c.get("compared_temperature", 1.0))
    if counts["bundle"]:
      groups += rollouts.bundle_groups(decoder, lm, [b["items"] for b in draw(self.bundles,
                                                                              counts["bundle"])],
                                       self.item_values, c.group_size, c.text_temperature, seed)
    return groups


def train_prefer(config, workdir: str, out_dir: str, mesh=None) -> dict:
  """Runs config.prefer.steps GRPO steps from the final lm checkpoint on `mesh` (default: the
  config's, over all devices); returns info.json's contents."""
  c = config.prefer
  check(c)
  if c.steps == 0:
    info = {"steps": 0, "off": "config.prefer.steps is 0: eval measures the lm checkpoint only"}
    if multihost.is_primary():
      storage.write_json(os.path.join(out_dir, "info.json"), info)
    return info
  if jax.process_count() > 1:
    raise StageError("the prefer stage trains in one process: run --stages=prefer on one worker "
                     "(it restores the lm checkpoint on that worker's devices), then eval on all")
  mesh = mesh or parallel.make_mesh(config.mesh)
  # Rollouts and supervised rows split into micro-batches, each over the data-parallel devices.
  devices, micro = parallel.data_parallel_size(mesh), c.get("micro_batches", 1)
  trained = c.get("update_prompts", 0) or c.prompts_per_step  # groups an update trains on
  if (trained * c.group_size) % (devices * micro):
    raise StageError(f"config.prefer: the {trained * c.group_size} rollouts an update trains on "
                     "(update_prompts, or prompts_per_step where it is 0, x group_size) do not "
                     f"split into micro_batches {micro} x {devices} data devices")
  supervised = c.get("supervised_weight", 0.0) > 0
  lm = restore.load(workdir, mesh=mesh)
  records = tfds_builders.read_all(tfds_builders.sequences_source(
      os.path.join(workdir, "data"), "train"))
  if len(records) < c.prompts_per_step:
    raise StageError(f"config.prefer.prompts_per_step={c.prompts_per_step} is more than the "
                     f"{len(records)} training users")
  asking = Prompts(lm, records, c)
  # An item answer is <|sid_start|>, one token per level, <|sid_end|> and eos; a reason is up to
  # REASON_TOKENS tokens and eos (after the compared item's ID where the rollout draws it), a
  # bundle name NAME_TOKENS and eos.
  counts = asking.counts()
  if supervised and not counts["next_item"]:
    raise StageError("config.prefer.supervised_weight > 0 keeps the supervised next-item loss, "
                     f"but all {c.prompts_per_step} prompts of a step go to other tasks ({counts}):"
                     " lower steering_share, explanation_share or bundle_share")
  compared = lm.trie.levels + 2 if c.get("sample_compared_item", True) else 0
  answer_len = max(lm.trie.levels + 3,
                   compared + language.REASON_TOKENS + 1 if counts["explanation"] else 0,
                   language.NAME_TOKENS + 1 if counts["bundle"] else 0)
  trainer = PreferenceTrainer(lm.model, c, c.steps, mesh, answer_len=answer_len)
  blocks = devices * micro
  supervised_rows = -(-min(trained, counts["next_item"]) // blocks) * blocks if supervised else 0
  decoder = decoding.SidDecoder(trainer.model, lm.code_tokens, lm.sid_start, lm.trie, mesh=mesh,
                                batch_size=c.rollout_batch_size)
  mngr = checkpoint.manager(os.path.join(out_dir, "checkpoints"))
  start = mngr.latest_step() or 0
  if start:
    trainer.state = checkpoint.restore(mngr, start, trainer.state)
    console.say(f"prefer: resuming at step {start}")
  metrics_path = os.path.join(out_dir, "metrics.jsonl")
  storage.write_text(metrics_path, _kept_metrics(storage.path(metrics_path), start))
  metrics = storage.Appender(metrics_path)
  meta = {"tokenizer": lm.tokenizer.fingerprint(), "config": lm.config.to_dict(),
          "lm_stage": lm.stage, "lm_step": lm.step}
  bar = console.Progress("prefer", c.steps, start)
  rewards = {}
  for step in range(start, c.steps):
    decoder.state = nnx.state(trainer.model)  # rollouts from the policy being trained
    groups = asking.groups(decoder, step)
    batch = rollouts.training_batch(rollouts.kept_groups(groups, trained), lm.tokenizer, lm.sids,
                                    lm.config.seq_len, supervised_rows)
    if batch["mask"].sum(1).max() > answer_len:  # the step scores answer_len tokens per rollout
      raise ValueError(f"a rollout answer of {batch['mask'].sum(1).max()} tokens is longer than "
                       f"the {answer_len} the step scores")
    trainer.state, found = trainer.step(trainer.state, trainer.reference, trainer.put(batch))
    record = {"step": step + 1, **{k: round(float(v), 6) for k, v in found.items()},
              "varied_groups": round(float(np.mean([rollouts.varied(g) for g in groups])), 4)}
    for task in TASKS:
      scored = [r for g in groups if g.task == task for r in g.rewards]
      if scored:
        record[f"reward/{task}"] = rewards[task] = round(float(np.mean(scored)), 4)
    metrics.write(json.dumps(record) + "\n")
    metrics.flush()  # readable while the stage runs, and kept if it is killed
    bar.update(step + 1, ", ".join(f"{k} reward {v:.2f}" for k, v in rewards.items()))
    if (step + 1) % c.checkpoint_every == 0 or step + 1 == c.steps:
      checkpoint.save(mngr, step + 1, trainer.state, meta={**meta, "step": step + 1})
  mngr.wait_until_finished()
  mngr.close()
  metrics.close()
  bar.close()
  info = {"steps": c.steps, "lm_stage": lm.stage, "lm_step": lm.step,
          "group_size": c.group_size, "prompts_per_step": c.prompts_per_step,
          "update_prompts": trained,
          "last_rewards": rewards}
  storage.write_json(os.path.join(out_dir, "info.json"), info)
  return info
