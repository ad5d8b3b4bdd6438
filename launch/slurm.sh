#!/usr/bin/env bash
# Runs semrec_jax on a SLURM GPU cluster: one process per GPU, all joined into one JAX job.
#
#   NODES=2 GPUS_PER_NODE=8 launch/slurm.sh [--dry_run] MAIN_FLAGS...
#
# Submits the batch script below with sbatch (on standard input); --dry_run prints the sbatch
# command and the script as a here-document a user could paste, and submits nothing. sbatch's own
# variables (SBATCH_PARTITION, SBATCH_ACCOUNT, SBATCH_TIMELIMIT, ...) pass through. PORT sets the
# coordinator's port (default: one derived from the job id, as JAX's SLURM detection does).
#
# Every task runs `python -m semrec_jax.main MAIN_FLAGS --multihost`, whose
# jax.distributed.initialize() reads the job from SLURM: process count and id from SLURM_NTASKS and
# SLURM_PROCID, and task i of a node drives that node's GPU i (SLURM_LOCALID), so every task must
# see all GPUs of its node (--gpus-per-node, not --gpus-per-task). The coordinator's address comes
# from JAX_COORDINATOR_ADDRESS, set from the allocation's first node. The checkout (with .venv
# holding jax[cuda12]) must be on a file system every node sees; the job starts in this checkout's
# root, so paths in MAIN_FLAGS are relative to it.
set -euo pipefail

die() { echo "slurm.sh: $*" >&2; exit 2; }

. "$(dirname "$0")/quote.sh"  # quote WORD: one word as shlex.quote writes it

DRY_RUN=0
MAIN_FLAGS=""
for arg in "$@"; do
  if [[ $arg == --dry_run ]]; then DRY_RUN=1; else MAIN_FLAGS+=" $(quote "$arg")"; fi
done
[[ -n $MAIN_FLAGS ]] ||
    die "usage: NODES=N GPUS_PER_NODE=G slurm.sh [--dry_run] MAIN_FLAGS... (--config=... --workdir=...)"
NODES=${NODES:-1}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
[[ $NODES =~ ^[1-9][0-9]*$ ]] || die "NODES must be a positive number, not '$NODES'"
[[ $GPUS_PER_NODE =~ ^[1-9][0-9]*$ ]] ||
    die "GPUS_PER_NODE must be a positive number, not '$GPUS_PER_NODE'"
[[ ${PORT:-1} =~ ^[1-9][0-9]*$ ]] || die "PORT must be a port number, not '$PORT'"
cd "$(dirname "$0")/.."

LOGS=workdirs/slurm
# Unexpanded here: the job evaluates it (the same port for every task of one job).
PORT_EXPR=${PORT:-'$((SLURM_JOB_ID % 4096 + 61440))'}
SCRIPT="#!/bin/bash
#SBATCH --job-name=semrec_jax
#SBATCH --nodes=$NODES
#SBATCH --ntasks-per-node=$GPUS_PER_NODE
#SBATCH --gpus-per-node=$GPUS_PER_NODE
#SBATCH --output=$LOGS/%x-%j.out
# Two minutes before the time limit: SIGTERM, which the lm stage answers with a common checkpoint.
#SBATCH --signal=TERM@120
set -euo pipefail
. .venv/bin/activate
# Process 0, the coordinator, runs on the allocation's first node.
export JAX_COORDINATOR_ADDRESS=\"\$(scontrol show hostnames \"\$SLURM_JOB_NODELIST\" | head -n 1):$PORT_EXPR\"
# One output file per process (%t: its task id); one failed process ends them all.
srun --kill-on-bad-exit=1 --output=$LOGS/%x-%j.%t.out python -m semrec_jax.main$MAIN_FLAGS --multihost"

if ((DRY_RUN)); then
  printf 'mkdir -p %s\nsbatch <<'"'"'EOF'"'"'\n%s\nEOF\n' "$LOGS" "$SCRIPT"
else
  mkdir -p "$LOGS"
  printf '%s\n' "$SCRIPT" | sbatch
fi
