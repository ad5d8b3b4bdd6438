"""Quality of a semantic-ID assignment: usage, perplexity, collisions, prefix purity; PNG plots."""

import collections

import numpy as np

from semrec_jax import storage


def code_stats(codes: np.ndarray, codebook_size: int) -> dict:
  usage, perplexity = [], []
  for level in range(codes.shape[1]):
    counts = np.bincount(codes[:, level], minlength=codebook_size)
    p = counts[counts > 0] / counts.sum()
    usage.append(round(float((counts > 0).mean()), 4))
    perplexity.append(round(float(np.exp(-(p * np.log(p)).sum())), 2))
  return {"codebook_usage": usage, "perplexity": perplexity}


def collision_groups(codes: np.ndarray) -> np.ndarray:
  """Size of the group of items sharing each distinct L-code tuple."""
  _, counts = np.unique(codes, axis=0, return_counts=True)
  return counts


def collision_stats(codes: np.ndarray) -> dict:
  sizes = collision_groups(codes)
  return {"collision_rate": round(float(sizes[sizes > 1].sum() / len(codes)), 4),
          "max_collision_group": int(sizes.max()),
          "distinct_code_tuples": int(len(sizes))}


def prefix_purity(first_codes: np.ndarray, platforms: list[str]) -> float | None:
  """Share of items with a platform whose level-0 group's majority platform is their own (None
  when no item has a platform: there is nothing to be pure about)."""
  groups = collections.defaultdict(collections.Counter)
  for code, platform in zip(first_codes, platforms):
    if platform:
      groups[code][platform] += 1
  with_platform = sum(sum(c.values()) for c in groups.values())
  if not with_platform:
    return None
  agreeing = sum(c.most_common(1)[0][1] for c in groups.values())
  return round(agreeing / max(with_platform, 1), 4)


def plot(codes: np.ndarray, codebook_size: int, out_prefix: str, title: str) -> list[str]:
  """Writes <out_prefix>code_usage.png and <out_prefix>collision_groups.png."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  levels = codes.shape[1]
  fig, axes = plt.subplots(1, levels, figsize=(4 * levels, 3), sharey=True)
  for level, ax in enumerate(np.atleast_1d(axes)):
    counts = np.sort(np.bincount(codes[:, level], minlength=codebook_size))[::-1]
    ax.bar(np.arange(codebook_size), counts, width=1.0)
    ax.set_title(f"level {level}: {(counts > 0).mean():.1%} used")
    ax.set_xlabel("code (by frequency)")
  np.atleast_1d(axes)[0].set_ylabel("items")
  fig.suptitle(f"{title}: items per code")
  fig.tight_layout()
  usage_path = out_prefix + "code_usage.png"
  storage.save_figure(fig, usage_path, dpi=80)
  plt.close(fig)

  sizes = collision_groups(codes)
  fig, ax = plt.subplots(figsize=(5, 3))
  values, counts = np.unique(sizes, return_counts=True)
  ax.bar(values, counts * values)
  ax.set_xlabel("items sharing one code tuple")
  ax.set_ylabel("items")
  ax.set_yscale("log")
  ax.set_title(f"{title}: collision groups")
  fig.tight_layout()
  groups_path = out_prefix + "collision_groups.png"
  storage.save_figure(fig, groups_path, dpi=80)
  plt.close(fig)
  return [usage_path, groups_path]


