"""The run in numbers: what each stage measured, read from its artifacts, as a few readable lines
(the end of `semrec_jax.main`) and as tables for the report."""

import json
import os

from semrec_jax import storage
from semrec_jax.protocol import personalisation

BASELINES = ("popularity", "sasrec_id", "sasrec_sid")
STEER_KINDS = ("platform", "genre", "brand", "product_type", "price")
# The evaluated LMs: (label, the key of collect()'s eval metrics; its info under key + "_info").
EVALUATED = (("LM", "eval"), ("LM + prefer", "prefer_eval"))


def _read(path: str):
  if not storage.path(path).is_file():
    return None
  return storage.read_json(path)


def collect(workdir: str) -> dict:
  """Every stage's numbers (None for a stage that has not run)."""
  found = {"data": _read(os.path.join(workdir, "data", "stats.json")),
           "ids": _read(os.path.join(workdir, "ids", "metrics.json")),
           "baselines": {}, "lm": None, "lm_info": None,
           "eval": _read(os.path.join(workdir, "eval", "metrics.json")),
           "eval_info": _read(os.path.join(workdir, "eval", "info.json")),
           # The preference checkpoint, measured by eval on the same users (prefer stage on).
           "prefer_eval": _read(os.path.join(workdir, "eval", "prefer", "metrics.json")),
           "prefer_eval_info": _read(os.path.join(workdir, "eval", "prefer", "info.json"))}
  for name in BASELINES:
    metrics = _read(os.path.join(workdir, "baselines", name, "metrics.json"))
    if metrics is not None:
      found["baselines"][name] = {**metrics, **(_read(os.path.join(
          workdir, "baselines", name, "info.json")) or {})}
  path = os.path.join(workdir, "lm", "metrics.jsonl")
  if storage.path(path).is_file():
    found["lm"] = [json.loads(line) for line in storage.read_text(path).splitlines()
                   if line.strip()]
  return found


def number(v, digits: int = 4) -> str:
  return "n/a" if v is None else f"{v:.{digits}f}"


def model_rows(found: dict) -> list[tuple]:
  """(model, users, Recall@10, NDCG@10, note, personalisation values) on the test split,
  baselines then the LM."""
  rows = []
  for name, m in found["baselines"].items():
    rows.append((name, f"{m.get('users', 0):,}", m.get("test/recall@10"), m.get("test/ndcg@10"),
                 "", [m.get(k) for k in personalisation.KEYS]))
  for label, key in EVALUATED:
    e, info = found[key], found[f"{key}_info"] or {}
    if e:
      rows.append((f"{label} (beam {info.get('beam_width', '?')})", f"{info.get('users', 0):,}",
                   e.get("test/recall@10"), e.get("test/ndcg@10"),
                   f"popularity on these users: {number(e.get('popularity/test/recall@10'))} / "
                   f"{number(e.get('popularity/test/ndcg@10'))}" if key == "eval" else "",
                   [e.get(k) for k in personalisation.KEYS]))
  return rows


def lines(workdir: str, found: dict, examples: list[str]) -> list[str]:
  """The summary printed at the end of a run (about 30-40 lines)."""
  out = [f"== semrec_jax: what this run made ({workdir}) =="]
  d = found["data"]
  if d:
    out.append(f"data       {d['num_items']:,} items, {d['num_users']:,} users, "
               f"{d['num_interactions']:,} interactions ({d.get('kcore', 0)}-core; last item "
               "test, second-to-last validation)")
  i = found["ids"]
  if i:
    usage = "/".join(f"{100 * u:.0f}" for u in i["codebook_usage"])
    out.append(f"ids        {i['levels']} levels x {i['codebook_size']} codes; codebook use "
               f"{usage}%; collisions {100 * i['collision_rate']:.1f}%; prefix purity "
               f"{number(i.get('prefix_purity'), 2)}")
  rows = model_rows(found)
  if rows:
    out.append("ranking    test split, full catalog, Recall@10 / NDCG@10; top 10s of "
               f"{personalisation.USERS} users: pairwise Jaccard / catalog share / top-"
               f"{personalisation.POPULAR} share:")
    width = max(16, *(len(row[0]) for row in rows))
    out += [f"  {name:<{width}} {users:>7} users  {number(r)}  {number(n)}  "
            f"{'  '.join(number(v, 2) for v in personal)}  {note}".rstrip()
            for name, users, r, n, note, personal in rows]
  out += _prefer_minus_lm(found)
  for label, key in EVALUATED:
    if found[key]:
      out += _steering_and_language(label, found[key], found[f"{key}_info"] or {})
  return out + examples


def _prefer_minus_lm(found: dict) -> list[str]:
  """The preference checkpoint's NDCG@10 minus the LM's per split, paired over the same users:
  whether its lift (or loss) is more than noise."""
  e, info = found["prefer_eval"] or {}, found["prefer_eval_info"] or {}
  splits = [s for s in info.get("splits", ()) if e.get(f"minus_lm/{s}/ndcg@10") is not None]
  if not splits:
    return []
  return ["  LM + prefer minus LM, NDCG@10 on the same users: " + ", ".join(
      f"{s} {e[f'minus_lm/{s}/ndcg@10']:+.4f} (paired standard error "
      f"{e[f'minus_lm/{s}/ndcg@10_stderr']:.4f})" for s in splits)]


def _steering_and_language(label: str, e: dict, info: dict) -> list[str]:
  """The steering and language lines of one evaluated model."""
  out = []
  kinds = [k for k in STEER_KINDS if e.get(f"steer/{k}/precision@10") is not None]
  if kinds:
    out.append(f"steering   {label} precision@10 asked / not asked "
               f"({info.get('steer_users', '?')} users per kind):")
    out.append("  " + "   ".join(f"{k} {e[f'steer/{k}/precision@10']:.2f} / "
                                 f"{e[f'steer/{k}/baseline_precision@10']:.2f}" for k in kinds))
  taught = info.get("explanation_most_taught_reason")
  constant = e.get("lang/explanation_most_taught_reason_faithfulness")
  out.append(f"language   {label} explanations faithful "
             f"{number(e.get('lang/explanation_faithfulness'), 2)}"
             f" ({e.get('lang/explanation_users', '?')} users' next items"
             + (f"; \"{taught}\" said to all: {number(constant, 2)}" if taught else "") + ")")
  out.append(f"           bundle names accurate {number(e.get('lang/bundle_name_accuracy'), 2)}, "
             f"invalid IDs {e.get('invalid_rate', 0):.0%}, duplicates "
             f"{e.get('duplicate_rate', 0):.0%}")
  return out
