"""Rollouts from the briefly trained tiny LM: real, distinct items per group, rewards by the
rules, and a batch that one GRPO step trains on."""

import os

import jax
import numpy as np
import pytest

from semrec_jax import parallel
from semrec_jax.data import tfds_builders
from semrec_jax.eval import language, prompts, restore, steering
from semrec_jax.lm import decoding, input_pipeline, phrasing, tasks
from semrec_jax.prefer import grpo, rewards, rollouts
from semrec_jax.prefer.trainer import PreferenceTrainer
from tests.prefer.test_trainer import _config

GROUP = 4


@pytest.fixture
def restored(trained_lm):
  """(mesh, the LM on one device, a decoder of batches of 4, the training records); per test:
  a GRPO step donates the arrays it was built from."""
  workdir, _ = trained_lm
  mesh = parallel.make_mesh(devices=jax.devices()[:1])
  lm = restore.load(str(workdir), mesh=mesh)
  decoder = decoding.SidDecoder(lm.model, lm.code_tokens, lm.sid_start, lm.trie, mesh=mesh,
                                batch_size=4)
  return mesh, lm, decoder, tfds_builders.read_all(tfds_builders.sequences_source(
      os.path.join(workdir, "data"), "train"))


def test_groups_are_real_items_scored_by_the_rules_and_train_one_step(restored):
  mesh, lm, decoder, records = restored
  records = records[:6]
  max_history = lm.config.max_history
  values = steering.attribute_values(lm.items)

  groups = rollouts.next_item_groups(decoder, lm.tokenizer, lm.sids, records, max_history, GROUP,
                                     codes=lm.codes, prefix_credit=0.5)
  groups += rollouts.steering_groups(decoder, lm.tokenizer, lm.sids, records, values,
                                     max_history, GROUP, np.random.default_rng(0))
  assert [g.task for g in groups] == ["next_item"] * 6 + ["steering"] * 6
  # A step whose prompts all went to other tasks asks nothing of next item.
  assert rollouts.next_item_groups(decoder, lm.tokenizer, lm.sids, [], max_history, GROUP) == []
  for g, r in zip(groups, records + records):
    assert len(set(g.items)) == GROUP and min(g.items) >= 0
    if g.task == "next_item":
      assert g.rewards == rewards.next_item(g.items, int(r["target"]), True, lm.codes, 0.5)
    else:
      kind, value = g.request
      assert value in steering.requestable(values[kind])
      assert phrasing.constraint(kind, value) in g.prompt
      assert g.rewards == [float(value in values[kind][i]) for i in g.items]

  batch = rollouts.training_batch(groups, lm.tokenizer, lm.sids, lm.config.seq_len)
  assert batch["tokens"].shape == (12 * GROUP, lm.config.seq_len)
  for row in range(GROUP):  # the first group, item by item, as the lm stage tokenizes it
    taught = input_pipeline.tokenize({"prompt": groups[0].prompt,
                                      "answer": lm.sids[groups[0].items[row]]},
                                     lm.tokenizer, lm.config.seq_len)
    n = len(taught["tokens"])
    assert batch["tokens"][row, :n].tolist() == taught["tokens"].tolist()
    assert batch["mask"][row, :n].tolist() == taught["mask"].tolist()
    assert not batch["tokens"][row, n:].any()
  expected = np.asarray(grpo.group_advantages(np.asarray([g.rewards for g in groups])))
  np.testing.assert_allclose(batch["advantages"], expected.ravel(), atol=1e-6)

  answer = int(batch["mask"].sum(1).max())
  trainer = PreferenceTrainer(lm.model, _config(), 1, mesh, answer)
  trainer.state, metrics = trainer.step(trainer.state, trainer.reference, trainer.put(batch))
  assert np.isfinite(float(metrics["loss"])) and float(metrics["kl"]) == pytest.approx(0.0,
                                                                                       abs=1e-6)


def test_explanation_groups_sample_reasons_scored_by_the_eval_check(restored):
  _, lm, decoder, records = restored
  attrs, values = phrasing.item_attributes(lm.items), language.item_values(lm.items)
  history = lm.config.max_history
  records = [r for r in records[:200] if language.explainable(r, attrs, history)][:3]
  groups = rollouts.explanation_groups(decoder, lm, records, values, history, GROUP, 1.0, seed=3)
  asked, picks = language.explanation_prompts(decoder, lm, records, history)
  eos = lm.tokenizer.eos_id
  sampled = decoder.generate([p for p in asked for _ in range(GROUP)], language.REASON_TOKENS,
                             temperature=1.0, seed=3).tolist()
  for g, r, prompt, pick in zip(groups, records, asked, picks):
    assert g.prompt_tokens == prompt and g.items == [pick] * GROUP and len(g.answers) == GROUP
    for answer in g.answers:  # the samples, cut after their eos
      row = sampled.pop(0)
      assert answer == (row[:row.index(eos) + 1] if eos in row else row)
    for answer, reward in zip(g.answers, g.rewards):
      assert 0 < len(answer) <= language.REASON_TOKENS and eos not in answer[:-1]
      reason = lm.tokenizer.decode([t for t in answer if t != eos])
      shown = [int(h) for h in list(r["history"])[-history:]]
      assert reward == rewards.explanation(language.explanation_text(lm, r, pick, reason),
                                           lm.trie, values, shown)
  batch = rollouts.training_batch(groups, lm.tokenizer, lm.sids, lm.config.seq_len)
  first = groups[0].prompt_tokens + groups[0].answers[0]
  assert batch["tokens"][0, :len(first)].tolist() == first
  assert not batch["tokens"][0, len(first):].any()
  assert batch["mask"][0].tolist() == ([0] * len(groups[0].prompt_tokens) + [1] * len(
      groups[0].answers[0]) + [0] * (lm.config.seq_len - len(first)))
  with pytest.raises(ValueError, match="temperature"):
    rollouts.explanation_groups(decoder, lm, records, values, history, GROUP, 0.0)


def test_bundle_groups_sample_names_scored_by_the_eval_check(restored):
  """Training bundles (never a held-out item): names sampled after eval's prompt, each rewarded
  1 exactly when the eval check finds it accurate."""
  _, lm, decoder, _ = restored
  values = language.item_values(lm.items)
  attrs = phrasing.item_attributes(lm.items)
  training = tasks.bundles(attrs, lm.sids, lm.config.seed, held_out=False)
  held_out = {int(b["items"][0]) for b in tasks.bundles(attrs, lm.sids, lm.config.seed, True)}
  bundles = [training[i]["items"] for i in range(3)]
  assert not held_out & {i for b in bundles for i in b}
  groups = rollouts.bundle_groups(decoder, lm, bundles, values, GROUP, 1.0, seed=5)
  asked = prompts.encode(lm.tokenizer, [prompts.bundle(b, lm.sids) for b in bundles])
  sampled = decoder.generate([p for p in asked for _ in range(GROUP)], language.NAME_TOKENS,
                             temperature=1.0, seed=5).tolist()
  known = language.known_values(values)
  eos = lm.tokenizer.eos_id
  for g, members, prompt in zip(groups, bundles, asked):
    assert (g.task, g.prompt_tokens, g.size) == ("bundle", prompt, GROUP)
    for answer, reward in zip(g.answers, g.rewards):
      row = sampled.pop(0)
      assert answer == (row[:row.index(eos) + 1] if eos in row else row)
      name = lm.tokenizer.decode([t for t in answer if t != eos])
      assert reward == float(language.bundle_name_accurate(name, members, values, known))
  batch = rollouts.training_batch(groups, lm.tokenizer, lm.sids, lm.config.seq_len)
  assert batch["mask"].sum(1).tolist() == [len(a) for g in groups for a in g.answers]
