"""The report's figures (PNG, matplotlib without a display)."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from semrec_jax import storage  # pylint: disable=wrong-import-position
from semrec_jax.report import summary  # pylint: disable=wrong-import-position


def _save(fig, path: str) -> str:
  fig.tight_layout()
  storage.save_figure(fig, path, dpi=110)
  plt.close(fig)
  return path


def loss_curves(records: list[dict], path: str) -> str | None:
  """LM training loss and held-out loss per task against the step."""
  train = [r for r in records if "loss" in r]
  heldout = [r for r in records if any(k.startswith("heldout/") for k in r)]
  if not train:
    return None
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  axes[0].plot([r["step"] for r in train], [r["loss"] for r in train])
  axes[0].set(title="LM training loss", xlabel="step", ylabel="loss per answer token")
  tasks = sorted({k for r in heldout for k in r if k.startswith("heldout/")})
  for task in tasks:
    points = [(r["step"], r[task]) for r in heldout if r.get(task) is not None]
    axes[1].plot(*zip(*points), marker="o", label=task.split("/", 1)[1])
  axes[1].set(title="held-out loss per task", xlabel="step")
  if tasks:
    axes[1].legend(fontsize=7)
  return _save(fig, path)


def model_bars(found: dict, path: str) -> str | None:
  """Recall@10 and NDCG@10 on the test split for every model."""
  rows = [r for r in summary.model_rows(found) if r[2] is not None]
  if not rows:
    return None
  fig, ax = plt.subplots(figsize=(7, 3.5))
  x = np.arange(len(rows))
  ax.bar(x - 0.2, [r[2] for r in rows], 0.4, label="Recall@10")
  ax.bar(x + 0.2, [r[3] for r in rows], 0.4, label="NDCG@10")
  ax.set_xticks(x, [f"{r[0]}\n{r[1]} users" for r in rows], fontsize=8)
  ax.set(title="next-item ranking (test split, full catalog)")
  ax.legend()
  return _save(fig, path)


def steering_bars(metrics: dict | None, path: str) -> str | None:
  """Precision@10 of the attribute asked for, with and without the request, per kind."""
  if not metrics:
    return None
  kinds = [k for k in summary.STEER_KINDS if metrics.get(f"steer/{k}/precision@10") is not None]
  if not kinds:
    return None
  fig, ax = plt.subplots(figsize=(7, 3.5))
  x = np.arange(len(kinds))
  ax.bar(x - 0.2, [metrics[f"steer/{k}/baseline_precision@10"] for k in kinds], 0.4,
         label="not asked")
  ax.bar(x + 0.2, [metrics[f"steer/{k}/precision@10"] for k in kinds], 0.4, label="asked in words")
  ax.set_xticks(x, kinds)
  ax.set(title="steering: share of the top 10 with the attribute", ylim=(0, 1))
  ax.legend()
  return _save(fig, path)
