"""Task builders: grain MapDatasets of {"task", "prompt", "answer"} examples (plus "user", the
row of the sequences split, for the tasks built from a user's history) made from the prepared data
and the semantic IDs. Items are written as semantic-ID token strings.

Length: every example fits config.lm.seq_len (lm/fitting.py says how).

Hygiene: training examples come only from each user's training part (the `train` split: history and
target both precede the validation and test items); held-out examples for evaluation loss come from
the `validation` split, and for the item tasks (text_to_sid, sid_to_text, bundle) from a fixed 2% of
items left out of training.

Templates and the phrasing of items, requests, reasons and bundle names: lm/phrasing.py. The eight
builders stay in one module (~430 lines) because they share the history, item and hygiene helpers
above them; each is one function.
"""

import zlib

import grain
import numpy as np
from absl import logging

from semrec_jax.data.tfds_builders import read_all, text
from semrec_jax.ids import assign
from semrec_jax.lm.fitting import Budget, taught_title
from semrec_jax.lm.phrasing import (BUNDLE, CO_PURCHASE, DESCRIPTION_WORDS, EXPLANATION, MARKER,
                                  MULTI_TURN, NEXT_ITEM, SID_TO_TEXT, STEERING, STEER_KINDS,
                                  TEXT_TO_SID, attributes, bundle_name, common_attributes,
                                  constraint, constraints, describe, item_attributes, price_bands,
                                  reason)

TASKS = ("next_item", "steering", "co_purchase", "text_to_sid", "sid_to_text", "explanation",
         "bundle", "multi_turn")
CO_PURCHASE_WINDOW = 3
HELD_OUT_ITEM_FRACTION = 0.02


def _rng(seed: int, task: str, index: int) -> np.random.Generator:
  return np.random.default_rng([seed, zlib.crc32(task.encode()), index])


def _shortest(dataset: grain.MapDataset, examples: list[dict]) -> grain.MapDataset:
  """`dataset` with `shortest`: the examples its builder may cut to one history item, one per
  template and request or answer its examples can hold. Every semantic ID has the same number
  of tokens, so if these fit seq_len so does every example (input_pipeline.longest reads these
  instead of building them all)."""
  dataset.shortest = examples
  return dataset


def _fitted(budget: Budget | None, write, items: list[str], answer: str) -> str:
  """The prompt `write(items)` with as many of the newest items as fit `budget` (all without)."""
  return write(items if budget is None else budget.newest(write, items, answer))


def _recent(history, max_history: int, rng: np.random.Generator) -> list[int]:
  """The last 1..max_history items of a history (how many drawn from rng), or [] if it is empty."""
  history = [int(i) for i in history]
  keep = int(rng.integers(1, min(max_history, len(history)) + 1)) if history else 0
  return history[len(history) - keep:]


def _items(template: str, **fields):
  """write(items) for Budget.newest: the template with the items joined by ', '."""
  return lambda items: template.format(items=", ".join(items), **fields)


def next_item(sequences, sids: list[str], max_history: int, seed: int,
              history_loss: bool = False, budget: Budget | None = None) -> grain.MapDataset:
  """One example per sequence: the last 1..max_history history items (as many as fit `budget`)
  -> the target (with history_loss, every history item is a target too: see input_pipeline.tokenize)."""

  def build(index, example):
    rng = _rng(seed, "next_item", index)
    items = [sids[i] for i in _recent(example["history"], max_history, rng)]
    template = NEXT_ITEM[int(rng.integers(len(NEXT_ITEM)))]
    answer = sids[int(example["target"])]
    return {"task": "next_item", "user": index, "answer": answer, "history_loss": history_loss,
            "prompt": _fitted(budget, _items(template), items, answer)}

  one = sids[0] if sids else ""
  return _shortest(grain.MapDataset.source(sequences).map_with_index(build), [
      {"task": "next_item", "prompt": t.format(items=one), "answer": one} for t in NEXT_ITEM])


def _informative(options: list[str], said: list[str]) -> list[str]:
  """The constraints in `options` that `said` (what the last item already satisfies) lacks, or all
  of them: a request the history alone would answer teaches the model to ignore the words."""
  return [c for c in options if c not in said] or options


MIN_ITEMS_PER_VALUE = 10  # a value asked for by name needs 10 items (precision@10 can reach 1)
FREE_REQUEST_SHARE = 0.75  # steering examples whose request is drawn from the catalog


def _codes(sid: str) -> tuple[str, ...]:
  """The code tokens of a SID token string (without its start and end markers)."""
  return tuple(sid.split("><")[1:-1])


class _Nearest:
  """For each requestable (kind, value): the items holding it, indexed by every prefix of their
  semantic IDs, so the nearest item with a value is the one sharing the longest prefix."""

  def __init__(self, attrs: list[dict], sids: list[str], bands: list[list[str]]):
    holders: dict[tuple[str, str], list[int]] = {}
    for i, a in enumerate(attrs):
      for kind in STEER_KINDS:
        if kind in a:
          holders.setdefault((kind, a[kind]), []).append(i)
      for band in bands[i]:  # "under $20" holds every item up to $20
        holders.setdefault(("price", band), []).append(i)
    self.values = {key: items for key, items in sorted(holders.items())
                   if len(items) >= MIN_ITEMS_PER_VALUE}
    self.codes = [_codes(s) for s in sids]
    self.index = {key: {} for key in self.values}
    for key, items in self.values.items():
      for i in items:
        for depth in range(len(self.codes[i]) + 1):  # the whole ID too: the target itself
          self.index[key].setdefault(self.codes[i][:depth], []).append(i)
    kinds = sorted({kind for kind, _ in self.values})
    self.by_kind = {kind: [key for key in self.values if key[0] == kind] for kind in kinds}

  def draw(self, rng: np.random.Generator, target: int,
           banned: set[int]) -> tuple[str, str, int]:
    """(kind, value, item): a kind, a value weighted by its item count (as the evaluation draws
    requests), and the item with that value nearest the target, never one in `banned` (fewer
    than MIN_ITEMS_PER_VALUE items, so one is always left)."""
    assert len(banned) < MIN_ITEMS_PER_VALUE, banned
    keys = self.by_kind[list(self.by_kind)[int(rng.integers(len(self.by_kind)))]]
    weights = np.asarray([len(self.values[k]) for k in keys], np.float64)
    key = keys[int(rng.choice(len(keys), p=weights / weights.sum()))]
    codes = self.codes[target]
    for depth in range(len(codes), -1, -1):
      found = [i for i in self.index[key].get(codes[:depth], ()) if i not in banned]
      if found:
        return key[0], key[1], found[int(rng.integers(len(found)))]
    raise AssertionError("depth 0 holds every item with the value")


def steering(sequences, attrs: list[dict], sids: list[str], max_history: int, seed: int,
             later: list[set[int]] | None = None, bands: list[list[str]] | None = None,
             budget: Budget | None = None) -> grain.MapDataset:
  """The last 1..max_history items (as many as fit `budget`) + a request in words -> an item that
  meets it. In a quarter of the examples (1 - FREE_REQUEST_SHARE) the request is one the next item
  meets (preferably one the last history item does not) and the answer is the next item; in the
  rest the request is drawn from the catalog as the evaluation draws it, and the answer is the item
  with that value nearest the next item (longest shared semantic-ID prefix): the user's taste,
  moved to what they asked for. That item is never one of the user's `later` items (their held-out
  validation and test items), so no held-out pair is trained on by coincidence. Users whose target
  has no usable attribute, in a catalog with no requestable value, are left out."""
  bands = bands or [[] for _ in attrs]  # price_bands of each item
  item_constraints = [constraints(a) + ([constraint("price", bands[i][0])] if bands[i] else [])
                      for i, a in enumerate(attrs)]
  nearest = _Nearest(attrs, sids, bands)
  usable = [u for u in range(len(sequences))
            if item_constraints[int(sequences[u]["target"])] or nearest.values]

  def build(index, u):
    example = sequences[u]
    rng = _rng(seed, "steering", index)
    history = _recent(example["history"], max_history, rng)
    target = int(example["target"])
    options = item_constraints[target]
    if nearest.values and (not options or rng.random() < FREE_REQUEST_SHARE):
      kind, value, target = nearest.draw(rng, target, later[u] if later else set())
      request = constraint(kind, value)
    else:
      if history:
        options = _informative(options, item_constraints[history[-1]])
      request = options[int(rng.integers(len(options)))]
    template = STEERING[int(rng.integers(len(STEERING)))]
    write = _items(template, constraint=request)
    return {"task": "steering", "user": u, "answer": sids[target],
            "prompt": _fitted(budget, write, [sids[i] for i in history], sids[target])}

  requests = {constraint(kind, value) for kind, value in nearest.values} | {
      c for u in usable for c in item_constraints[int(sequences[u]["target"])]}
  one = sids[0] if sids else ""
  return _shortest(grain.MapDataset.source(usable).map_with_index(build), [
      {"task": "steering", "prompt": t.format(items=one, constraint=r), "answer": one,
       "request": r} for r in sorted(requests) for t in STEERING])


def co_purchase(sequences, sids: list[str], seed: int) -> grain.MapDataset:
  """One example per (user, position): the item -> one of the next CO_PURCHASE_WINDOW items of the
  same user (history + target of the given split, so the train split never shows held-out items)."""
  pairs = []
  for u in range(len(sequences)):
    length = len(sequences[u]["history"]) + 1
    pairs += [(u, i) for i in range(length - 1)]

  def build(index, pair):
    u, i = pair
    example = sequences[u]
    seq = [int(x) for x in example["history"]] + [int(example["target"])]
    rng = _rng(seed, "co_purchase", index)
    j = min(len(seq) - 1, i + int(rng.integers(1, CO_PURCHASE_WINDOW + 1)))
    template = CO_PURCHASE[int(rng.integers(len(CO_PURCHASE)))]
    return {"task": "co_purchase", "user": u, "prompt": template.format(item=sids[seq[i]]),
            "answer": sids[seq[j]]}

  one = sids[0] if sids else ""
  return _shortest(grain.MapDataset.source(pairs).map_with_index(build), [
      {"task": "co_purchase", "prompt": t.format(item=one), "answer": one} for t in CO_PURCHASE])


def held_out_items(num_items: int, seed: int) -> np.ndarray:
  """Item indices whose title/SID examples are kept for evaluation only."""
  rng = np.random.default_rng([seed, 7])
  return np.sort(rng.permutation(num_items)[:max(1, int(HELD_OUT_ITEM_FRACTION * num_items))])


def _item_rows(num_items: int, seed: int, held_out: bool) -> list[int]:
  out_set = set(held_out_items(num_items, seed).tolist())
  return [i for i in range(num_items) if (i in out_set) == held_out]


def _text_variants(item: dict, sid: str, rng: np.random.Generator,
                   budget: Budget | None = None) -> dict[str, str]:
  """Texts that point at the item: title, a title fragment, description start, attributes (the
  title and description cut to fit `budget`, the fragment drawn from the title as taught)."""
  title = taught_title(item, sid, budget)
  out = {"title": title}
  words = title.removesuffix(MARKER).split()
  if len(words) >= 4:
    n = (len(words) + 1) // 2
    start = int(rng.integers(len(words) - n + 1))
    out["fragment"] = " ".join(words[start:start + n])
  description = text(item["description"]).split()
  if description:
    start = " ".join(description[:DESCRIPTION_WORDS])
    out["description"] = start if budget is None else budget.item_text("description", start, sid)
  a = attributes(item)
  if len(a) >= 2:
    out["attributes"] = describe(a)
  return out


def item_tasks(items, sids: list[str], seed: int, held_out: bool,
               budget: Budget | None = None) -> dict[str, grain.MapDataset]:
  """text_to_sid and sid_to_text over the training items (or over the held-out ones); each
  example uses one of the item's available texts, drawn per example (titles and descriptions cut
  to fit `budget`)."""
  rows = grain.MapDataset.source(_item_rows(len(items), seed, held_out))

  def text_to_sid(index, i):
    rng = _rng(seed, "text_to_sid", index)
    variants = _text_variants(items[i], sids[i], rng, budget)
    kind = sorted(variants)[int(rng.integers(len(variants)))]
    templates = TEXT_TO_SID[kind]
    return {"task": "text_to_sid", "answer": sids[i], "item": i,
            "prompt": templates[int(rng.integers(len(templates)))].format(text=variants[kind])}

  def sid_to_text(index, i):
    rng = _rng(seed, "sid_to_text", index)
    a = attributes(items[i])
    kind = "attributes" if len(a) >= 2 and rng.random() < 0.5 else "title"
    templates = SID_TO_TEXT[kind]
    answer = describe(a) if kind == "attributes" else taught_title(items[i], sids[i], budget)
    return {"task": "sid_to_text", "answer": answer, "item": i,
            "prompt": templates[int(rng.integers(len(templates)))].format(sid=sids[i])}

  return {"text_to_sid": rows.map_with_index(text_to_sid),
          "sid_to_text": rows.map_with_index(sid_to_text)}


def because(example, attrs: list[dict], max_history: int) -> tuple[int, dict] | None:
  """(history item, the attributes it shares with the target) of an explanation: the most recent
  of the last `max_history` history items sharing any, or None where none does."""
  target = attrs[int(example["target"])]
  for h in reversed([int(i) for i in example["history"]][-max_history:]):
    shared = common_attributes(target, attrs[h])
    if shared:
      return h, shared
  return None


def explanation(sequences, attrs: list[dict], sids: list[str], max_history: int,
                seed: int, budget: Budget | None = None) -> grain.MapDataset:
  """History -> the target and a reason (`because`: the most recent history item sharing
  attributes with the target, and what they share). Users whose target shares nothing with the
  history are left out; so is (as None, which grain skips) a user whose reason item is older than
  the items that fit `budget`: an answer must not name an item the prompt lacks."""
  usable = [(u, found) for u in range(len(sequences))
            if (found := because(sequences[u], attrs, max_history))]

  def build(index, row):
    u, (h, shared) = row
    example = sequences[u]
    rng = _rng(seed, "explanation", index)
    items = [sids[i] for i in example["history"][-max_history:]]
    write = _items(EXPLANATION[int(rng.integers(len(EXPLANATION)))])
    answer = f"{sids[int(example['target'])]}: like {sids[h]}, it is {reason(shared)}."
    kept = items if budget is None else budget.newest(write, items, answer)
    if sids[h] not in kept:
      return None
    return {"task": "explanation", "user": u, "prompt": write(kept), "answer": answer}

  reasons = sorted({reason(shared) for _, (_, shared) in usable})
  one = sids[0] if sids else ""
  return _shortest(grain.MapDataset.source(usable).map_with_index(build), [
      {"task": "explanation", "prompt": t.format(items=one),
       "answer": f"{one}: like {one}, it is {r}."} for r in reasons for t in EXPLANATION])


BUNDLE_KEYS = ("platform", "brand", "franchise", "genre")


def bundles(attrs: list[dict], sids: list[str], seed: int, held_out: bool) -> grain.MapDataset:
  """2-4 items sharing an attribute value -> a name made from every attribute they all share.

  Training bundles use training items only; held-out bundles hold one held-out item each (plus
  training items from one of its groups). One example per group of training items per 3 members,
  or per held-out item and group."""
  train_rows = _item_rows(len(attrs), seed, held_out=False)
  groups: dict[tuple[str, str], list[int]] = {}
  for i in train_rows:
    for key in BUNDLE_KEYS:
      if key in attrs[i]:
        groups.setdefault((key, attrs[i][key]), []).append(i)
  if held_out:
    draws = [(i, groups[(k, attrs[i][k])]) for i in _item_rows(len(attrs), seed, True)
             for k in BUNDLE_KEYS if (k, attrs[i].get(k)) in groups]
  else:
    draws = [(None, members) for members in groups.values() if len(members) >= 2
             for _ in range(max(1, len(members) // 3))]

  def build(index, draw):
    first, members = draw
    rng = _rng(seed, "bundle", index)
    size = int(rng.integers(2, 5))
    head = [] if first is None else [first]
    others = rng.choice(members, min(size - len(head), len(members)), replace=False)
    chosen = head + [int(i) for i in others]
    shared = attrs[chosen[0]]
    for i in chosen[1:]:
      shared = common_attributes(shared, attrs[i])
    template = BUNDLE[int(rng.integers(len(BUNDLE)))]
    return {"task": "bundle", "prompt": template.format(items=", ".join(sids[i] for i in chosen)),
            "answer": bundle_name(shared), "items": chosen}

  return grain.MapDataset.source(draws).map_with_index(build)


def multi_turn(sequences, attrs: list[dict], sids: list[str], max_history: int,
               seed: int, budget: Budget | None = None) -> grain.MapDataset:
  """A short conversation: the last history item is the first recommendation, then the user asks
  for something else (a constraint the target meets, preferably one the first item does not) and
  the target is the answer. Users with fewer than 2 history items or an attribute-less target are
  left out."""
  item_constraints = [constraints(a) for a in attrs]
  usable = [u for u in range(len(sequences)) if len(sequences[u]["history"]) >= 2
            and item_constraints[int(sequences[u]["target"])]]

  def build(index, u):
    example = sequences[u]
    rng = _rng(seed, "multi_turn", index)
    history = [int(i) for i in example["history"]][-max_history - 1:]
    options = item_constraints[int(example["target"])]
    new = _informative(options, item_constraints[history[-1]])
    template = MULTI_TURN[int(rng.integers(len(MULTI_TURN)))]
    write = _items(template, first=sids[history[-1]], constraint=new[int(rng.integers(len(new)))])
    answer = sids[int(example["target"])]
    return {"task": "multi_turn", "user": u, "answer": answer,
            "prompt": _fitted(budget, write, [sids[i] for i in history[:-1]], answer)}

  requests = sorted({c for u in usable for c in item_constraints[int(sequences[u]["target"])]})
  one = sids[0] if sids else ""
  return _shortest(grain.MapDataset.source(usable).map_with_index(build), [
      {"task": "multi_turn", "prompt": t.format(items=one, first=one, constraint=r),
       "answer": one, "request": r} for r in requests for t in MULTI_TURN])


# What each task needs from the data: the reason logged when a task has no examples.
NEEDS = {
    "next_item": "user histories",
    "steering": "next items with a platform, genre, brand or product type",
    "co_purchase": "users with two or more items",
    "text_to_sid": "catalog items",
    "sid_to_text": "catalog items",
    "explanation": "next items sharing an attribute (platform, genre, brand, franchise, product "
                   "type) with an item of the history",
    "bundle": "items sharing an attribute (platform, brand, franchise, genre)",
    "multi_turn": "users with two or more history items and a next item with an attribute",
}


def without_empty(found: dict[str, grain.MapDataset], what: str) -> dict[str, grain.MapDataset]:
  """The tasks that have examples; each empty one is named in the log with what it lacks."""
  for name, source in found.items():
    if len(source) == 0:
      logging.info("lm task %s: no %s examples (the data has no %s); left out of the mixture",
                   name, what, NEEDS[name])
  kept = {name: source for name, source in found.items() if len(source)}
  if not kept:
    raise ValueError(f"no LM task has {what} examples")
  return kept


def later_items(*splits) -> list[set[int]]:
  """Per user, the targets of the given later splits (what training must never answer with)."""
  records = [read_all(split) for split in splits]
  return [{int(split[u]["target"]) for split in records} for u in range(len(records[0]))]


def sources(sequences, items, sids: list[str], max_history: int, seed: int,
            held_out: bool = False, history_loss: bool = False,
            later: list[set[int]] | None = None,
            budget: Budget | None = None) -> dict[str, grain.MapDataset]:
  """Every task's source: training examples, or (held_out=True) the evaluation examples
  (`sequences` is then the validation split). `later`: each user's items of the later splits
  (later_items), which the steering task's catalog-drawn answers avoid. `budget`: the tokenizer
  and seq_len the histories and item texts are cut to (None: they stay whole)."""
  sequences, attrs = read_all(sequences), item_attributes(items)
  bands = [price_bands(items[i]) for i in range(len(items))]
  out = {"next_item": next_item(sequences, sids, max_history, seed, history_loss, budget),
         "steering": steering(sequences, attrs, sids, max_history, seed, later, bands, budget),
         "co_purchase": co_purchase(sequences, sids, seed),
         **item_tasks(items, sids, seed, held_out=held_out, budget=budget),
         "explanation": explanation(sequences, attrs, sids, max_history, seed, budget),
         "bundle": bundles(attrs, sids, seed, held_out=held_out),
         "multi_turn": multi_turn(sequences, attrs, sids, max_history, seed, budget)}
  assert tuple(out) == TASKS
  return out


def load_sids(path: str) -> list[str]:
  """Token strings per item index from WORKDIR/ids/semantic_ids.tsv."""
  return assign.read_table(path)[0]
