"""Each measured user's ranked list and target, kept beside a model's metrics (`ranked.npz`), so
any two models measured on overlapping users (the LM, its preference checkpoint, the baselines,
another run's) can be compared user by user (semrec_jax.eval.compare)."""

import os

import numpy as np

from semrec_jax import storage

FILE = "ranked.npz"


class NotComparable(ValueError):
  """Two folders' lists cannot be paired: missing, no common users, or other targets."""


def save(folder: str, users: np.ndarray, ranked: dict, targets: dict) -> None:
  """folder/ranked.npz: `users` (their indices in the training split), and per split `{split}`
  ([users, list] item indices, best first) and `{split}_targets`."""
  storage.save_arrays(os.path.join(folder, FILE), compressed=True, users=np.asarray(users),
                      **{s: np.asarray(r) for s, r in ranked.items()},
                      **{f"{s}_targets": np.asarray(t) for s, t in targets.items()})


def load(folder: str) -> dict[str, np.ndarray]:
  path = os.path.join(folder, FILE)
  if not storage.exists(path):
    raise NotComparable(f"{path}: not found (eval and baselines write it; rerun that stage)")
  return storage.load_array(path)


def on_common_users(a: dict, b: dict, where: str) -> tuple[dict, dict, np.ndarray]:
  """Both folders' lists restricted to the users both measured (in `users` order), and those
  users; refused when there are none or their targets differ (other data)."""
  common = np.intersect1d(a["users"], b["users"])
  if not len(common):
    raise NotComparable(f"{where}: no user measured in both")
  picked = []
  for lists in (a, b):
    position = {int(u): i for i, u in enumerate(lists["users"])}
    rows = np.asarray([position[int(u)] for u in common])
    picked.append({k: v[rows] for k, v in lists.items() if k != "users"})
  for key in picked[0]:
    if key.endswith("_targets") and key in picked[1]:
      if not np.array_equal(picked[0][key], picked[1][key]):
        raise NotComparable(f"{where}: different {key.removesuffix('_targets')} targets for the "
                            "same users: were they made from the same data?")
  return picked[0], picked[1], common
