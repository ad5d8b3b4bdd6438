#!/usr/bin/env bash
# Runs semrec_jax on every worker of a Cloud TPU VM / pod slice.
#
#   TPU=my-v5e ZONE=us-west4-a PROJECT=my-project launch/tpu_vm.sh create v5litepod-16
#   TPU=my-v5e ZONE=us-west4-a PROJECT=my-project launch/tpu_vm.sh setup
#   TPU=my-v5e ZONE=us-west4-a PROJECT=my-project launch/tpu_vm.sh run \
#       --config=configs/games.py --config.data.path=/data/amazon18_games --workdir=/data/w
#
# `setup` copies this checkout to ~/semrec_jax on every worker and installs it with jax[tpu];
# `run` starts the same main.py command on all workers at once, joined into one JAX job with
# --multihost (the `lm` stage); WORKER=0 runs it on one worker alone (`prepare`, `embed`, `ids`).
# The workdir must be a folder every worker sees (a mounted disk or filestore).
set -euo pipefail
: "${TPU:?set TPU to the TPU VM name}" "${ZONE:?set ZONE}" "${PROJECT:?set PROJECT}"
GCLOUD=(gcloud compute tpus tpu-vm --zone="$ZONE" --project="$PROJECT")
REPO="$(cd "$(dirname "$0")/.." && pwd)"

case "${1:-}" in
  create)
    "${GCLOUD[@]}" create "$TPU" --accelerator-type="${2:?accelerator type, e.g. v5litepod-16}" \
        --version="${RUNTIME:-v2-alpha-tpuv5-lite}" ;;
  setup)
    tar -C "$REPO" --exclude=.venv --exclude=.git -czf /tmp/semrec_jax.tgz .
    "${GCLOUD[@]}" scp /tmp/semrec_jax.tgz "$TPU":/tmp/semrec_jax.tgz --worker=all
    "${GCLOUD[@]}" ssh "$TPU" --worker=all --command="mkdir -p ~/semrec_jax && \
        tar -C ~/semrec_jax -xzf /tmp/semrec_jax.tgz && cd ~/semrec_jax && \
        python3 -m venv .venv && . .venv/bin/activate && pip install -q -e . 'jax[tpu]'" ;;
  run)
    shift
    # All workers together form one JAX job; a single worker runs alone.
    MULTIHOST=$([[ "${WORKER:-all}" == all ]] && echo --multihost || true)
    "${GCLOUD[@]}" ssh "$TPU" --worker="${WORKER:-all}" --command="cd ~/semrec_jax && \
        . .venv/bin/activate && \
        python -m semrec_jax.main $* ${MULTIHOST}" ;;
  delete)
    "${GCLOUD[@]}" delete "$TPU" --quiet ;;
  *)
    echo "usage: $0 create ACCELERATOR_TYPE | setup | run MAIN_FLAGS... | delete" >&2; exit 2 ;;
esac
