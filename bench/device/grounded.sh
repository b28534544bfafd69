#!/usr/bin/env bash
# Grounded descriptions measured on the GPU (bench/RESULTS.md, "Grounded descriptions"), started by run.sh's
# `grounded` stage. For each catalog of bench/split.py (Amazon: brand and category; Flipkart: its fashion columns)
# the embedded model (SmolLM2-135M) is fine-tuned with enrich's reference recipe three times, the same steps each
# time: title only, with attributes, with attributes and faithful targets (as-is targets for the first two, so
# each change is measured alone). All six run at once: a 135M model leaves an H200 mostly idle (kernel launches
# bound it), so six processes cost little more than one. Each adapter is then scored by `enrich eval` on its
# catalog's held-out rows, greedy with repetition penalty 1.15 as in the earlier quality runs, against the base
# (prompted as the adapter is), scored against as-is and faithful references; then the faithful adapter runs
# `enrich run` on the same rows with the regenerate policies, scored alike by bench/grounded.py.
# Then, on a GPU left to them: the cost of regeneration in tokens/s (vLLM, the whole Amazon file, flag against
# regenerate) and the cost of the attribute lines on the 8B architecture (bench/gpu_generate.py --attrs).
# Everything goes to $RUN/grounded (packed by run.sh); `done` marks the end.
# A CPU check of this script: GROUNDED_CPU=1 (tiny steps, 4 rows, the transformers engine, peft, no vLLM stages).
set -uo pipefail
cd "$(dirname "$0")/../.."
HERE=$PWD
: "${SITE:?}" "${WORK:?}" "${RUN:?}"
G=$RUN/grounded; D=$WORK/grounded; S=$WORK/splits
mkdir -p "$G" "$D"
export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0}
# unsloth must not see vLLM (it patches it whenever it can import it); the vLLM stages need it.
TRAIN_PATH=$SITE/train:$SITE/common:$SITE/extra:$PWD:$SITE/gguf
INFER_PATH=$SITE/infer:$SITE/train:$SITE/common:$SITE/extra:$PWD:$SITE/gguf
step() { echo "== $(date +%T) $*" | tee -a "$G/steps.log"; }

ATTRS_amazon=(--attr brand=Brand --attr category=Category)
ATTRS_flipkart=(--attr brand=Brand --attr type=Type --attr ideal_for=For --attr color=Colour --attr fabric=Fabric
  --attr pattern=Pattern --attr sleeve=Sleeve --attr neck=Neck --attr fit=Fit --attr material=Material
  --attr occasion=Occasion --attr number_of_contents_in_sales_package=Pack)
# Amazon: 400 steps of 16 rows, about 1.4 epochs of what --max-response-tokens 256 keeps; Flipkart: 50 steps,
# about 3 epochs of its few hundred rows (bench/RESULTS.md says what its size allows).
STEPS_amazon=${GROUNDED_STEPS_AMAZON:-400}; STEPS_flipkart=${GROUNDED_STEPS_FLIPKART:-50}
FT=(--preset reference --base smollm2-135m --template alpaca --backend "${GROUNDED_BACKEND:-unsloth}"
  --no-gradient-checkpointing --max-response-tokens 256 --batch-size 16 --grad-accum 1 --log-format json)
DECODE=(--temperature 0 --repetition-penalty 1.15 --max-new-tokens 256)
EVAL=(--engine transformers --references both --log-format json "${DECODE[@]}")
CHECKS=(--set policies.unsupported_claims=regenerate --set policies.wrong_type=regenerate
  --set policies.off_topic=regenerate --candidates 4)
if [ -n "${GROUNDED_CPU:-}" ]; then
  STEPS_amazon=2; STEPS_flipkart=2; FT+=(--max-rows 48 --eval-steps 1 --save-steps 2 --batch-size 2); EVAL+=(--sample 4)
  LIMIT=(--limit 4)
else LIMIT=(); fi

train_and_eval() {  # catalog config: fine-tune, then eval against the base (once per prompt kind)
  local c=$1 cfg=$2 dir=$D/$1-$2 steps_var=STEPS_$1 attrs_var="ATTRS_$1[@]"
  local attrs=() targets=as-is baseline=(--baseline smollm2-135m)
  [ "$cfg" != title ] && attrs=("${!attrs_var}")
  [ "$cfg" = faithful ] && targets=faithful && baseline=(--no-baseline)
  if [ ! -f "$dir/adapter/enrich.json" ]; then
    step "finetune $c $cfg"
    # Each in a folder of its own: unsloth compiles its patches into ./unsloth_compiled_cache.
    mkdir -p "$dir" && cd "$dir" && PYTHONPATH=$TRAIN_PATH python3 -m enrich.cli finetune "$S/${c}_train.parquet" -o "$dir/adapter" "${FT[@]}" \
      --max-steps "${!steps_var}" --targets "$targets" "${attrs[@]}" > "$G/finetune-$c-$cfg.log" 2>&1
    step "finetune $c $cfg: rc=$?"
    cd "$HERE"
  fi
  mkdir -p "$G/$c-$cfg"
  cp "$dir"/adapter/{training_report.json,enrich.json,claims.json,loss.png} "$G/$c-$cfg/" 2>/dev/null
  step "eval $c $cfg"
  PYTHONPATH=$INFER_PATH python3 -m enrich.cli eval "$dir/adapter" "$S/${c}_test.parquet" -o "$dir/eval" \
    "${baseline[@]}" "${EVAL[@]}" > "$G/eval-$c-$cfg.log" 2>&1
  step "eval $c $cfg: rc=$?"
  cp "$dir"/eval/{eval_report.json,summary.md,generations.jsonl} "$G/$c-$cfg/" 2>/dev/null
}

regenerate() {  # catalog: the faithful adapter over the held-out rows with the regenerate policies, scored
  local c=$1 dir=$D/$1-regen
  step "run $c regenerate"
  mkdir -p "$dir" "$G/$c-regen"
  PYTHONPATH=$INFER_PATH python3 -m enrich.cli run "$S/${c}_prompts.parquet" -o "$dir/out.parquet" --overwrite --restart \
    --model "$D/$c-faithful/adapter" --engine transformers "${DECODE[@]}" "${CHECKS[@]}" "${LIMIT[@]}" \
    --no-review --log-format json > "$G/run-$c-regen.log" 2>&1
  step "run $c regenerate: rc=$?"
  PYTHONPATH=$INFER_PATH python3 bench/grounded.py score "$dir/out.parquet" "$S/${c}_test.parquet" \
    --model "$D/$c-faithful/adapter" --json "$G/$c-regen/score.json" >> "$G/steps.log" 2>&1
  cp "$dir/out.parquet.report.json" "$G/$c-regen/report.json" 2>/dev/null
  cp "$dir/out.parquet" "$G/$c-regen/out.parquet" 2>/dev/null
}

cost() {  # the regenerate policies' cost on vLLM: the whole Amazon file, flag against regenerate, one after the other
  local out=$D/cost; mkdir -p "$out"
  for mode in flag regenerate; do
    local checks=(--set policies.unsupported_claims=flag --set policies.wrong_type=flag --set policies.off_topic=flag)
    [ $mode = regenerate ] && checks=("${CHECKS[@]}")
    step "cost $mode"
    PYTHONPATH=$INFER_PATH python3 -m enrich.cli run "$S/amazon_all.parquet" -o "$out/$mode.parquet" --overwrite \
      --restart --model "$D/amazon-faithful/adapter" --engine vllm "${DECODE[@]}" "${checks[@]}" --no-review \
      --log-format json > "$G/cost-$mode.log" 2>&1
    step "cost $mode: rc=$?"
    cp "$out/$mode.parquet.report.json" "$G/cost-$mode.report.json" 2>/dev/null
  done
}

# Six at once on the GPU; one at a time in the CPU check (each takes 4-5 GB of RAM there).
spawn() { if [ -n "${GROUNDED_CPU:-}" ]; then "$@"; else "$@" & fi; }

step "start"
# The embedded GGUF is converted once here rather than by six processes at once.
PYTHONPATH=$TRAIN_PATH python3 -c "from enrich.model.reference import resolve_model; resolve_model('smollm2-135m')" \
  >> "$G/steps.log" 2>&1
for c in amazon flipkart; do
  for cfg in title attrs faithful; do spawn train_and_eval "$c" "$cfg"; done
done
wait
for c in amazon flipkart; do spawn regenerate "$c"; done
wait
# The Amazon adapter with attributes and faithful targets goes into the package as the CPU default; run.sh's
# grounded stage brings /tmp/ship back beside run.tgz.
mkdir -p /tmp/ship && PYTHONPATH=$INFER_PATH python3 bench/grounded.py ship "$D/amazon-faithful/adapter" \
  /tmp/ship/adapter.tgz >> "$G/steps.log" 2>&1
if [ -z "${GROUNDED_CPU:-}" ]; then
  cost
  model8b=$WORK/llama-8b-arch
  [ -f $model8b/config.json ] || PYTHONPATH=$PWD python3 bench/gpu_generate.py model $model8b >> "$G/steps.log" 2>&1
  for prompts in title attrs; do
    flag=(); [ $prompts = attrs ] && flag=(--attrs)
    step "8B vLLM $prompts prompts"
    PYTHONPATH=$INFER_PATH timeout 300 python3 bench/gpu_generate.py vllm $model8b "$G/parts" --label "$prompts" \
      --max-num-seqs 2048 --max-num-batched-tokens 65536 "${flag[@]}" > "$G/8b-$prompts.log" 2>&1
    step "8B vLLM $prompts prompts: rc=$?"
  done
fi
PYTHONPATH=$INFER_PATH python3 bench/grounded.py table "$G" --json "$G/grounded.json" >> "$G/steps.log" 2>&1
step "end"
touch "$G/done"
