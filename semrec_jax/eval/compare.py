r"""Two models measured on the same users, compared user by user.

  python -m semrec_jax.eval.compare RUN_A/eval RUN_B/eval
  python -m semrec_jax.eval.compare RUN/baselines/sasrec_sid RUN/eval

Prints, per split, B minus A in Recall@10 and NDCG@10 over the users both measured, with the
paired standard error: whether B's lift over A (another lm config, a preference checkpoint, a
baseline) is more than noise. Each folder needs the `ranked.npz` that eval and baselines write.
"""

import sys

from absl import app

from semrec_jax import console
from semrec_jax.protocol import metrics, ranked_lists
from semrec_jax.protocol.ranked_lists import NotComparable


def compare(folder_a: str, folder_b: str, k: int = 10) -> dict[str, float]:
  """{split/recall@k, split/ndcg@k and their _stderr}: B minus A, paired over the users both
  measured, for every split both ranked; plus `users` (how many)."""
  where = f"{folder_a} and {folder_b}"
  a, b, users = ranked_lists.on_common_users(ranked_lists.load(folder_a),
                                             ranked_lists.load(folder_b), where)
  splits = [key for key in a if key in b and f"{key}_targets" in a]
  if not splits:
    raise NotComparable(f"{where}: no split ranked in both")
  out = {"users": len(users)}
  for split in splits:
    out.update(metrics.paired_difference(a[split], b[split], a[f"{split}_targets"], split, k))
  return out


def main(argv):
  if len(argv) != 3:
    raise app.UsageError("usage: python -m semrec_jax.eval.compare FOLDER_A FOLDER_B")
  console.setup()
  try:
    found = compare(argv[1], argv[2])
  except NotComparable as e:
    sys.exit(f"error: {e}")
  print(f"B minus A on the {found['users']:,} users both measured (B: {argv[2]}; A: {argv[1]}):")
  for split in dict.fromkeys(key.split("/")[0] for key in found if "/" in key):
    print(f"  {split}: " + ", ".join(
        f"{name} {found[f'{split}/{key}']:+.4f} (paired standard error "
        f"{found[f'{split}/{key}_stderr']:.4f})"
        for name, key in (("Recall@10", "recall@10"), ("NDCG@10", "ndcg@10"))))


if __name__ == "__main__":
  app.run(main)
