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

  # Supervised rows: each next-item prompt with its record's own next item, then empty rows.
  kept = rollouts.training_batch(groups, lm.tokenizer, lm.sids, lm.config.seq_len, 8)
  assert kept["supervised_tokens"].shape == (8, lm.config.seq_len)
  for row, (group, r) in enumerate(zip(groups[:6], records)):
    taught = input_pipeline.tokenize({"prompt": group.prompt, "answer": lm.sids[int(r["target"])]},
                                     lm.tokenizer, lm.config.seq_len)
    n = len(taught["tokens"])
    assert kept["supervised_tokens"][row, :n].tolist() == taught["tokens"].tolist()
    assert kept["supervised_mask"][row, :n].tolist() == taught["mask"].tolist()
  assert not kept["supervised_tokens"][6:].any() and not kept["supervised_mask"][6:].any()
  with pytest.raises(ValueError, match="6 next-item prompts do not fit 4"):
    rollouts.training_batch(groups, lm.tokenizer, lm.sids, lm.config.seq_len, 4)

  answer = int(batch["mask"].sum(1).max())
  trainer = PreferenceTrainer(lm.model, _config(), 1, mesh, answer)
  trainer.state, metrics = trainer.step(trainer.state, trainer.reference, trainer.put(batch))
  assert np.isfinite(float(metrics["loss"])) and float(metrics["kl"]) == pytest.approx(0.0,
                                                                                       abs=1e-6)


def test_explanation_groups_draw_the_compared_item_then_the_reason(restored):
  """Each rollout compares the next item with a history item drawn from the model's own scores
  after eval's lead, then samples a reason after that item; both are the answer the step trains,
  and the reward is the eval check of the whole explanation."""
  _, lm, decoder, records = restored
  attrs, values = phrasing.item_attributes(lm.items), language.item_values(lm.items)
  history = lm.config.max_history
  records = [r for r in records[:200] if language.explainable(r, attrs, history)][:3]
  leads, shown, scores = language.compared_items(decoder, lm, records, history)
  groups = rollouts.explanation_groups(decoder, lm, records, values, history, GROUP, 1.0, seed=3)
  eos, rows = lm.tokenizer.eos_id, []
  for g, r, lead in zip(groups, records, leads):
    shown_items = [int(h) for h in list(r["history"])[-history:]]
    assert g.prompt_tokens == lead and len(g.items) == len(g.answers) == GROUP
    assert set(g.items) <= set(shown_items)
    for pick, answer, reward in zip(g.items, g.answers, g.rewards):
      named = lm.tokenizer.encode(lm.sids[pick])
      assert answer[:len(named)] == named
      reason = answer[len(named):]
      assert 0 < len(reason) <= language.REASON_TOKENS and eos not in reason[:-1]
      rows.append((lead + named, reason))
      text = lm.tokenizer.decode([t for t in reason if t != eos])
      assert reward == rewards.explanation(language.explanation_text(lm, r, pick, text), lm.trie,
                                           values, shown_items)
  sampled = decoder.generate([p for p, _ in rows], language.REASON_TOKENS, temperature=1.0,
                             seed=3).tolist()  # each reason was sampled after its own item
  for (_, reason), row in zip(rows, sampled):
    assert reason == (row[:row.index(eos) + 1] if eos in row else row)
  batch = rollouts.training_batch(groups, lm.tokenizer, lm.sids, lm.config.seq_len)
  first = groups[0].prompt_tokens + groups[0].answers[0]
  assert batch["tokens"][0, :len(first)].tolist() == first
  assert not batch["tokens"][0, len(first):].any()
  assert batch["mask"][0].tolist() == ([0] * len(groups[0].prompt_tokens) + [1] * len(
      groups[0].answers[0]) + [0] * (lm.config.seq_len - len(first)))

  # As eval picks: the best scored item for the whole group, only the reasons sampled.
  best = rollouts.explanation_groups(decoder, lm, records, values, history, GROUP, 1.0, seed=3,
                                     sample_compared=False)
  asked, picks = language.explanation_prompts(decoder, lm, records, history)
  for g, prompt, pick in zip(best, asked, picks):
    assert g.prompt_tokens == prompt and g.items == [pick] * GROUP
    assert all(0 < len(a) <= language.REASON_TOKENS for a in g.answers)
  with pytest.raises(ValueError, match="temperature"):
    rollouts.explanation_groups(decoder, lm, records, values, history, GROUP, 0.0)


def test_compared_items_are_drawn_in_proportion_to_the_softmax_of_their_scores():
  scores = np.log(np.array([[0.5, 0.3, 0.2, 0.0], [0.1, 0.9, 0.0, 0.0]]))
  scores[0, 3] = scores[1, 2:] = -np.inf  # padding of shorter histories
  drawn = rollouts.sampled_columns(scores, 20_000, 1.0, seed=0)
  for row, p in zip(drawn, np.exp(scores)):
    np.testing.assert_allclose(np.bincount(row, minlength=4) / len(row), p, atol=0.015)
  cold = rollouts.sampled_columns(scores, 20_000, 0.25, seed=0)  # p^4, renormalised
  sharp = np.exp(scores[0] * 4) / np.exp(scores[0] * 4).sum()
  np.testing.assert_allclose(np.bincount(cold[0], minlength=4) / 20_000, sharp, atol=0.015)


def test_an_update_keeps_the_groups_whose_rewards_differ_first_in_drawn_order():
  group = lambda name, scores: rollouts.Group("next_item", name, [0, 1, 2], scores)
  drawn = [group("flat0", [0.0, 0.0, 0.0]), group("a", [1.0, 0.0, 0.0]),
           group("flat1", [0.5, 0.5, 0.5]), group("b", [0.0, 0.125, 0.0]),
           group("c", [0.0, 0.0, 1e-3])]
  assert [rollouts.varied(g) for g in drawn] == [False, True, False, True, True]
  kept = lambda n: [g.prompt for g in rollouts.kept_groups(drawn, n)]
  assert kept(2) == ["a", "b"]
  assert kept(4) == ["a", "b", "c", "flat0"]  # too few varied: the first flat ones fill in
  assert kept(5) == kept(9) == ["flat0", "a", "flat1", "b", "c"]  # all: as drawn
  # Varied exactly where group_advantages gives a group advantages at all.
  advantages = np.asarray(grpo.group_advantages(np.array([g.rewards for g in drawn])))
  assert [bool(np.any(a != 0)) for a in advantages] == [rollouts.varied(g) for g in drawn]


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
