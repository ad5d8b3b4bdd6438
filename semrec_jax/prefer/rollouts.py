"""Rollouts for the preference stage: prompts from the training split, a group of candidates for
each from the trie-constrained beam (real items only, in the decoder's order), their rule rewards
and group-relative advantages, and the token batch the GRPO step trains on.

Prompts are asked the way `eval` asks them (eval/prompts.py) about the training split's own next
item, so the validation and test items of a user are never rewarded. Steering requests are drawn
as `eval` draws them: a kind, then a value with 10+ items, in proportion to its items."""

import dataclasses

import numpy as np

from semrec_jax.eval import language, prompts, steering
from semrec_jax.lm import input_pipeline, phrasing
from semrec_jax.prefer import grpo, rewards


@dataclasses.dataclass
class Group:
  """One prompt's rollouts: the candidates (item indices, best first), their rewards, and for
  steering the (kind, value) asked for. Free-text tasks (explanations, bundle names) give the
  prompt's tokens and each rollout's answer tokens instead of items."""
  task: str
  prompt: str
  items: list[int]
  rewards: list[float]
  request: tuple[str, str] | None = None
  target: int | None = None  # next item: the record's own next item (the supervised answer)
  prompt_tokens: list[int] | None = None
  answers: list[list[int]] | None = None

  @property
  def size(self) -> int:
    return len(self.answers) if self.answers is not None else len(self.items)


def next_item_groups(decoder, tokenizer, sids, records, max_history: int, group_size: int,
                     rank_aware: bool = True, temperature: float = 0.0,
                     seed: int = 0, codes=None, prefix_credit: float = 0.0) -> list[Group]:
  """Per training record: "what next?" after its history; reward: the record's next item
  (rewards.next_item, with `prefix_credit` for misses near it in `codes`). Candidates: the
  constrained beam's best `group_size` (temperature 0) or that many samples over valid IDs."""
  texts = [prompts.next_item(r["history"], sids, max_history) for r in records]
  found, _ = decoder.items(prompts.encode(tokenizer, texts), group_size, temperature=temperature,
                           seed=seed)
  return [Group("next_item", t, row.tolist(),
                rewards.next_item(row.tolist(), int(r["target"]), rank_aware, codes, prefix_credit),
                target=int(r["target"]))
          for t, r, row in zip(texts, records, found)]


def steering_requests(values: dict, count: int, rng: np.random.Generator) -> list[tuple[str, str]]:
  """`count` (kind, value) requests: a kind the catalog can be steered by, then one of its values
  held by 10+ items, drawn in proportion to its item count (as `eval` draws them)."""
  options = {kind: steering.requestable(values[kind]) for kind in phrasing.STEER_KINDS}
  kinds = [k for k in phrasing.STEER_KINDS if options[k]]
  if not kinds:
    raise ValueError("the catalog has no attribute value held by "
                     f"{steering.MIN_ITEMS_PER_VALUE}+ items: nothing to steer by")
  return [(str(kind), steering.draw(options[kind], 1, rng)[0])
          for kind in rng.choice(kinds, count)]


def steering_groups(decoder, tokenizer, sids, records, values: dict, max_history: int,
                    group_size: int, rng: np.random.Generator, temperature: float = 0.0,
                    seed: int = 0) -> list[Group]:
  """Per training record: its history and a request in words; reward: the item has the asked
  value (rewards.steering). `values`: steering.attribute_values of the catalog; candidates as in
  next_item_groups."""
  asked = steering_requests(values, len(records), rng)
  texts = [prompts.steered(r["history"], sids, max_history, phrasing.constraint(kind, value))
           for r, (kind, value) in zip(records, asked)]
  found, _ = decoder.items(prompts.encode(tokenizer, texts), group_size, temperature=temperature,
                           seed=seed)
  return [Group("steering", t, row.tolist(),
                [rewards.steering(int(i), kind, value, values) for i in row], (kind, value))
          for t, (kind, value), row in zip(texts, asked, found)]


def _sampled_answers(decoder, lm, rows: list[list[int]], group_size: int, max_tokens: int,
                     temperature: float, seed: int) -> list[list[list[int]]]:
  """A text sampled at `temperature` after each prompt of `rows` (token lists cut after their
  eos), in groups of `group_size` consecutive rows."""
  if temperature <= 0:
    raise ValueError("free-text rollouts are samples: temperature must be > 0")
  texts = decoder.generate(rows, max_tokens, temperature=temperature, seed=seed).tolist()
  eos = lm.tokenizer.eos_id
  cut = [text[:text.index(eos) + 1] if eos in text else text for text in texts]
  return [cut[g:g + group_size] for g in range(0, len(cut), group_size)]


def _text(lm, answer: list[int]) -> str:
  return lm.tokenizer.decode([t for t in answer if t != lm.tokenizer.eos_id])


def sampled_columns(scores: np.ndarray, count: int, temperature: float, seed: int) -> np.ndarray:
  """[n, count] column indices, each drawn from softmax(scores[row] / temperature) (Gumbel-max;
  a -inf score is never drawn)."""
  gumbel = np.random.default_rng(seed).gumbel(size=(len(scores), count, scores.shape[1]))
  return np.argmax(scores[:, None, :] / temperature + gumbel, axis=2)


def explanation_groups(decoder, lm, records, values, max_history: int, group_size: int,
                       temperature: float, seed: int = 0, sample_compared: bool = True,
                       compared_temperature: float | None = None) -> list[Group]:
  """Per training record (one whose next item shares an attribute with its history: the caller
  picks them, language.explainable): `group_size` explanations after the lead eval asks
  ("<next item>: like ", language.compared_items), each a history item drawn at `temperature`
  from the model's own scores of those the prompt shows, then a reason sampled after it; so the
  stage teaches both which item to compare with and what to say. With `sample_compared` False,
  every rollout compares with the best scored item, as eval does, and only the reasons differ.
  `compared_temperature` (default `temperature`) is that of the item draws alone.
  Reward: rewards.explanation of the whole explanation. `values`: language.item_values."""
  if temperature <= 0:
    raise ValueError("free-text rollouts are samples: temperature must be > 0")
  leads, shown, scores = language.compared_items(decoder, lm, records, max_history)
  if sample_compared:
    columns = sampled_columns(scores, group_size, compared_temperature or temperature, seed)
  else:
    columns = np.repeat(np.argmax(scores, axis=1)[:, None], group_size, axis=1)
  picks = np.take_along_axis(shown, columns, axis=1).tolist()
  named = [[lm.tokenizer.encode(lm.sids[p]) for p in row] for row in picks]
  sampled = _sampled_answers(decoder, lm, [lead + n for lead, row in zip(leads, named)
                                           for n in row],
                             group_size, language.REASON_TOKENS, temperature, seed)
  groups = []
  for record, lead, row, names, reasons in zip(records, leads, picks, named, sampled):
    shown_items = [int(h) for h in list(record["history"])[-max_history:]]
    scored = [rewards.explanation(language.explanation_text(lm, record, p, _text(lm, a)),
                                  lm.trie, values, shown_items) for p, a in zip(row, reasons)]
    if sample_compared:  # the compared item is part of each answer
      prompt, answers = lead, [n + a for n, a in zip(names, reasons)]
    else:
      prompt, answers = lead + names[0], reasons
    groups.append(Group("explanation", lm.tokenizer.decode(prompt[1:]), row, scored,
                        prompt_tokens=list(prompt), answers=answers))
  return groups


def bundle_groups(decoder, lm, bundles: list[list[int]], values, group_size: int,
                  temperature: float, seed: int = 0) -> list[Group]:
  """Per bundle (2-4 training items sharing an attribute, lm/tasks.py's training bundles):
  `group_size` names sampled at `temperature` after the prompt eval asks (prompts.bundle);
  reward: rewards.bundle_name (every claim true of every member). `values`:
  language.item_values of the catalog."""
  asked = prompts.encode(lm.tokenizer, [prompts.bundle(m, lm.sids) for m in bundles])
  sampled = _sampled_answers(decoder, lm, [a for a in asked for _ in range(group_size)],
                             group_size, language.NAME_TOKENS, temperature, seed)
  known = language.known_values(values)
  return [Group("bundle", lm.tokenizer.decode(prompt[1:]), [members[0]] * group_size,
                [rewards.bundle_name(_text(lm, a), members, values, known) for a in answers],
                prompt_tokens=list(prompt), answers=answers)
          for members, prompt, answers in zip(bundles, asked, sampled)]


def varied(group: Group) -> bool:
  """Whether a group's rollouts scored differently: only then do they get advantages
  (grpo.group_advantages, with the same grpo.EPS)."""
  return float(np.std(group.rewards)) > grpo.EPS


def kept_groups(groups: list[Group], count: int) -> list[Group]:
  """The `count` groups an update trains on: those with varied rewards first, then groups of
  equal rewards (KL only) to fill a fixed batch shape; each part in drawn order. DAPO's dynamic
  sampling, without re-drawing: the step draws more prompts than it trains on. All groups, as
  drawn, where `count` covers them."""
  if count >= len(groups):
    return groups
  return sorted(groups, key=lambda g: not varied(g))[:count]  # stable: drawn order kept


def _item_row(prompt: str, item: int, tokenizer, sids, seq_len: int):
  """(tokens, mask) of `prompt` answered with `item`'s ID, as the lm stage tokenizes it."""
  example = input_pipeline.tokenize({"prompt": prompt, "answer": sids[item]}, tokenizer, seq_len)
  return example["tokens"], example["mask"]


def _rollout_row(group: Group, j: int, fallback: int, tokenizer, sids, seq_len: int):
  """(tokens, mask) of rollout j of a group."""
  if group.answers is not None:
    tokens = group.prompt_tokens + group.answers[j]
    if len(tokens) > seq_len:
      raise ValueError(f"a {group.task} rollout of {len(tokens)} tokens does not fit seq_len "
                       f"{seq_len}")
    return tokens, [0] * len(group.prompt_tokens) + [1] * len(group.answers[j])
  item = group.items[j]
  return _item_row(group.prompt, item if item >= 0 else fallback, tokenizer, sids, seq_len)


def training_batch(groups: list[Group], tokenizer, sids, seq_len: int,
                   supervised_rows: int = 0) -> dict:
  """{"tokens", "mask"} [N, seq_len] (each rollout as the lm stage tokenizes a taught example:
  [bos] prompt answer [eos], mask on answer and eos) and "advantages" [N], N = groups x group
  size, from each group's rewards (grpo.group_advantages). A candidate that names no item (-1,
  fewer items than the group qualify) gets the group's other answer tokens and no weight.

  `supervised_rows` > 0 adds "supervised_tokens" and "supervised_mask" [supervised_rows, seq_len]:
  each next-item prompt with the record's own next item as its answer (as `lm` teaches it), then
  empty rows (a fixed shape, so the step compiles once)."""
  size = groups[0].size
  if any(g.size != size for g in groups):
    raise ValueError("every group needs the same number of rollouts")
  advantages = np.asarray(grpo.group_advantages(np.asarray([g.rewards for g in groups],
                                                           np.float32)))
  tokens = np.zeros((len(groups) * size, seq_len), np.int32)
  mask = np.zeros_like(tokens)
  weights = np.zeros(len(groups) * size, np.float32)
  for g, group in enumerate(groups):
    fallback = next((i for i in group.items if i >= 0), None)
    if fallback is None:
      raise ValueError(f"no rollout of the {group.task} prompt {group.prompt!r} names an item")
    for j in range(size):
      row = g * size + j
      row_tokens, row_mask = _rollout_row(group, j, fallback, tokenizer, sids, seq_len)
      tokens[row, :len(row_tokens)] = row_tokens
      mask[row, :len(row_mask)] = row_mask
      weights[row] = advantages[g, j] if group.items[j] >= 0 else 0.0
  batch = {"tokens": tokens, "mask": mask, "advantages": weights}
  if supervised_rows:
    taught = [g for g in groups if g.task == "next_item"]
    if len(taught) > supervised_rows:
      raise ValueError(f"{len(taught)} next-item prompts do not fit {supervised_rows} "
                       "supervised rows")
    batch["supervised_tokens"] = np.zeros((supervised_rows, seq_len), np.int32)
    batch["supervised_mask"] = np.zeros((supervised_rows, seq_len), np.int32)
    for row, group in enumerate(taught):
      row_tokens, row_mask = _item_row(group.prompt, group.target, tokenizer, sids, seq_len)
      batch["supervised_tokens"][row, :len(row_tokens)] = row_tokens
      batch["supervised_mask"][row, :len(row_mask)] = row_mask
  return batch
