"""The stages of the pipeline, in the order data flows through them (docs/design.md).

Stage versions (Stage.version: a folder made by another version is refused until --overwrite):
  prepare 2  games_tsv only: the platform column corrected by the title
             (attributes.column_platform): its "Switch" only where the title names the console,
             and a family's later console the title names ("PlayStation Portable", "Xbox360",
             "Nintendo 2DS") for the first (PS1, Xbox, DS) the column read.
"""

from semrec_jax.baselines.stage import baselines
from semrec_jax.data.prepare import prepare
from semrec_jax.embed.stage import check as check_embed, embed
from semrec_jax.eval.stage import evaluate
from semrec_jax.ids.stage import check as check_ids, semantic_ids
from semrec_jax.lm.stage import check as check_lm, train_lm
from semrec_jax.prefer.stage import check as check_prefer, train_prefer
from semrec_jax.report.stage import report
from semrec_jax.stages import Stage

STAGES: dict[str, Stage] = {
    stage.name: stage for stage in [
        Stage("prepare", output="data", config_keys=("data",),
              run=lambda config, workdir, out_dir: prepare(config, out_dir),
              version=lambda config: 2 if config.data.get("format") == "games_tsv" else 1),
        Stage("embed", output="embeddings", run=embed, config_keys=("embed",),
              depends_on=("prepare",)),
        Stage("ids", output="ids", run=semantic_ids, config_keys=("ids",),
              depends_on=("prepare", "embed")),
        Stage("baselines", output="baselines", run=baselines, config_keys=("baselines",),
              depends_on=("prepare", "ids")),
        Stage("lm", output="lm", run=train_lm, config_keys=("lm",), depends_on=("prepare", "ids"),
              multihost=True),
        Stage("prefer", output="prefer", run=train_prefer, config_keys=("prefer",),
              depends_on=("prepare", "ids", "lm"), multihost=True),
        Stage("eval", output="eval", run=evaluate, config_keys=("eval",),
              depends_on=("prepare", "ids", "lm", "prefer"), multihost=True),
        Stage("report", output="report", run=report, config_keys=(),
              depends_on=("prepare", "ids", "baselines", "lm", "prefer", "eval")),
    ]
}


def check(config, names: list[str]) -> None:
  """Config errors found before any stage runs (one StageError line each)."""
  if "embed" in names:
    check_embed(config.embed)
  if "ids" in names:
    check_ids(config.ids)
  if "lm" in names:
    check_lm(config.lm)
  if "prefer" in names:
    check_prefer(config.prefer)
