"""Semantic IDs from a trained RQ-VAE: codes per item, a collision-free option for the last level,
and the final collision level that numbers items still sharing all L codes."""

import collections
import io

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import linear_sum_assignment

from semrec_jax import storage
from semrec_jax.ids.rqvae import RQVAE


def encode_all(model: RQVAE, embeddings: np.ndarray, batch_size: int = 8192):
  """Nearest codes [N, L] and the latent residual entering the last level [N, D]."""
  quantize = jax.jit(lambda x: model.quantize(model.encoder(x)))
  codes, last_residuals = [], []
  for start in range(0, len(embeddings), batch_size):
    c, _, residuals = quantize(jnp.asarray(embeddings[start:start + batch_size]))
    codes.append(np.asarray(c))
    last_residuals.append(np.asarray(residuals[-1]))
  return np.concatenate(codes), np.concatenate(last_residuals)


def unique_last_level(codes: np.ndarray, last_residual: np.ndarray,
                      codebook: np.ndarray) -> np.ndarray:
  """Reassigns the last code within each prefix group by a minimum-distance matching.

  Items sharing the first L-1 codes get distinct last codes when the group has at most K items
  (a group of n > K items uses each code at most ceil(n / K) times). Groups whose nearest codes are
  already distinct keep them: that is the optimal matching.
  """
  codes = codes.copy()
  k = codebook.shape[0]
  groups = collections.defaultdict(list)
  for item, prefix in enumerate(map(tuple, codes[:, :-1])):
    groups[prefix].append(item)
  for items in groups.values():
    if len(items) < 2 or len(set(codes[items, -1])) == len(items):
      continue
    r = last_residual[items]
    cost = ((r[:, None, :] - codebook[None, :, :]) ** 2).sum(-1)  # [n, K]
    copies = -(-len(items) // k)
    rows, cols = linear_sum_assignment(np.tile(cost, (1, copies)))
    codes[np.asarray(items)[rows], -1] = cols % k
  return codes


def collision_level(codes: np.ndarray, distance: np.ndarray) -> np.ndarray:
  """Numbers items sharing all L codes: 0 for the item nearest its code, then 1, 2, ...

  Ties in distance fall back to item index, so the order is deterministic.
  """
  order = np.lexsort((np.arange(len(codes)), distance, *codes.T[::-1]))
  extra = np.zeros(len(codes), dtype=np.int64)
  previous, rank = None, 0
  for item in order:
    key = tuple(codes[item])
    rank = rank + 1 if key == previous else 0
    extra[item], previous = rank, key
  return extra


def token_string(codes, codebook_size: int) -> str:
  """<|sid_start|><|sid_{c0}|><|sid_{K+c1}|>...<|sid_end|>: level l's code offset by l*K."""
  body = "".join(f"<|sid_{level * codebook_size + int(c)}|>" for level, c in enumerate(codes))
  return f"<|sid_start|>{body}<|sid_end|>"


COLLISION_LEVELS = ("auto", "always")  # config.ids.collision_level


def assign(model: RQVAE, embeddings: np.ndarray, last_level: str,
           collision_level_mode: str = "always") -> dict:
  """Returns codes [N, L] (and the nearest codes before any reassignment), full ids and the
  reconstruction MSE of the assigned codes. The ids are [N, L+1], the codes and the collision
  level, or, with collision_level_mode 'auto' and no two items sharing all L codes, [N, L]: a
  level that is 0 for every item tells the LM nothing and costs a token per item everywhere."""
  if collision_level_mode not in COLLISION_LEVELS:
    raise ValueError(f"unknown collision level mode {collision_level_mode!r}")
  codes, last_residual = encode_all(model, embeddings)
  nearest = codes
  codebooks = np.asarray(model.codebooks[...])
  if last_level == "unique":
    codes = unique_last_level(codes, last_residual, codebooks[-1])
  elif last_level != "nearest":
    raise ValueError(f"unknown last_level {last_level!r}")
  distance = ((last_residual - codebooks[-1][codes[:, -1]]) ** 2).sum(-1)
  extra = collision_level(codes, distance)
  if extra.max() >= model.config.codebook_size:
    raise ValueError(f"{extra.max() + 1} items share one code tuple: more than the "
                     f"{model.config.codebook_size} codes of the collision level")
  decode = jax.jit(model.decode_codes)
  recon = np.concatenate([np.asarray(decode(jnp.asarray(codes[s:s + 8192])))
                          for s in range(0, len(codes), 8192)])
  written = collision_level_mode == "always" or extra.max() > 0
  return {"codes": codes, "nearest_codes": nearest,
          "ids": np.concatenate([codes, extra[:, None]], axis=1) if written else codes,
          "recon_mse": float(np.mean((recon - embeddings) ** 2))}


def write_table(path: str, item_ids: list[str], ids: np.ndarray, codebook_size: int) -> None:
  """semantic_ids.tsv: item_index, item_id, codes and token string of every item (read_table's
  input)."""
  lines = ["item_index\titem_id\tcodes\ttokens\n"] + [
      f"{index}\t{item_id}\t{' '.join(map(str, row))}\t{token_string(row, codebook_size)}\n"
      for index, (item_id, row) in enumerate(zip(item_ids, ids))]
  storage.write_text(path, "".join(lines))


def read_table(path: str) -> tuple[list[str], np.ndarray]:
  """(token string per item, codes [items, levels]) from the ids stage's semantic_ids.tsv."""
  with io.StringIO(storage.read_text(path)) as f:
    header = f.readline().rstrip("\n").split("\t")
    rows = [line.rstrip("\n").split("\t") for line in f]
  codes, tokens = header.index("codes"), header.index("tokens")
  return ([r[tokens] for r in rows],
          np.asarray([[int(c) for c in r[codes].split()] for r in rows], np.int32))
