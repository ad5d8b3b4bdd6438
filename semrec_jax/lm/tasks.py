"""Task builders: grain MapDatasets of {"task", "prompt", "answer"} examples built from the
prepared data and the semantic IDs. Items are written as semantic-ID token strings.

Hygiene: training examples come only from each user's training part (the `train` split: history and
target both precede the validation and test items); held-out examples for evaluation loss come from
the `validation` split, and for the item tasks from a fixed 2% of items left out of training.

Templates (the phrasing is drawn per example from a seeded generator, so runs are reproducible):
  next_item     "<history phrasing with items joined by ', '> <|rec|>" -> target SID
  steering      history + a constraint in words from one of the target's attributes ("something for
                PS4", "a racing game", "something by Nintendo", "an accessory, not a game") -> target
  co_purchase   an item -> an item the same user bought within the next 3
  title_to_sid  "<question naming the title>" -> SID
  sid_to_title  "<question naming the SID>" -> title
"""

import zlib

import grain
import numpy as np

from semrec_jax.data.tfds_builders import text

NEXT_ITEM = (
    "A user bought, in order: {items}. What will they buy next? <|rec|>",
    "Purchase history: {items}. Recommend the next item. <|rec|>",
    "Items so far: {items}. Next: <|rec|>",
)
TITLE_TO_SID = (
    'What is the semantic ID of "{title}"? ',
    "Item: {title}\nID: ",
)
SID_TO_TITLE = (
    "Which item has the semantic ID {sid}? ",
    "{sid} is the item called: ",
)
STEERING = (
    "A user bought: {items}. Now they want {constraint}. <|rec|>",
    "History: {items}. Recommend {constraint}. <|rec|>",
)
CO_PURCHASE = (
    "People who bought {item} also bought <|rec|>",
    "Bought together with {item}: <|rec|>",
)
CO_PURCHASE_WINDOW = 3
HELD_OUT_ITEM_FRACTION = 0.02


def _rng(seed: int, task: str, index: int) -> np.random.Generator:
  return np.random.default_rng([seed, zlib.crc32(task.encode()), index])


def next_item(sequences, sids: list[str], max_history: int, seed: int) -> grain.MapDataset:
  """One example per sequence: the last 1..max_history history items -> the target."""

  def build(index, example):
    rng = _rng(seed, "next_item", index)
    history = [int(i) for i in example["history"]]
    keep = int(rng.integers(1, min(max_history, len(history)) + 1)) if history else 0
    items = ", ".join(sids[i] for i in history[len(history) - keep:])
    template = NEXT_ITEM[int(rng.integers(len(NEXT_ITEM)))]
    return {"task": "next_item", "prompt": template.format(items=items),
            "answer": sids[int(example["target"])]}

  return grain.MapDataset.source(sequences).map_with_index(build)


def constraints(item: dict) -> list[str]:
  """Plain-language constraints the item satisfies, from its catalog attributes."""
  out = []
  platform, brand = text(item["platform"]), text(item["brand"])
  genre = text(item["genre"]).split("|")[0].strip()
  product_type = text(item["product_type"]).split("|")[0].strip()
  if platform:
    out.append(f"something for {platform}")
  if genre:
    out.append(f"a {genre.lower()} game")
  if brand:
    out.append(f"something by {brand}")
  if product_type == "Accessory":
    out.append("an accessory, not a game")
  elif product_type == "Game":
    out.append("a game, not an accessory")
  elif product_type:
    out.append(f"a {product_type.lower()}")
  return out


def steering(sequences, items, sids: list[str], max_history: int,
             seed: int) -> grain.MapDataset:
  """History + a constraint the target satisfies -> target; users whose target has no usable
  attribute are left out (counted by the difference in length)."""
  item_constraints = [constraints(items[i]) for i in range(len(items))]
  usable = [u for u in range(len(sequences))
            if item_constraints[int(sequences[u]["target"])]]

  def build(index, u):
    example = sequences[u]
    rng = _rng(seed, "steering", index)
    history = [int(i) for i in example["history"]][-max_history:]
    options = item_constraints[int(example["target"])]
    template = STEERING[int(rng.integers(len(STEERING)))]
    return {"task": "steering", "answer": sids[int(example["target"])],
            "prompt": template.format(items=", ".join(sids[i] for i in history),
                                      constraint=options[int(rng.integers(len(options)))])}

  return grain.MapDataset.source(usable).map_with_index(build)


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
    return {"task": "co_purchase", "prompt": template.format(item=sids[seq[i]]),
            "answer": sids[seq[j]]}

  return grain.MapDataset.source(pairs).map_with_index(build)


def held_out_items(num_items: int, seed: int) -> np.ndarray:
  """Item indices whose title/SID examples are kept for evaluation only."""
  rng = np.random.default_rng([seed, 7])
  return np.sort(rng.permutation(num_items)[:max(1, int(HELD_OUT_ITEM_FRACTION * num_items))])


def item_tasks(items, sids: list[str], seed: int, held_out: bool) -> dict[str, grain.MapDataset]:
  """title_to_sid and sid_to_title over the training items (or over the held-out ones)."""
  out_set = set(held_out_items(len(items), seed).tolist())
  rows = [i for i in range(len(items)) if (i in out_set) == held_out]
  titles = grain.MapDataset.source(rows).map(lambda i: (i, text(items[i]["title"])))

  def title_to_sid(index, row):
    i, title = row
    template = TITLE_TO_SID[int(_rng(seed, "title_to_sid", index).integers(len(TITLE_TO_SID)))]
    return {"task": "title_to_sid", "prompt": template.format(title=title), "answer": sids[i]}

  def sid_to_title(index, row):
    i, title = row
    template = SID_TO_TITLE[int(_rng(seed, "sid_to_title", index).integers(len(SID_TO_TITLE)))]
    return {"task": "sid_to_title", "prompt": template.format(sid=sids[i]), "answer": title}

  return {"title_to_sid": titles.map_with_index(title_to_sid),
          "sid_to_title": titles.map_with_index(sid_to_title)}


def sources(sequences, items, sids: list[str], max_history: int, seed: int,
            held_out: bool = False) -> dict[str, grain.MapDataset]:
  """Every task's source: training examples, or (held_out=True) the evaluation examples
  (`sequences` is then the validation split)."""
  return {"next_item": next_item(sequences, sids, max_history, seed),
          "steering": steering(sequences, items, sids, max_history, seed),
          "co_purchase": co_purchase(sequences, sids, seed),
          **item_tasks(items, sids, seed, held_out=held_out)}


def load_sids(path: str) -> list[str]:
  """Token strings per item index from WORKDIR/ids/semantic_ids.tsv."""
  with open(path, encoding="utf-8") as f:
    header = f.readline().rstrip("\n").split("\t")
    column = header.index("tokens")
    return [line.rstrip("\n").split("\t")[column] for line in f]
