"""The `ids` stage: train the RQ-VAE on item embeddings, assign semantic IDs, measure them.

Output in WORKDIR/ids/: checkpoints/ (Orbax: latest and best by validation loss),
semantic_ids.tsv (item_index, item_id, codes, tokens: the L codes, then the collision level where
config.ids.collision_level writes it), trie.npz (prefix tables), code_vectors.npy (float32
[ID levels, codebook_size, dim]: what each code means in the quantised space, the LM's starting
rows for its ID tokens), metrics.json, history.json (training curve), code_usage.png and
collision_groups.png.
"""

import os
import time

import numpy as np
from absl import logging

from semrec_jax import parallel, storage
from semrec_jax.data import tfds_builders
from semrec_jax.data.errors import DataError
from semrec_jax.embed.stage import check_finite, read_ids
from semrec_jax.ids import assign as assign_lib
from semrec_jax.ids import metrics, recipes, trie
from semrec_jax.ids.code_vectors import code_vectors
from semrec_jax.ids.train import train
from semrec_jax.stages import StageError


def load_embeddings(workdir: str, num_items: int) -> tuple[np.ndarray, list[str]]:
  """Item embeddings from the embed stage, checked against the catalog's size."""
  folder = os.path.join(workdir, "embeddings")
  path = os.path.join(folder, "items.npy")
  if not storage.path(path).is_file():
    raise DataError(f"no embeddings at {path}; run the 'embed' stage first")
  ids = read_ids(os.path.join(folder, "item_ids.txt"))
  return check_embeddings(storage.load_array(path), ids, num_items, path), ids


def item_vectors(c, workdir: str, num_items: int) -> tuple[np.ndarray, list[str]]:
  """What the codes quantise: the text and collaborative vectors of the embed stage, each unit
  length per item, weighted by config.ids.text_weight and collaborative_weight and concatenated
  (a part of weight 0 is left out)."""
  text, ids = load_embeddings(workdir, num_items)
  parts = []
  if c.text_weight:
    parts.append(c.text_weight * _unit(text))
  if c.collaborative_weight:
    path = os.path.join(workdir, "embeddings", "collaborative.npy")
    if not storage.path(path).is_file():
      raise DataError(f"config.ids.collaborative_weight={c.collaborative_weight} but {path} does "
                      "not exist: run the embed stage with config.embed.collaborative_dim > 0, or "
                      "pass --config.ids.collaborative_weight=0")
    vectors = check_embeddings(storage.load_array(path), ids, num_items, path)
    parts.append(c.collaborative_weight * _unit(vectors))
  if not parts:
    raise DataError("config.ids.text_weight and collaborative_weight are both 0: the codes "
                    "would quantise nothing")
  return np.concatenate(parts, axis=1), ids


def _unit(vectors: np.ndarray) -> np.ndarray:
  norms = np.linalg.norm(vectors, axis=1, keepdims=True)
  return vectors / np.where(norms > 0, norms, 1.0)  # a zero row (no neighbours) stays zero


def check_embeddings(vectors: np.ndarray, ids: list[str], num_items: int,
                     where: str, dim: int | None = None) -> np.ndarray:
  if vectors.ndim != 2:
    raise DataError(f"{where}: expected [items, dim] embeddings, got shape {vectors.shape}")
  if dim is not None and vectors.shape[1] != dim:
    raise DataError(f"{where}: embeddings have dim {vectors.shape[1]}, expected {dim}")
  if len(vectors) != num_items or len(ids) != num_items:
    raise DataError(f"{where}: {len(vectors)} rows and {len(ids)} ids for a catalog of "
                    f"{num_items} items")
  check_finite(vectors, ids, where)
  return vectors.astype(np.float32)


def check(c) -> None:
  """config.ids errors found before any stage runs."""
  try:
    recipes.get(c.recipe)
  except ValueError as e:
    raise StageError(str(e)) from None
  if c.get("last_level") and c.last_level not in recipes.LAST_LEVELS:
    raise StageError(f"config.ids.last_level: unknown {c.last_level!r}; known: "
                     f"{list(recipes.LAST_LEVELS)}, or \"\" for the recipe's")
  mode = c.get("collision_level", "always")
  if mode not in assign_lib.COLLISION_LEVELS:
    raise StageError(f"config.ids.collision_level: unknown {mode!r}; known: "
                     f"{list(assign_lib.COLLISION_LEVELS)}")


def semantic_ids(config, workdir: str, out_dir: str) -> dict:
  c = config.ids
  check(c)
  recipe = recipes.get(c.recipe)
  last_level = c.get("last_level") or recipe.last_level
  catalog = tfds_builders.items_source(os.path.join(workdir, "data"))
  embeddings, item_ids = item_vectors(c, workdir, len(catalog))
  start = time.time()
  result = train(c, recipe, embeddings, parallel.make_mesh(config.mesh),
                 os.path.join(out_dir, "checkpoints"))
  train_seconds = time.time() - start
  assigned = assign_lib.assign(result.model, embeddings, last_level,
                               c.get("collision_level", "always"))
  ids = assigned["ids"]
  platforms = [tfds_builders.text(catalog[i]["platform"]) for i in range(len(catalog))]
  report = {"recipe": recipe.name, "last_level": last_level, "num_items": len(ids),
            "levels": c.levels, "collision_level_written": ids.shape[1] > c.levels,
            "inputs": {"text": c.text_weight, "collaborative": c.collaborative_weight},
            "codebook_size": c.codebook_size, "recon_mse": round(assigned["recon_mse"], 6),
            **metrics.code_stats(assigned["codes"], c.codebook_size),
            **metrics.collision_stats(assigned["codes"]),
            "collision_rate_nearest_codes":
                metrics.collision_stats(assigned["nearest_codes"])["collision_rate"],
            "prefix_purity": metrics.prefix_purity(assigned["codes"][:, 0], platforms),
            **({} if any(platforms) else {"prefix_purity_reason": "no item has a platform"}),
            "final_ids_unique": len({tuple(r) for r in ids}) == len(ids),
            "best_step": result.best_step, "best_val_loss": round(result.best_val_loss, 6),
            "train_seconds": round(train_seconds, 1),
            "seconds": round(time.time() - start, 1)}
  assign_lib.write_table(os.path.join(out_dir, "semantic_ids.tsv"), item_ids, ids, c.codebook_size)
  trie.save(os.path.join(out_dir, "trie.npz"), trie.build(ids, c.codebook_size))
  storage.save_array(os.path.join(out_dir, "code_vectors.npy"),
                     code_vectors(embeddings, np.asarray(ids), c.codebook_size))
  metrics.plot(assigned["codes"], c.codebook_size, os.path.join(out_dir, ""),
               f"RQ-VAE ({recipe.name})")
  storage.write_json(os.path.join(out_dir, "history.json"), result.history, indent=1)
  storage.write_json(os.path.join(out_dir, "metrics.json"), report)
  logging.info("semantic IDs: %s", report)
  return report
