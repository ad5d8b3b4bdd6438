"""A prefix trie over semantic IDs in compressed sparse rows (CSR), for constrained decoding.

Level l has one row per distinct prefix of length l (level 0: the empty prefix, one row). Row r's
children are the entries `row_ptr[l][r] : row_ptr[l][r + 1]` of `codes[l]` (sorted) and
`children[l]`: the row of the extended prefix in level l + 1 or, at the last level, the item index.
Memory grows with the number of items (two int32 per item per level), not with rows x codebook,
so a million-item catalog fits; `dense(l)` gives the [rows, K] table where that is small.
"""

import dataclasses

import numpy as np

from semrec_jax import storage


@dataclasses.dataclass
class Trie:
  codebook_size: int
  row_ptr: list[np.ndarray]   # level l: int32 [rows_l + 1]
  codes: list[np.ndarray]     # level l: int32 [edges_l], the code of each edge
  children: list[np.ndarray]  # level l: int32 [edges_l], next-level row (last level: item index)

  @property
  def levels(self) -> int:
    return len(self.codes)

  def num_rows(self, level: int) -> int:
    return len(self.row_ptr[level]) - 1

  def max_fanout(self, level: int) -> int:
    return int(np.diff(self.row_ptr[level]).max(initial=0))

  def dense(self, level: int) -> np.ndarray:
    """[rows, K] int32: entry [row, code] is the child, or -1 where no item continues."""
    table = np.full((self.num_rows(level), self.codebook_size), -1, np.int32)
    rows = np.repeat(np.arange(self.num_rows(level)), np.diff(self.row_ptr[level]))
    table[rows, self.codes[level]] = self.children[level]
    return table

  def lookup(self, codes) -> int:
    """Item index for a full code tuple, or -1 if it names no item (or is invalid on the way)."""
    row = 0
    for level, code in enumerate(codes):
      start, end = self.row_ptr[level][row], self.row_ptr[level][row + 1]
      at = start + int(np.searchsorted(self.codes[level][start:end], code))
      if at == end or self.codes[level][at] != code:
        return -1
      row = int(self.children[level][at])
    return row

  def allowed(self, items: np.ndarray) -> list[np.ndarray]:
    """Per level l, a bool mask over the children of level l's edges (rows of level l + 1; at the
    last level, items): True where some item in the bool mask `items` [N] lies below. Decoding
    with these masks returns only items of the subset, with no new trie built or compiled."""
    masks = [np.asarray(items, bool)]
    for level in range(self.levels - 1, 0, -1):
      edge_ok = masks[0][self.children[level]]
      row_ok = np.zeros(self.num_rows(level), bool)
      np.logical_or.at(row_ok, np.repeat(np.arange(self.num_rows(level)),
                                         np.diff(self.row_ptr[level])), edge_ok)
      masks.insert(0, row_ok)
    return masks


def build(ids: np.ndarray, codebook_size: int) -> Trie:
  """ids: [N, levels] distinct code tuples -> their trie."""
  ids = np.asarray(ids, np.int64)
  if len({tuple(r) for r in ids}) != len(ids):
    raise ValueError("semantic IDs are not unique; the trie needs one leaf per item")
  if ids.size and (ids.min() < 0 or ids.max() >= codebook_size):
    raise ValueError(f"codes must lie in [0, {codebook_size})")
  order = np.lexsort(ids.T[::-1])  # items sorted by their code tuples
  ids = ids[order]
  rows, num_rows = np.zeros(len(ids), np.int64), 1  # every item starts at the root
  row_ptr, codes, children = [], [], []
  for level in range(ids.shape[1]):
    keys = rows * codebook_size + ids[:, level]  # non-decreasing: ids are sorted
    edges, next_rows = np.unique(keys, return_inverse=True)
    row_ptr.append(np.searchsorted(edges // codebook_size, np.arange(num_rows + 1)).astype(np.int32))
    codes.append((edges % codebook_size).astype(np.int32))
    last = level == ids.shape[1] - 1
    children.append((order if last else np.arange(len(edges))).astype(np.int32))
    rows, num_rows = next_rows.reshape(-1), len(edges)
  return Trie(codebook_size, row_ptr, codes, children)


def save(path: str, trie: Trie) -> None:
  arrays = {"codebook_size": np.int32(trie.codebook_size)}
  for level in range(trie.levels):
    arrays.update({f"row_ptr_{level}": trie.row_ptr[level], f"codes_{level}": trie.codes[level],
                   f"children_{level}": trie.children[level]})
  storage.save_arrays(path, compressed=True, **arrays)


def load(path: str) -> Trie:
  f = storage.load_array(path)
  if not isinstance(f, dict) or "codebook_size" not in f:
    raise ValueError(f"{path} is not a semantic-ID trie written by this version (re-run the "
                     "'ids' stage with --overwrite)")
  levels = sum(name.startswith("codes_") for name in f)
  return Trie(int(f["codebook_size"]), [f[f"row_ptr_{i}"] for i in range(levels)],
              [f[f"codes_{i}"] for i in range(levels)],
              [f[f"children_{i}"] for i in range(levels)])
