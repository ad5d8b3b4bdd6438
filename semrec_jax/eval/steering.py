"""Steering: does the LM follow a request in words? For held-out users and each attribute kind
the catalog has, a request ("something for PS4") is drawn from the catalog's values of that kind;
precision@10 is the share of the 10 recommendations that have the value, against the same users'
unsteered recommendations (baseline). recall@10 asks for the true next item's own value and checks
that the item is among the 10. Decoding is restricted to real items, never to matching ones: the
numbers measure the model following words."""

import numpy as np

from semrec_jax.data.tfds_builders import text
from semrec_jax.eval import prompts
from semrec_jax.lm import phrasing, tasks

MIN_ITEMS_PER_VALUE = tasks.MIN_ITEMS_PER_VALUE  # as training draws requests


def attribute_values(items) -> dict[str, list[set[str]]]:
  """Per steering kind, each item's set of values (multi-valued fields split on '|')."""
  out = {kind: [] for kind in phrasing.STEER_KINDS}
  for i in range(len(items)):
    row = items[i]
    for kind in phrasing.STEER_KINDS:
      if kind == "price":  # the bands it is within: "under $20" asks for band "20"
        out[kind].append(set(phrasing.price_bands(row)))
      else:
        out[kind].append({v.strip() for v in text(row[kind]).split("|") if v.strip()})
  return out


def requestable(values: list[set[str]]) -> dict[str, int]:
  """Values held by at least MIN_ITEMS_PER_VALUE items, with their item counts."""
  counts: dict[str, int] = {}
  for item_values in values:
    for v in item_values:
      counts[v] = counts.get(v, 0) + 1
  return {v: n for v, n in sorted(counts.items()) if n >= MIN_ITEMS_PER_VALUE}


def draw(options: dict[str, int], count: int, rng: np.random.Generator) -> list[str]:
  """`count` values of `options` (requestable()), each drawn in proportion to its item count."""
  names, weights = list(options), np.asarray(list(options.values()), np.float64)
  return [names[i] for i in rng.choice(len(names), count, p=weights / weights.sum())]


def _share(ranked: np.ndarray, values: list[set[str]], wanted: list[str]) -> float:
  return float(np.mean([np.mean([w in values[i] if i >= 0 else False for i in row])
                        for row, w in zip(ranked, wanted)]))


def evaluate(decoder, lm, records: list[dict], baseline: np.ndarray, values: dict,
             max_history: int, seed: int, reasons: dict, k: int = 10) -> tuple[dict, list[dict]]:
  """(metrics, samples). `baseline` [users, >= k]: the same users' unsteered recommendations;
  a metric that cannot be computed is None, with the reason put in `reasons`."""
  out, samples, precision, base_precision = {}, [], [], []
  for kind in phrasing.STEER_KINDS:
    options = requestable(values[kind])
    if not options:
      reason = f"no {kind} value is held by {MIN_ITEMS_PER_VALUE}+ catalog items"
      for name in ("precision@10", "baseline_precision@10", "recall@10"):
        out[f"steer/{kind}/{name}"] = None
        reasons[f"steer/{kind}/{name}"] = reason
      continue
    rng = np.random.default_rng([seed, phrasing.STEER_KINDS.index(kind)])
    wanted = draw(options, len(records), rng)
    texts = [prompts.steered(r["history"], lm.sids, max_history, phrasing.constraint(kind, w))
             for r, w in zip(records, wanted)]
    steered, _ = decoder.items(prompts.encode(lm.tokenizer, texts), k)
    out[f"steer/{kind}/precision@10"] = _share(steered[:, :k], values[kind], wanted)
    out[f"steer/{kind}/baseline_precision@10"] = _share(baseline[:, :k], values[kind], wanted)
    precision.append(out[f"steer/{kind}/precision@10"])
    base_precision.append(out[f"steer/{kind}/baseline_precision@10"])
    title = lambda i: text(lm.items[int(i)]["title"])
    samples += [{"kind": "steering", "attribute": kind, "request": phrasing.constraint(kind, w),
                 "history": [title(i) for i in list(r["history"])[-max_history:]],
                 "recommended": [title(i) for i in s[:k]],
                 "satisfied": [w in values[kind][i] for i in s[:k]]}
                for r, w, s in list(zip(records, wanted, steered))[:3]]
    # Recall: ask for the true next item's own value.
    tightest = (lambda v: float(v)) if kind == "price" else (lambda v: v)  # "under $20" < $100
    own = [(r, sorted(values[kind][int(r["target"])] & set(options), key=tightest))
           for r in records]
    own = [(r, v[0]) for r, v in own if v]
    if own:
      texts = [prompts.steered(r["history"], lm.sids, max_history, phrasing.constraint(kind, v))
               for r, v in own]
      found, _ = decoder.items(prompts.encode(lm.tokenizer, texts), k)
      targets = np.asarray([int(r["target"]) for r, _ in own])
      out[f"steer/{kind}/recall@10"] = float(np.mean((found[:, :k] == targets[:, None]).any(1)))
    else:
      out[f"steer/{kind}/recall@10"] = None
      reasons[f"steer/{kind}/recall@10"] = f"no evaluated user's next item has a {kind}"
  out["steer/precision@10"] = float(np.mean(precision)) if precision else None
  out["steer/baseline_precision@10"] = float(np.mean(base_precision)) if precision else None
  if not precision:
    for name in ("steer/precision@10", "steer/baseline_precision@10"):
      reasons[name] = "the catalog has no attribute to steer by"
  return out, samples
