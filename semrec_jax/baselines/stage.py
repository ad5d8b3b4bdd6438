"""The `baselines` stage: popularity, item-ID SASRec and semantic-ID SASRec on the LM's split.

Output in WORKDIR/baselines/<model>/: metrics.json with the key names of WORKDIR/eval/metrics.json
(full-catalog ranking per split, the seed's sampled protocol on test), info.json (users, steps,
best step, validation history, seconds) and, for SASRec, Orbax checkpoints (best and latest). A
model whose metrics.json exists is skipped, so an interrupted stage resumes with the next model
(and a SASRec run from its latest checkpoint).
"""

import dataclasses
import os
import time

import jax
import numpy as np
from absl import logging
from flax import nnx

from semrec_jax import parallel, storage
from semrec_jax.baselines import losses, sequences
from semrec_jax.baselines.trainer import Trainer, train
from semrec_jax.data import tfds_builders
from semrec_jax.ids import assign
from semrec_jax.models.sasrec import CodeSASRec, ComposedSASRec, ItemSASRec, SASRecConfig
from semrec_jax.protocol import metrics, personalisation, popularity, ranked_lists
from semrec_jax.stages import StageError

MODELS = ("popularity", "sasrec_id", "sasrec_sid")
SID_MODELS = {"levels": CodeSASRec, "composed": ComposedSASRec}  # config.baselines.sid_model
SPLITS = ("validation", "test")
PROTOCOL = ("leave-one-out (last item test, second-to-last validation); full ranking over the "
            "catalog, history items not excluded; sampled: target vs {n} random items outside the "
            "user's history")


def build(name: str, c, num_items: int, codes: np.ndarray | None) -> nnx.Module:
  """A SASRec model named `name` (sasrec_id | sasrec_sid) from config.baselines."""
  config = SASRecConfig(num_items=num_items, max_len=c.max_len, dim=c.dim, heads=c.heads,
                        layers=c.layers, dropout=c.dropout)
  if name == "sasrec_id":
    return ItemSASRec(config, nnx.Rngs(c.seed))
  config = dataclasses.replace(config, dim=c.get("sid_dim") or c.dim, levels=codes.shape[1],
                               codebook_size=int(codes.max()) + 1)
  return SID_MODELS[c.sid_model](config, codes, nnx.Rngs(c.seed))


def measure(top: dict[str, np.ndarray], targets: dict[str, np.ndarray],
            sampled: np.ndarray | None, negatives: int, counts: np.ndarray,
            seed: int) -> dict[str, float]:
  """metrics.json of one model: ranked lists per split; `sampled` [users, 1 + negatives] scores
  of each test target (column 0) and its negatives; `counts` the training split's item counts
  (for how personal the test lists are)."""
  out = {}
  for split in SPLITS:
    out.update(metrics.ranking_metrics(top[split], targets[split], split))
  out.update(personalisation.list_personalisation(top["test"], counts, seed))
  if sampled is not None:
    out.update(metrics.sampled_metrics(sampled[:, 0], sampled[:, 1:], f"sampled{negatives}"))
  return {k: round(v, 5) if v is not None else None for k, v in out.items()}


def _write(folder: str, name: str, value) -> None:
  storage.write_json(os.path.join(folder, name), value)


def baselines(config, workdir: str, out_dir: str) -> dict[str, dict]:
  c = config.baselines
  unknown = sorted(set(c.models) - set(MODELS))
  if unknown or c.loss not in losses.ITEM_LOSSES or c.sid_model not in SID_MODELS:
    raise StageError(f"config.baselines: unknown models {unknown} (known: {MODELS}), loss "
                     f"{c.loss!r} (known: {losses.ITEM_LOSSES}) or sid_model {c.sid_model!r} "
                     f"(known: {tuple(SID_MODELS)})")
  data_dir = os.path.join(workdir, "data")
  split_records = {split: tfds_builders.read_all(tfds_builders.sequences_source(data_dir, split))
                   for split in ("train", *SPLITS)}
  train_records = split_records["train"]
  num_items = len(tfds_builders.items_source(data_dir))
  users = metrics.users_to_evaluate(len(train_records), c.max_users, c.seed)
  evaluated = {split: [split_records[split][int(u)] for u in users] for split in SPLITS}
  targets = {split: np.asarray([int(r["target"]) for r in evaluated[split]]) for split in SPLITS}
  if c.sampled_negatives:
    exclude = [set(int(i) for i in r["history"]) | {int(r["target"])} for r in evaluated["test"]]
    try:
      negatives = metrics.sample_negatives(num_items, exclude, c.sampled_negatives, c.seed)
    except metrics.TooFewItems as e:
      raise StageError(f"config.baselines.sampled_negatives={c.sampled_negatives}: {e}; lower "
                       "it, or 0 to skip the sampled protocol") from None
    candidates = np.concatenate([targets["test"][:, None], negatives], axis=1).astype(np.int32)
  val_users = metrics.users_to_evaluate(len(train_records), c.val_users, c.seed + 1)
  validation = split_records["validation"]
  val_rows = sequences.history_rows([validation[int(u)] for u in val_users], num_items, c.max_len)
  val_targets = np.asarray([int(validation[int(u)]["target"]) for u in val_users])
  inputs, next_items = sequences.train_rows(train_records, num_items, c.max_len)
  mesh = parallel.make_mesh(config.mesh)
  counts = popularity.train_counts(train_records, num_items)
  results = {}
  for name in c.models:
    folder = os.path.join(out_dir, name)
    storage.path(folder).mkdir(parents=True, exist_ok=True)
    if storage.exists(os.path.join(folder, "metrics.json")):
      logging.info("baselines: %s already measured in %s", name, folder)
      results[name] = storage.read_json(os.path.join(folder, "metrics.json"))
      continue
    started, k = time.time(), max(metrics.CUTOFFS)
    info = {"model": name, "users": len(users), "protocol": PROTOCOL.format(
        n=c.sampled_negatives), "sampled_users": len(users) if c.sampled_negatives else 0}
    if name == "popularity":
      top = {s: np.broadcast_to(popularity.ranking(counts, k), (len(users), k))
             for s in SPLITS}
      sampled = counts[candidates].astype(np.float64) if c.sampled_negatives else None
    else:
      codes = (assign.read_table(os.path.join(workdir, "ids", "semantic_ids.tsv"))[1]
               if name == "sasrec_sid" else None)
      trainer = Trainer(build(name, c, num_items, codes), c, mesh)
      result = train(trainer, inputs, next_items, val_rows, val_targets,
                     os.path.join(folder, "checkpoints"), name)
      top, sampled = {}, None
      for split in SPLITS:
        rows = sequences.history_rows(evaluated[split], num_items, c.max_len)
        wanted = candidates if split == "test" and c.sampled_negatives else targets[split][:, None]
        top[split], scores = trainer.rank(rows, wanted, k, c.eval_batch_size)
        if split == "test" and c.sampled_negatives:
          sampled = scores
      code_levels = name == "sasrec_sid" and c.sid_model == "levels"
      info.update({"loss": "code cross-entropy" if code_levels else c.loss,
                   "sid_model": c.sid_model if name == "sasrec_sid" else None,
                   "parameters": sum(int(x.size) for x in
                                     jax.tree.leaves(nnx.state(trainer.model, nnx.Param))),
                   "best_step": result.best_step, "stopped_early": result.stopped_early,
                   "steps": result.history[-1]["step"], "train_seconds": round(result.seconds, 1),
                   "history": result.history})
    results[name] = measure(top, targets, sampled, c.sampled_negatives, counts, c.seed)
    info["seconds"] = round(time.time() - started, 1)
    ranked_lists.save(folder, users, top, targets)
    _write(folder, "metrics.json", results[name])
    _write(folder, "info.json", info)
    logging.info("baselines: %s test Recall@10 %.4f NDCG@10 %.4f (%d users, %.0f s)", name,
                 results[name]["test/recall@10"], results[name]["test/ndcg@10"], len(users),
                 info["seconds"])
  return results
