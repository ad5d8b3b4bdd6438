r"""Two eval folders measured on the same users, compared user by user.

  python -m semrec_jax.eval.compare RUN_A/eval RUN_B/eval

Prints, per split, B minus A in Recall@10 and NDCG@10 with the paired standard error: whether B's
lift over A (another lm config, a preference checkpoint, ...) is more than noise. Both folders
need `ranked.npz` (eval writes it) over the same users and targets, i.e. the same data and
`config.eval.max_users` / `seed`.
"""

import os
import sys

import numpy as np
from absl import app

from semrec_jax import console, storage
from semrec_jax.protocol import metrics


class NotComparable(ValueError):
  """The two folders' lists are not of the same users and targets."""


def load_lists(eval_dir: str) -> dict[str, np.ndarray]:
  path = os.path.join(eval_dir, "ranked.npz")
  if not storage.exists(path):
    raise NotComparable(f"{path}: not found (eval writes it; rerun eval on that workdir)")
  return dict(storage.load_array(path))


def compare(eval_a: str, eval_b: str, k: int = 10) -> dict[str, float]:
  """{split/recall@k, split/ndcg@k and their _stderr}: B minus A, paired over users, for every
  split both folders ranked; plus `users`."""
  a, b = load_lists(eval_a), load_lists(eval_b)
  if not np.array_equal(a["users"], b["users"]):
    raise NotComparable(f"{eval_a} and {eval_b} ranked different users ({len(a['users'])} and "
                        f"{len(b['users'])}): evaluate both with the same max_users and seed")
  splits = [key for key in a if key in b and f"{key}_targets" in a]
  if not splits:
    raise NotComparable(f"{eval_a} and {eval_b} share no ranked split")
  out = {"users": len(a["users"])}
  for split in splits:
    if not np.array_equal(a[f"{split}_targets"], b[f"{split}_targets"]):
      raise NotComparable(f"{eval_a} and {eval_b} hold different {split} targets for the same "
                          "users: were they made from the same data?")
    out.update(metrics.paired_difference(a[split], b[split], a[f"{split}_targets"], split, k))
  return out


def main(argv):
  if len(argv) != 3:
    raise app.UsageError("usage: python -m semrec_jax.eval.compare RUN_A/eval RUN_B/eval")
  console.setup()
  try:
    found = compare(argv[1], argv[2])
  except NotComparable as e:
    sys.exit(f"error: {e}")
  print(f"B minus A on the same {found['users']:,} users (B: {argv[2]}; A: {argv[1]}):")
  for split in dict.fromkeys(key.split("/")[0] for key in found if "/" in key):
    print(f"  {split}: " + ", ".join(
        f"{name} {found[f'{split}/{key}']:+.4f} (paired standard error "
        f"{found[f'{split}/{key}_stderr']:.4f})"
        for name, key in (("Recall@10", "recall@10"), ("NDCG@10", "ndcg@10"))))


if __name__ == "__main__":
  app.run(main)
