#!/usr/bin/env bash
# The LM's GPU checks as one prepared run on a GPU host without network access (measured on one
# with Python 3.12, jax 0.11.2). Two parts, each inside one 10-minute call:
#
#   bash benchmarks/gpu_show.sh step    # the LM train step vs PyTorch + transformers, same shapes
#   bash benchmarks/gpu_show.sh games   # the lm stage on Games from scratch, then the eval stage
#
# Before, on the CPU machine (the host cannot download or embed; carry .whl and devwork):
#   pip download --only-binary=:all: --python-version=3.12 -d .whl <what the host lacks>
#   python -m semrec_jax.main --config=configs/games_tiny.py \
#       --config.data.path=$DATA_PATH --workdir=devwork --stages=prepare,embed,ids
#   rm -rf devwork/ids/checkpoints devwork/embeddings/items.npy   # not read by lm/eval; 64 MiB carry
#   cp /path/to/torch_gemma3_step.py devwork/   # the PyTorch + transformers reference step
# then run with carry [".whl", "devwork"].
# SMOKE=1 runs both parts at toy sizes (any machine; checks the script, measures nothing).
# Every measurement is one JSON line in $OUT/gpu_show.jsonl (./gpu_show.jsonl without $OUT).
set -euo pipefail
PART=${1:?usage: gpu_show.sh step|games}
RESULTS=${OUT:-.}/gpu_show.jsonl
WORKDIR=${WORKDIR:-devwork}
GAMES_STEPS=${GAMES_STEPS:-4000}  # lm steps of games_tiny (16 x 256 tokens); a rerun resumes
EVAL_USERS=${EVAL_USERS:-2000}
PREFER_STEPS=${PREFER_STEPS:-0}  # GRPO steps after lm (0: off); eval/prefer/ measures them
DATA_PATH=${DATA_PATH:-}  # games: the Games folder as given to prepare (in the fingerprint)
TORCH_REFERENCE=${TORCH_REFERENCE:-$WORKDIR/torch_gemma3_step.py}

if ! python3 -c "import grain" 2>/dev/null; then  # the host lacks grain, TFDS, ml_collections...
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:-$PWD}

record() {  # record LABEL COMMAND...: runs it, keeps its last JSON line with the label and command
  local label=$1; shift
  local line
  line=$("$@" 2>"/tmp/gpu_show.$label.err" | grep '^{' | tail -1) || true  # a failure is a row
  python3 - "$label" "$*" "$line" "$(tail -3 "/tmp/gpu_show.$label.err" | tr '\n' ' ')" \
    >> "$RESULTS" <<'EOF'
import json, sys
label, command, line, error = sys.argv[1:]
result = json.loads(line) if line else {"failed": error[-600:]}
print(json.dumps({"label": label, "command": command, **result}))
EOF
  tail -1 "$RESULTS"
}

python3 - >> "$RESULTS" <<'EOF'
import json, platform, subprocess, jax, flax
gpu = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout.strip() \
    if __import__("shutil").which("nvidia-smi") else "none"
print(json.dumps({"label": "host", "gpu": gpu, "devices": str(jax.devices()),
                  "python": platform.python_version(), "jax": jax.__version__,
                  "flax": flax.__version__}))
EOF
tail -1 "$RESULTS"

if [ "$PART" = step ]; then
  # model batch seq remat: the issue's shapes; the last one ran out of memory before tiled loss.
  SHAPES="gemma3_1b:8:1024:none gemma3_270m:16:1024:none gemma3_1b:16:2048:dots"
  STEPS=10
  [ "${SMOKE:-0}" = 1 ] && SHAPES="tiny:2:64:none tiny:2:64:dots" && STEPS=2
  for shape in $SHAPES; do
    IFS=: read -r model batch seq remat <<< "$shape"
    for attention in auto xla; do  # xla only where auto (cuDNN on a GPU) failed
      record "semrec_${model}_${batch}x${seq}_${remat}_${attention}" python3 \
        benchmarks/decoder_step.py --model="$model" --batch_size="$batch" --seq_len="$seq" \
        --dtype=bfloat16 --remat="$remat" --attention="$attention" --steps="$STEPS"
      tail -1 "$RESULTS" | grep -q '"failed"' || break
    done
    # The fused head + loss kernel (lm/fused_loss.py) in place of the chunked XLA loss.
    record "semrec_${model}_${batch}x${seq}_${remat}_${attention}_pallas_loss" python3 \
      benchmarks/decoder_step.py --model="$model" --batch_size="$batch" --seq_len="$seq" \
      --dtype=bfloat16 --remat="$remat" --attention="$attention" --steps="$STEPS" \
      --loss_kernel=pallas
    if [ "${SMOKE:-0}" != 1 ] && [ -f "$TORCH_REFERENCE" ]; then
      record "torch_${model}_${batch}x${seq}" python3 "$TORCH_REFERENCE" \
        --model="$model" --batch_size="$batch" --seq_len="$seq" --steps="$STEPS"
    fi
  done
  # The layers unrolled at the first shape: splits the scanned layers' cost from the rest.
  IFS=: read -r model batch seq remat <<< "${SHAPES%% *}"
  record "semrec_${model}_${batch}x${seq}_${remat}_unrolled" python3 benchmarks/decoder_step.py \
    --model="$model" --batch_size="$batch" --seq_len="$seq" --dtype=bfloat16 --remat="$remat" \
    --scan_unroll --steps="$STEPS"
  # The lm stage's shapes (games_tiny: 16 x 256), for "the stage within 10% of the step".
  record "semrec_tiny_16x256" python3 benchmarks/decoder_step.py --model=tiny --batch_size=16 \
    --seq_len=256 --dtype=float32 --answer_share=0.17 --steps="$STEPS"
elif [ "$PART" = games ]; then
  [ -n "$DATA_PATH" ] || { echo "error: set DATA_PATH to the folder prepare read" >&2; exit 1; }
  EXTRA=()
  if [ "${SMOKE:-0}" = 1 ]; then
    GAMES_STEPS=20; EVAL_USERS=20
    EXTRA=(--config.lm.batch_size=4 --config.lm.seq_len=128 --config.eval.sampled_users=5
           --config.eval.steer_users=5 --config.eval.explain_users=5 --config.eval.max_bundles=5)
  fi
  start=$(date +%s)
  python3 -m semrec_jax.main --config=configs/games_tiny.py --workdir="$WORKDIR" \
    --config.data.path="$DATA_PATH" --stages=lm,prefer,eval --config.prefer.steps="$PREFER_STEPS" \
    --config.lm.stage_steps="($GAMES_STEPS,)" --config.lm.checkpoint_every=1000 \
    --config.lm.data_workers=4 --config.eval.max_users="$EVAL_USERS" "${EXTRA[@]}"
  python3 - "$WORKDIR" "$GAMES_STEPS" "$(( $(date +%s) - start ))" >> "$RESULTS" <<'EOF'
import json, sys
workdir, steps, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
train = [json.loads(l) for l in open(f"{workdir}/lm/metrics.jsonl") if '"loss"' in l]
metrics = json.load(open(f"{workdir}/eval/metrics.json"))
keep = ("test/recall@10", "test/ndcg@10", "validation/recall@10", "validation/ndcg@10",
        "popularity/test/recall@10", "popularity/test/ndcg@10", "sampled1000/hit@10",
        "invalid_rate", "duplicate_rate", "steer/platform/precision@10",
        "steer/platform/baseline_precision@10")
print(json.dumps({"label": "games_tiny_lm_eval", "steps": steps, "seconds": seconds,
                  "tokens_per_s_last": train[-1]["tokens_per_s"] if train else None,
                  **{k: metrics.get(k) for k in keep}}))
EOF
  tail -1 "$RESULTS"
else
  echo "usage: gpu_show.sh step|games" >&2
  exit 2
fi
