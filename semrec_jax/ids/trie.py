"""A prefix trie over semantic IDs as dense per-level tables, for constrained decoding.

Level l's table has one row per distinct prefix of length l (row 0 of level 0 is the empty
prefix) and K columns: entry [row, code] is the row of the extended prefix in level l+1, or -1
where no item continues that way. The last level's entries are item indices.
"""

import numpy as np


def build(ids: np.ndarray, codebook_size: int) -> list[np.ndarray]:
  """ids: [N, levels] distinct code tuples. Returns `levels` int32 tables."""
  if len({tuple(r) for r in ids}) != len(ids):
    raise ValueError("semantic IDs are not unique; the trie needs one leaf per item")
  tables, rows = [], np.zeros(len(ids), dtype=np.int64)  # every item starts at the root
  num_rows = 1
  for level in range(ids.shape[1]):
    table = np.full((num_rows, codebook_size), -1, dtype=np.int32)
    if level == ids.shape[1] - 1:
      table[rows, ids[:, level]] = np.arange(len(ids))
    else:
      keys = rows * codebook_size + ids[:, level]
      unique, next_rows = np.unique(keys, return_inverse=True)
      table[unique // codebook_size, unique % codebook_size] = np.arange(len(unique))
      rows, num_rows = next_rows, len(unique)
    tables.append(table)
  return tables


def lookup(tables: list[np.ndarray], codes) -> int:
  """Item index for a full code tuple, or -1 if it names no item (or is invalid on the way)."""
  row = 0
  for table, code in zip(tables, codes):
    row = int(table[row, code])
    if row < 0:
      return -1
  return row


def save(path: str, tables: list[np.ndarray]) -> None:
  np.savez_compressed(path, **{f"level_{i}": t for i, t in enumerate(tables)})


def load(path: str) -> list[np.ndarray]:
  with np.load(path) as f:
    return [f[f"level_{i}"] for i in range(len(f.files))]
