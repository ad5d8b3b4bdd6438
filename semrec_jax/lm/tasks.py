"""Task builders: grain MapDatasets of {"task", "prompt", "answer"} examples built from the
prepared data and the semantic IDs. Items are written as semantic-ID token strings.

Hygiene: training examples come only from each user's training part (the `train` split: history and
target both precede the validation and test items); held-out examples for evaluation loss come from
the `validation` split, and for the item tasks from a fixed 2% of items left out of training.

Templates (the phrasing is drawn per example from a seeded generator, so runs are reproducible):
  next_item     "<history phrasing with items joined by ', '> <|rec|>" -> target SID
  title_to_sid  "<question naming the title>" -> SID
  sid_to_title  "<question naming the SID>" -> title
"""

import zlib

import grain
import numpy as np

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
HELD_OUT_ITEM_FRACTION = 0.02


def _rng(seed: int, task: str, index: int) -> np.random.Generator:
  return np.random.default_rng([seed, zlib.crc32(task.encode()), index])


def _text(value) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


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


def held_out_items(num_items: int, seed: int) -> np.ndarray:
  """Item indices whose title/SID examples are kept for evaluation only."""
  rng = np.random.default_rng([seed, 7])
  return np.sort(rng.permutation(num_items)[:max(1, int(HELD_OUT_ITEM_FRACTION * num_items))])


def item_tasks(items, sids: list[str], seed: int, held_out: bool) -> dict[str, grain.MapDataset]:
  """title_to_sid and sid_to_title over the training items (or over the held-out ones)."""
  out_set = set(held_out_items(len(items), seed).tolist())
  rows = [i for i in range(len(items)) if (i in out_set) == held_out]
  titles = grain.MapDataset.source(rows).map(lambda i: (i, _text(items[i]["title"])))

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
          **item_tasks(items, sids, seed, held_out=held_out)}


def load_sids(path: str) -> list[str]:
  """Token strings per item index from WORKDIR/ids/semantic_ids.tsv."""
  with open(path, encoding="utf-8") as f:
    header = f.readline().rstrip("\n").split("\t")
    column = header.index("tokens")
    return [line.rstrip("\n").split("\t")[column] for line in f]
