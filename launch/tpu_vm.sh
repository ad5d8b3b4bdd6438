#!/usr/bin/env bash
# Runs semrec_jax on a Cloud TPU pod slice (or several) through queued resources.
#
#   export TPU=my-v5e ZONE=us-west4-a PROJECT=my-project
#   launch/tpu_vm.sh create v5litepod-16 [--spot | --reserved] [--slices=N]
#   launch/tpu_vm.sh status                  # the request's state (WAITING_FOR_RESOURCES, ACTIVE)
#   launch/tpu_vm.sh list                    # every queued resource in the zone
#   launch/tpu_vm.sh setup                   # copy this checkout to every worker, install it
#   launch/tpu_vm.sh run MAIN_FLAGS...       # semrec_jax.main on all workers, one JAX job
#   launch/tpu_vm.sh logs                    # follow one worker's output (WORKER, NODE; default 0)
#   WORKERS=4 launch/tpu_vm.sh fetch_logs    # every worker's output -> workdirs/tpu_logs/$TPU/
#   launch/tpu_vm.sh stop                    # SIGTERM: a common checkpoint, then the job exits
#   launch/tpu_vm.sh delete                  # the queued resource and its TPU VMs
#
# --dry_run (anywhere in the arguments) prints the commands, one a line and shell-quoted, instead
# of running them. `run` with WORKER=I (and NODE=J) starts one process on that worker alone, for the
# single-process stages (prepare, embed, ids). Each worker writes its output to
# ~/semrec_jax/logs/worker.log on its own disk. The runtime version follows the accelerator type;
# RUNTIME overrides it. Commands run from this checkout's root, like the paths in MAIN_FLAGS.
set -euo pipefail

die() { echo "tpu_vm.sh: $*" >&2; exit 2; }

# The TPU software version for JAX on each generation (cloud.google.com/tpu/docs/runtimes).
runtime_for() {
  if [[ -n ${RUNTIME:-} ]]; then echo "$RUNTIME"; return; fi
  case $1 in
    v2-[0-9]* | v3-[0-9]* | v4-[0-9]*) echo tpu-ubuntu2204-base ;;
    v5litepod-[0-9]*) echo v2-alpha-tpuv5-lite ;;
    v5p-[0-9]*) echo v2-alpha-tpuv5 ;;
    v6e-[0-9]*) echo v2-alpha-tpuv6e ;;
    *) die "unknown accelerator type '$1' (v4-N, v5litepod-N, v5p-N, v6e-N; or set RUNTIME)" ;;
  esac
}

. "$(dirname "$0")/quote.sh"  # quote WORD: one word as shlex.quote writes it

# Runs a command, or under --dry_run prints it as a line a user could paste.
run() {
  if ((DRY_RUN)); then
    local line="" word
    for word in "$@"; do line+="${line:+ }$(quote "$word")"; done
    echo "$line"
  else
    "$@"
  fi
}

DRY_RUN=0
ARGS=()
for arg in "$@"; do
  if [[ $arg == --dry_run ]]; then DRY_RUN=1; else ARGS+=("$arg"); fi
done
set -- ${ARGS[@]+"${ARGS[@]}"}
VERB=${1:-}
[[ -n $VERB ]] || die "usage: tpu_vm.sh [--dry_run] create ACCELERATOR_TYPE [--spot|--reserved]\
 [--slices=N] | status | list | setup | run MAIN_FLAGS... | logs | fetch_logs | stop | delete"
shift

[[ -n ${ZONE:-} ]] || die "ZONE is not set (the TPU zone, e.g. ZONE=us-west4-a)"
[[ -n ${PROJECT:-} ]] || die "PROJECT is not set (the Cloud project, e.g. PROJECT=my-project)"
[[ $VERB == list || -n ${TPU:-} ]] || die "TPU is not set (the queued resource, e.g. TPU=my-v5e)"
cd "$(dirname "$0")/.."

QR=(gcloud compute tpus queued-resources)
WHERE=(--zone="$ZONE" --project="$PROJECT")
# WORKER (and NODE) pick one worker; otherwise every worker of every slice.
TARGET=(--node=all --worker=all)
[[ -z ${WORKER:-} ]] || TARGET=(--node="${NODE:-0}" --worker="$WORKER")

case $VERB in
  create)
    accelerator=${1:-}
    [[ -n $accelerator && $accelerator != --* ]] ||
        die "create needs an accelerator type, e.g. create v5litepod-16"
    shift
    tier="" slices=1
    for opt in "$@"; do
      case $opt in
        --spot | --reserved)
          [[ -z $tier ]] || die "create takes --spot or --reserved, not both"
          tier=$opt ;;
        --slices=*) slices=${opt#--slices=} ;;
        *) die "create: unknown option '$opt' (--spot, --reserved, --slices=N)" ;;
      esac
    done
    [[ $slices =~ ^[1-9][0-9]*$ ]] || die "create: --slices must be a positive number, not $slices"
    runtime=$(runtime_for "$accelerator")
    # Several slices (multi-slice): nodes $TPU-0 ... $TPU-(N-1), joined by the data-center network.
    nodes=(--node-id="$TPU")
    ((slices == 1)) || nodes=(--node-count="$slices" --node-prefix="$TPU")
    run "${QR[@]}" create "$TPU" "${WHERE[@]}" "${nodes[@]}" --accelerator-type="$accelerator" \
        --runtime-version="$runtime" ${tier:+"$tier"} ;;
  status)
    run "${QR[@]}" describe "$TPU" "${WHERE[@]}" ;;
  list)
    run "${QR[@]}" list "${WHERE[@]}" ;;
  setup)
    run tar --exclude=.git --exclude=.venv --exclude=__pycache__ --exclude=workdirs \
        -czf /tmp/semrec_jax.tgz .
    run "${QR[@]}" scp /tmp/semrec_jax.tgz "$TPU":/tmp/semrec_jax.tgz "${WHERE[@]}" \
        --node=all --worker=all
    run "${QR[@]}" ssh "$TPU" "${WHERE[@]}" --node=all --worker=all \
        --command="mkdir -p ~/semrec_jax && tar -C ~/semrec_jax -xzf /tmp/semrec_jax.tgz && \
cd ~/semrec_jax && python3 -m venv .venv && . .venv/bin/activate && pip install -q -e \".[tpu]\"" ;;
  run)
    (($# > 0)) || die "run needs semrec_jax.main flags, e.g. run --config=C.py --workdir=/mnt/w"
    main_flags=""
    for flag in "$@"; do main_flags+=" $(quote "$flag")"; done
    # All workers together form one JAX job and run detached (follow it with `logs`). A single
    # worker runs alone and `run` waits for it, so the next stage can follow; its exit status is
    # the stage's.
    then_wait=" wait \$!;"
    [[ -n ${WORKER:-} ]] || main_flags+=" --multihost" then_wait=""
    # nohup and no terminal: the job outlives the ssh session; the pid is what `stop` signals.
    run "${QR[@]}" ssh "$TPU" "${WHERE[@]}" "${TARGET[@]}" --command="cd ~/semrec_jax && \
. .venv/bin/activate && mkdir -p logs && { nohup python -m semrec_jax.main${main_flags} \
>> logs/worker.log 2>&1 < /dev/null & echo \$! > logs/worker.pid;${then_wait} }" ;;
  logs)
    run "${QR[@]}" ssh "$TPU" "${WHERE[@]}" --node="${NODE:-0}" --worker="${WORKER:-0}" \
        --command="tail -n 100 -F ~/semrec_jax/logs/worker.log" ;;
  fetch_logs)
    # gcloud copies from one worker at a time (it refuses --worker=all towards this machine).
    [[ ${WORKERS:-} =~ ^[1-9][0-9]*$ ]] ||
        die "fetch_logs: set WORKERS to the TPU VMs per slice (e.g. WORKERS=4 for v5litepod-16)"
    [[ ${SLICES:-1} =~ ^[1-9][0-9]*$ ]] ||
        die "fetch_logs: SLICES must be a positive number, not '$SLICES'"
    dest=workdirs/tpu_logs/$TPU
    run mkdir -p "$dest"
    for ((node = 0; node < ${SLICES:-1}; node++)); do
      for ((worker = 0; worker < WORKERS; worker++)); do
        run "${QR[@]}" scp "$TPU":semrec_jax/logs/worker.log \
            "$dest/slice${node}_worker${worker}.log" "${WHERE[@]}" --node=$node --worker=$worker ||
            echo "no log from slice $node worker $worker" >&2
      done
    done ;;
  stop)
    # SIGTERM reaches JAX's preemption notice: the workers agree on a step, checkpoint, and exit.
    run "${QR[@]}" ssh "$TPU" "${WHERE[@]}" "${TARGET[@]}" --command="cd ~/semrec_jax && \
if [ -f logs/worker.pid ]; then kill -TERM \$(cat logs/worker.pid); rm logs/worker.pid; fi" ;;
  delete)
    # --force deletes the TPU VMs first, then the request.
    run "${QR[@]}" delete "$TPU" "${WHERE[@]}" --force --quiet ;;
  *)
    die "unknown command '$VERB' (create status list setup run logs fetch_logs stop delete)" ;;
esac
