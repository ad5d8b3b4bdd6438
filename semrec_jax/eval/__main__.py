r"""Evaluates a trained LM from its Orbax checkpoint (parameters only, on this machine's devices).

  python -m semrec_jax.eval --workdir=/tmp/semrec_demo [--step=N] [--split=test] \
      [--max_users=N] [--config=configs/demo.py --config.eval.beam_width=50]

With --multihost (or --coordinator_address, --num_processes, --process_id) every process of a
job runs it and they evaluate together, whatever number of processes wrote the checkpoint.

Writes WORKDIR/eval/metrics.json, samples.jsonl and info.json (what the `eval` stage of
semrec_jax.main writes; a later main run redoes that stage, since these files carry no stage stamp).
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from semrec_jax import console, defaults, multihost, storage
from semrec_jax.eval import restore
from semrec_jax.eval.stage import evaluate
from semrec_jax.stages import FINGERPRINT

_WORKDIR = flags.DEFINE_string("workdir", None, "Workdir of a run whose lm stage finished.")
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Optional config file for the eval section (default: semrec_jax/defaults.py).")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step of the final LM stage (default: latest).")
_SPLIT = flags.DEFINE_enum("split", None, ["validation", "test"],
                           "Rank only this split (default: validation and test).")
_MAX_USERS = flags.DEFINE_integer("max_users", None, "Users per split (0 = all).")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  console.setup()
  multihost.initialize_from_flags()
  config = console.config_value(_CONFIG) if _CONFIG.value else defaults.base_config()
  if _SPLIT.value:
    config.eval.splits = (_SPLIT.value,)
  if _MAX_USERS.value is not None:
    config.eval.max_users = _MAX_USERS.value
  out_dir = os.path.join(_WORKDIR.value, "eval")
  storage.path(out_dir).mkdir(parents=True, exist_ok=True)
  try:
    metrics = evaluate(config, _WORKDIR.value, out_dir, step=_STEP.value)
  except (restore.MissingArtifact, FileNotFoundError) as e:
    sys.exit(f"error: {e}")
  stamp = storage.path(os.path.join(out_dir, FINGERPRINT))
  if multihost.is_primary() and stamp.exists():
    stamp.unlink()
  logging.info("wrote %s", os.path.join(out_dir, "metrics.json"))
  if multihost.is_primary():
    print(summary(metrics, config.eval.splits))


def summary(m: dict, splits) -> str:
  """A few readable lines of the headline numbers."""
  number = lambda v: "n/a" if v is None else f"{v:.4f}"
  lines = [f"{s}: recall@10 {number(m[f'{s}/recall@10'])} ndcg@10 {number(m[f'{s}/ndcg@10'])} "
           f"(popularity {number(m[f'popularity/{s}/recall@10'])} / "
           f"{number(m[f'popularity/{s}/ndcg@10'])})" for s in splits]
  lines.append(f"invalid {m['invalid_rate']:.3f}, duplicate {m['duplicate_rate']:.3f}; steering "
               f"precision@10 {number(m['steer/precision@10'])} vs "
               f"{number(m['steer/baseline_precision@10'])} unsteered")
  return "\n".join(lines)

if __name__ == "__main__":
  app.run(main, flags_parser=console.parse_flags)
