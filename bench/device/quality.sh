#!/usr/bin/env bash
# The reference recipe's quality on the GPU (issue 4, item 7), started by run.sh's `quality` stage:
#   enrich finetune --preset reference --backend unsloth on the embedded model's weights (SmolLM2-135M, loaded in
#   4 bits) over the training split of ../shared/data, enrich export --format merged16, then enrich eval of the
#   adapter against the base on the 200 held-out rows: with the recipe's sampling (temperature 0.7, top-p 0.9,
#   256 new tokens) and greedy (repetition penalty 1.15, as the CPU runs of bench/RESULTS.md).
# Everything goes to $RUN/quality (packed by run.sh into run.tgz); `done` marks the end.
set -uo pipefail
cd "$(dirname "$0")/../.."
: "${SITE:?}" "${WORK:?}" "${RUN:?}"
Q=$RUN/quality; D=$WORK/quality; A=$WORK/splits
mkdir -p "$Q" "$D"
export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0}
# unsloth must not see vLLM (it patches it whenever it can import it); eval's vLLM engine needs it.
TRAIN_PATH=$SITE/train:$SITE/common:$SITE/extra:$PWD:$SITE/gguf
INFER_PATH=$SITE/infer:$SITE/train:$SITE/common:$SITE/extra:$PWD:$SITE/gguf
step() { echo "== $(date +%T) $*" >> "$Q/steps.log"; }
# A CPU check of this script: QUALITY_ENGINE=transformers QUALITY_FT_ARGS="--max-steps 2 --max-rows 64"
# QUALITY_EVAL_ARGS="--sample 4" (the backend falls back to peft where unsloth is missing).
ENGINE=${QUALITY_ENGINE:-vllm}
# Gradient checkpointing changes no gradient, only memory; on a 135M model unsloth's variant (activations to the
# host and back every layer) held the reference run to 1,950 tokens/s, 34 minutes for 3 epochs (bench/RESULTS.md).
read -r -a FT_ARGS <<< "${QUALITY_FT_ARGS---no-gradient-checkpointing}"
read -r -a EVAL_ARGS <<< "${QUALITY_EVAL_ARGS:-}"

# A run whose ETA after WATCH_STEP steps exceeds QUALITY_MAX_MIN minutes is restarted once with batch 16 x 1: the
# same effective batch of 16 and learning rate, a quarter of the launches (exact, where unsloth's accumulation
# averages per micro-batch).
MAX_MIN=${QUALITY_MAX_MIN:-13}; WATCH_STEP=${QUALITY_WATCH_STEP:-20}
FAST=(--batch-size 16 --grad-accum 1)

eta_min() {  # the ETA in whole minutes of the last progress event at step >= WATCH_STEP in log $1, else nothing
  python3 - "$1" "$WATCH_STEP" <<'PY'
import json, sys
eta = None
for line in open(sys.argv[1], errors="replace"):
    if line.startswith("{") and '"eta_s"' in line:
        e = json.loads(line)
        if e.get("step", 0) >= int(sys.argv[2]) and e.get("eta_s") is not None:
            eta = e["eta_s"]
if eta is not None:
    print(int(eta // 60))
PY
}

finetune() {  # backend, adapter dir, extra options
  local backend=$1 dir=$2 log=$Q/finetune-$1.log; shift 2
  step "finetune --backend $backend ${FT_ARGS[*]} $*"
  PYTHONPATH=$TRAIN_PATH timeout 1800 python3 -m enrich.cli finetune "$A/amazon_train.parquet" -o "$dir" \
    --preset reference --base smollm2-135m --template alpaca --backend "$backend" --log-format json \
    "${FT_ARGS[@]}" "$@" > "$log" 2>&1 &
  local pid=$! eta=""
  while kill -0 $pid 2>/dev/null; do
    sleep 5
    [ -n "$eta" ] || [ $# -gt 0 ] && continue  # judged once, and never the restarted run
    eta=$(eta_min "$log")
    if [ -n "$eta" ] && [ "$eta" -gt "$MAX_MIN" ]; then
      step "finetune --backend $backend: ETA $eta min > $MAX_MIN at step $WATCH_STEP; restarting with ${FAST[*]}"
      kill $pid; wait $pid 2>/dev/null; mv "$log" "$log.slow"; rm -rf "$dir"
      finetune "$backend" "$dir" "${FAST[@]}"; return
    fi
  done
  wait $pid; local rc=$?
  step "finetune --backend $backend: rc=$rc"; tail -3 "$log" >> "$Q/steps.log"
  return $rc
}

adapter=$D/adapter-unsloth
if ! finetune unsloth "$adapter"; then  # the figures still come, from the peft backend, and say so
  adapter=$D/adapter-peft
  finetune peft "$adapter" || { step "no adapter"; touch "$Q/done"; exit 1; }
fi
cp "$adapter"/training_report.json "$adapter"/enrich.json "$adapter"/loss.png "$Q/" 2>/dev/null

step "export --format merged16"
PYTHONPATH=$TRAIN_PATH timeout 600 python3 -m enrich.cli export "$adapter" -o "$D/merged16" --format merged16 --log-format json > "$Q/export.log" 2>&1
step "export: rc=$?"; tail -2 "$Q/export.log" >> "$Q/steps.log"

for mode in sampled greedy; do
  if [ $mode = sampled ]; then decode=(--temperature 0.7 --top-p 0.9); else decode=(--temperature 0 --repetition-penalty 1.15); fi
  step "eval $mode"
  PYTHONPATH=$INFER_PATH timeout 900 python3 -m enrich.cli eval "$adapter" "$A/amazon_test.parquet" -o "$D/eval-$mode" \
    --baseline smollm2-135m --engine "$ENGINE" --max-new-tokens 256 "${decode[@]}" "${EVAL_ARGS[@]}" --log-format json > "$Q/eval-$mode.log" 2>&1
  step "eval $mode: rc=$?"
  mkdir -p "$Q/eval-$mode"
  cp "$D/eval-$mode"/eval_report.json "$D/eval-$mode"/summary.md "$D/eval-$mode"/generations.jsonl "$Q/eval-$mode/" 2>/dev/null
done
step "end"
touch "$Q/done"
