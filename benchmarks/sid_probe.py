r"""What a set of semantic IDs is worth to a recommender: the semantic-ID SASRec trained on each
variant's codes, the same budget for every row; prints one JSON line per variant.

  python benchmarks/sid_probe.py --config=configs/demo.py --workdir=W \
      --variants=random,kmeans,rqvae:1:0,rqvae:0:1,rqvae:1:1,rqvae:1:2

W: a workdir after `prepare` and `embed` (embeddings/items.npy and collaborative.npy). Each
variant gets W/probes/<variant>/ (data and embeddings linked, its own ids/ and baselines/):
- rqvae:T:C  the ids stage with config.ids.text_weight=T and collaborative_weight=C;
- rqvae:T:C:nearest (or :unique)  the same with config.ids.last_level set: `nearest` is TIGER's
             structure (L semantic levels and a collision level); the RQ-VAE trained for rqvae:T:C
             is reused when that variant ran first (only the assignment differs);
- kmeans     residual k-means (levels x codebook size, 25 Lloyd iterations a level) on the
             rqvae:1:2 inputs, nearest code at every level plus the collision level: the RQ-VAE
             without its encoder, decoder or training;
- random     the rqvae:1:0 codes dealt to items in a random order: codes of the same shape that
             mean nothing (the floor).
The SASRec settings are the config's `baselines` section (`sid_model`: levels writes
W/probes/<variant>/baselines/, any other W/probes/<variant>/baselines_<sid_model>/, on the same
codes); choose on validation NDCG@10.
"""

import json
import os
import shutil
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from semrec_jax import backend, console, storage
from semrec_jax.baselines.stage import baselines
from semrec_jax.ids import assign, trie
from semrec_jax.ids.kmeans import kmeans
from semrec_jax.ids.stage import item_vectors, semantic_ids

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Workdir after prepare and embed.")
_VARIANTS = flags.DEFINE_list("variants", ["random", "kmeans", "rqvae:1:0", "rqvae:1:2"],
                              "Code variants, in order.")

METRICS = ("validation/ndcg@10", "test/recall@10", "test/ndcg@10", "top10/pairwise_jaccard",
           "top10/catalog_coverage", "top10/popular_share")


def _link(workdir: str, folder: str) -> None:
  os.makedirs(folder, exist_ok=True)
  for name in ("data", "embeddings"):
    if not os.path.exists(os.path.join(folder, name)):
      os.symlink(os.path.abspath(os.path.join(workdir, name)), os.path.join(folder, name))


def _write_ids(folder: str, item_ids: list[str], ids: np.ndarray, codebook_size: int) -> None:
  os.makedirs(folder, exist_ok=True)
  assign.write_table(os.path.join(folder, "semantic_ids.tsv"), item_ids, ids, codebook_size)
  trie.save(os.path.join(folder, "trie.npz"), trie.build(ids, codebook_size))


def residual_kmeans(vectors: np.ndarray, levels: int, k: int, seed: int) -> np.ndarray:
  """Codes [N, levels] (nearest at every level) plus the collision level."""
  residual, codes = vectors.astype(np.float32), []
  for level in range(levels):
    centroids, assignment = kmeans(jax.random.key(seed + level), jnp.asarray(residual), k)
    assignment = np.asarray(assignment)
    codes.append(assignment)
    residual = residual - np.asarray(centroids)[assignment]
  codes = np.stack(codes, axis=1)
  extra = assign.collision_level(codes, (residual ** 2).sum(-1))
  if extra.max() >= k:
    raise SystemExit(f"kmeans: {extra.max() + 1} items share one code tuple, more than the {k} "
                     "codes of the collision level")
  return np.concatenate([codes, extra[:, None]], axis=1)


def main(argv):
  del argv
  backend.choose()
  config = _CONFIG.value
  workdir, c = _WORKDIR.value, _CONFIG.value.ids
  console.setup(os.path.join(workdir, "logs", "sid_probe.log"))  # the stages' INFO lines go there
  num_items = len(storage.read_text(os.path.join(workdir, "embeddings", "item_ids.txt"))
                  .splitlines())
  for variant in _VARIANTS.value:
    started, folder = time.time(), os.path.join(workdir, "probes", variant.replace(":", "_"))
    _link(workdir, folder)
    ids_dir = os.path.join(folder, "ids")
    if not storage.exists(os.path.join(ids_dir, "semantic_ids.tsv")):
      if variant.startswith("rqvae:"):
        _, text_weight, collaborative_weight, *last_level = variant.split(":")
        c.text_weight, c.collaborative_weight = float(text_weight), float(collaborative_weight)
        c.last_level = last_level[0] if last_level else ""
        os.makedirs(ids_dir, exist_ok=True)
        trained = os.path.join(workdir, "probes", f"rqvae_{text_weight}_{collaborative_weight}",
                               "ids", "checkpoints")
        if last_level and os.path.isdir(trained) and not os.path.exists(
            os.path.join(ids_dir, "checkpoints")):
          shutil.copytree(trained, os.path.join(ids_dir, "checkpoints"))
        semantic_ids(config, folder, ids_dir)
      else:
        c.text_weight, c.collaborative_weight = 1.0, 2.0
        vectors, item_ids = item_vectors(c, workdir, num_items)
        if variant == "kmeans":
          ids = residual_kmeans(vectors, c.levels, c.codebook_size, c.seed)
        elif variant == "random":
          text_ids = os.path.join(workdir, "probes", "rqvae_1_0", "ids", "semantic_ids.tsv")
          if not storage.exists(text_ids):
            raise SystemExit("random deals out the rqvae:1:0 codes: list rqvae:1:0 before it")
          ids = assign.read_table(text_ids)[1]
          ids = ids[np.random.default_rng(c.seed).permutation(len(ids))]
        else:
          raise SystemExit(f"unknown variant {variant!r}")
        _write_ids(ids_dir, item_ids, ids, c.codebook_size)
    config.baselines.models = ("sasrec_sid",)
    out = os.path.join(folder, "baselines" + ("" if config.baselines.sid_model == "levels"
                                              else f"_{config.baselines.sid_model}"))
    os.makedirs(out, exist_ok=True)
    found = baselines(config, folder, out)["sasrec_sid"]
    print(json.dumps({"variant": variant, "sid_model": config.baselines.sid_model,
                      **{k: found.get(k) for k in METRICS},
                      "seconds": round(time.time() - started, 1)}), flush=True)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
