"""The `eval` stage: restore the LM's parameters from its Orbax checkpoint and measure it.

Output in WORKDIR/eval/: metrics.json (ranking over the full catalog by constrained beam search
per split, the seed's sampled protocol, popularity on the same users, invalid/duplicate rates,
steering and language metrics; `null_reasons` says why a metric is null), samples.jsonl (readable
examples), info.json (protocol, users, step, timings) and ranked.npz (each user's ranked list and
target per split, for paired comparisons between models measured on the same users). The
preference checkpoint's folder, eval/prefer/, also holds its paired difference from the LM
(`minus_lm/<split>/...` in metrics.json).
"""

import json
import os
import time

import numpy as np
from absl import logging

from semrec_jax import console, multihost, parallel, storage
from semrec_jax.data import tfds_builders
from semrec_jax.data.tfds_builders import text
from semrec_jax.eval import language, ranking, restore, steering
from semrec_jax.lm import decoding, phrasing, tasks
from semrec_jax.protocol import metrics, personalisation, popularity, ranked_lists
from semrec_jax.stages import StageError

PROTOCOL = ("leave-one-out (last item test, second-to-last validation); full ranking over the "
            "catalog by trie-constrained beam search; sampled: target vs {n} random items outside "
            "the user's history, by the sum of code log-probabilities")


def _titles(items, indices) -> list[str]:
  return [text(items[int(i)]["title"]) if i >= 0 else "(none)" for i in indices]


def evaluate(config, workdir: str, out_dir: str, step: int | None = None) -> dict:
  """Measures the LM (its metrics: the returned dict, metrics.json) and, where the prefer stage
  trained one, the preference checkpoint on the same users (in out_dir/prefer/)."""
  mesh = parallel.make_mesh(config.mesh)
  lm = restore.load(workdir, step=step if step is not None else
                    (None if config.eval.step < 0 else config.eval.step), mesh=mesh)
  out, ranked = measure(config, workdir, out_dir, lm, mesh)
  if preference_trained(workdir):
    console.say("eval: the preference checkpoint, on the same users")
    measure(config, workdir, os.path.join(out_dir, "prefer"),
            restore.load(workdir, mesh=mesh, source="prefer"), mesh, reference=ranked)
  return out


def preference_trained(workdir: str) -> bool:
  """Whether the prefer stage left a trained policy (it is off with config.prefer.steps 0); one
  trained from another lm than the workdir's now is refused."""
  path = os.path.join(workdir, "prefer", "info.json")
  if not (storage.exists(path) and storage.read_json(path).get("steps", 0) > 0):
    return False
  stamps = [os.path.join(workdir, name, "fingerprint.json") for name in ("prefer", "lm")]
  if all(storage.exists(p) for p in stamps):
    prefer, lm = (storage.read_json(p) for p in stamps)
    if prefer["upstream"].get("lm") != lm["sha256"]:
      raise StageError(f"{workdir}/prefer was trained from another lm than {workdir}/lm: "
                       "redo it with --stages=prefer,eval --overwrite")
  return True


def measure(config, workdir: str, out_dir: str, lm: restore.TrainedLM, mesh,
            reference: dict | None = None) -> tuple[dict, dict]:
  """Every eval metric of one restored model, written to out_dir (metrics.json, info.json,
  samples.jsonl, ranked.npz): (metrics, {split: ranked lists}). `reference`: another model's
  ranked lists for the same users (measure's second value), to which the paired difference is
  measured (`minus_lm/<split>/...`)."""
  c, started = config.eval, time.time()
  logging.info("eval: LM %s step %d restored (%d items)", lm.stage, lm.step, len(lm.codes))
  decoder = decoding.SidDecoder(lm.model, lm.code_tokens, lm.sid_start, lm.trie, mesh=mesh,
                                batch_size=c.batch_size)
  max_history = lm.config.max_history
  data_dir = os.path.join(workdir, "data")
  read = lambda split: tfds_builders.read_all(tfds_builders.sequences_source(data_dir, split))
  train_records = read("train")
  users = metrics.users_to_evaluate(len(train_records), c.max_users, c.seed)
  width = max(c.beam_width, max(metrics.CUTOFFS))
  counts = popularity.train_counts(train_records, len(lm.codes))
  out, reasons, samples, timings = {}, {}, [], {}
  ranked, targets = {}, {}
  parts = [f"ranking {s}" for s in c.splits] + ["sampled", "steering", "language"]
  bar = console.Progress("eval prefer" if lm.stage == "prefer" else "eval", len(parts))
  for split in c.splits:
    bar.update(parts.index(f"ranking {split}"), f"ranking {split}")
    tick = time.time()
    split_records = read(split)
    records = [split_records[int(u)] for u in users]
    ranked[split] = ranking.rank(decoder, lm, records, width, max_history)
    targets[split] = np.asarray([int(r["target"]) for r in records])
    out.update(metrics.ranking_metrics(ranked[split], targets[split], split))
    if reference is not None:
      out.update(metrics.paired_difference(reference[split], ranked[split], targets[split],
                                           f"minus_lm/{split}"))
    out.update(popularity.scores(counts, records, split))
    timings[f"rank_{split}_s"] = round(time.time() - tick, 1)
    logging.info("eval: %s recall@10 %.4f ndcg@10 %.4f (%d users, %.0f s)", split,
                 out[f"{split}/recall@10"], out[f"{split}/ndcg@10"], len(users),
                 time.time() - tick)
  split = c.splits[-1]  # the reported split (test by default): `records` are its users
  out.update(metrics.list_quality(np.concatenate([ranked[s] for s in c.splits]),
                                  len(lm.codes)))
  out.update(personalisation.list_personalisation(ranked[split], counts, c.seed))
  if out[personalisation.KEYS[0]] is None:
    reasons[personalisation.KEYS[0]] = "one user ranked: no pair of lists to compare"
  for r, row in list(zip(records, ranked[split]))[:5]:
    history = [int(i) for i in r["history"]][-max_history:]
    samples.append({"kind": "next_item", "split": split, "history": _titles(lm.items, history),
                    "recommended": _titles(lm.items, row[:10]),
                    "target": _titles(lm.items, [int(r["target"])])[0],
                    "hit": bool(int(r["target"]) in row[:10].tolist())})
  bar.update(parts.index("sampled"), "sampled")
  tick = time.time()
  if c.sampled_negatives:
    try:
      out.update(ranking.sampled(decoder, lm, records[:c.sampled_users], c.sampled_negatives,
                                 max_history, c.seed))
    except metrics.TooFewItems as e:
      raise StageError(f"config.eval.sampled_negatives={c.sampled_negatives}: {e}; lower it, "
                       "or 0 to skip the sampled protocol") from None
  timings["sampled_s"] = round(time.time() - tick, 1)

  bar.update(parts.index("steering"), "steering")
  tick = time.time()
  values = steering.attribute_values(lm.items)
  n = min(c.steer_users, len(records))
  found, steer_samples = steering.evaluate(decoder, lm, records[:n], ranked[split][:n], values,
                                           max_history, c.seed, reasons)
  out.update(found)
  samples += steer_samples
  timings["steering_s"] = round(time.time() - tick, 1)

  bar.update(parts.index("language"), "language")
  tick = time.time()
  held_out = tasks.held_out_items(len(lm.codes), lm.config.seed)
  held_out = held_out[:c.max_items] if c.max_items > 0 else held_out
  attrs = phrasing.item_attributes(lm.items)
  bundles = tasks.bundles(attrs, lm.sids, lm.config.seed, held_out=True)
  bundles = [bundles[i] for i in range(min(len(bundles), c.max_bundles))]
  taught = language.most_taught_reason(train_records, attrs, max_history)
  found, lang_samples = language.evaluate(decoder, lm, held_out, records, bundles, max_history,
                                          c.explain_users, attrs, taught, reasons)
  out.update(found)
  samples += lang_samples
  timings["language_s"] = round(time.time() - tick, 1)
  bar.update(len(parts), "done")
  bar.close()

  out = {k: (round(v, 5) if isinstance(v, float) else v) for k, v in out.items()}
  out["null_reasons"] = reasons
  info = {"step": lm.step, "stage": lm.stage, "users": len(users), "beam_width": width,
          "splits": list(c.splits), "protocol": PROTOCOL.format(n=c.sampled_negatives),
          "sampled_users": min(c.sampled_users, len(records)) if c.sampled_negatives else 0,
          "steer_users": n, "held_out_items": len(held_out), "bundles": len(bundles),
          "explanation_most_taught_reason": taught,
          "seconds": round(time.time() - started, 1), **timings}
  if multihost.is_primary():
    storage.write_json(os.path.join(out_dir, "metrics.json"), out)
    storage.write_json(os.path.join(out_dir, "info.json"), info)
    ranked_lists.save(out_dir, users, ranked, targets)
    storage.write_text(os.path.join(out_dir, "samples.jsonl"), "".join(
        json.dumps(sample, ensure_ascii=False, default=int) + "\n" for sample in samples))
  logging.info("eval: %s", {k: v for k, v in out.items() if k != "null_reasons"})
  return out, ranked
