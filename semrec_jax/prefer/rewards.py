"""Rule rewards for the preference stage: what the catalog says of one rollout, scored with the
same checks `eval` reports (eval/language.py, eval/steering.py), so a reward never disagrees
with the metric it is meant to raise.

Each function scores one group or one rollout; an item index of -1 is an ID that names no item
(language.parse_items), which no rule counts as right."""

import math

from semrec_jax.eval import language


def rank_penalties(group_size: int) -> list[float]:
  """Beam rank r's penalty when it misses: 1 / log2(r + 2), scaled so the group's sum is 1 (a
  wrong item the model ranked first costs most)."""
  weights = [1.0 / math.log2(r + 2) for r in range(group_size)]
  return [w / sum(weights) for w in weights]


def next_item(candidates: list[int], target: int, rank_aware: bool = True, codes=None,
              prefix_credit: float = 0.0) -> list[float]:
  """One prompt's group of candidates, in the decoder's order: 1 for the true next item, 0 for
  the rest. Rank-aware (MiniOneRec's ranking reward): where the group holds the target, each miss
  also loses rank_penalties() of its beam rank, so the group learns to put the target first.
  prefix_credit > 0 (codes: [items, levels] semantic IDs): a miss also earns prefix_credit x the
  share of levels its code prefix shares with the target's, so a group without the target still
  tells nearer items (similar items share prefixes) from farther ones; without it such a group
  is all zeros and teaches nothing."""
  hits = [float(c == target) for c in candidates]
  near = [0.0] * len(candidates)
  if prefix_credit:
    near = [0.0 if h or c < 0 else prefix_credit * shared_prefix(codes[c], codes[target])
            / len(codes[target]) for c, h in zip(candidates, hits)]
  if not rank_aware or not any(hits):
    return [h + n for h, n in zip(hits, near)]
  penalties = rank_penalties(len(candidates))
  return [h if h else n - p for h, n, p in zip(hits, near, penalties)]


def shared_prefix(a, b) -> int:
  """Leading code levels two semantic IDs have in common."""
  count = 0
  for x, y in zip(a, b):
    if x != y:
      break
    count += 1
  return count


def steering(item: int, kind: str, wanted: str, values: dict) -> float:
  """1 when the item holds the asked value of attribute `kind` (price: the band asked for).
  `values`: steering.attribute_values of the catalog."""
  if kind not in values:
    raise ValueError(f"no attribute kind {kind!r} in the catalog's values; known: {list(values)}")
  return float(item >= 0 and wanted in values[kind][item])


def explanation(generated: str, trie, values, history: list[int]) -> float:
  """The share of the reason's claims that hold for both the pick and the history item it names,
  and 0 unless that item is in the user's history (the reason must tie the pick to the history)
  and at least one claim is made. `values`: language.item_values of the catalog."""
  held, said, parsed = language.explanation_claims(generated, trie, values)
  if not said or parsed["items"][1] not in {int(h) for h in history}:
    return 0.0
  return held / said


def bundle_name(name: str, members: list[int], values, known=None) -> float:
  """1 when the name claims an attribute and every claim holds for every member."""
  return float(language.bundle_name_accurate(name, members, values, known))


def validity(generated: str, trie) -> float:
  """1 when every semantic ID written names a real item (and at least one is written)."""
  found = language.parse_items(generated, trie)
  return float(bool(found) and min(found) >= 0)
