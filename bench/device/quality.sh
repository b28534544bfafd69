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
Q=$RUN/quality; D=$WORK/quality; A=$WORK/amazon
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

finetune() {  # backend, adapter dir
  step "finetune --backend $1"
  PYTHONPATH=$TRAIN_PATH timeout 1500 python3 -m enrich.cli finetune "$A/amazon_train.parquet" -o "$2" \
    --preset reference --base smollm2-135m --template alpaca --backend "$1" --log-format json "${FT_ARGS[@]}" \
    > "$Q/finetune-$1.log" 2>&1
  local rc=$?; step "finetune --backend $1: rc=$rc"; tail -3 "$Q/finetune-$1.log" >> "$Q/steps.log"
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
