"""The stages of the pipeline, in the order data flows through them (DESIGN.md 1)."""

from semrec_jax.data.prepare import prepare
from semrec_jax.stages import Stage

STAGES: dict[str, Stage] = {
    stage.name: stage for stage in [
        Stage("prepare", output="data", run=prepare, config_keys=("data",)),
    ]
}
