#!/usr/bin/env bash
# Build here (registry reachable) what travels to the device beside .stack, packed into the fewest calls:
# each call carries at most 64 MiB with the working tree. Items, in the order the stages need them:
#   gguf.xz       the embedded model (98 MB GGUF, xz: 90 MB): GPU tests and the quality run convert it there
#   polars        polars 2.1.0 (wheel + the runtime's files, xz: 32 MB): enrich itself
#   splits.tar    the seeded train / held-out splits of ../shared/data (bench/split.py, the README's catalog kept
#                 out of training): the quality and grounded runs
#   evaldeps      rouge-score 0.1.2 (an sdist, built here) and nltk: `enrich eval`'s metrics
#   ray.tar.xz    ray 2.60.0 with jsonschema and its deps, Java jars, RLlib and the dashboard's web client left
#                 out (xz: 26 MB): the Ray stages
# Call 1 holds .stack (47 MB) and the first piece; large items are cut at the call's limit, so an item is usable
# once its last piece has arrived. ITEMS="polars.tar ray.tar.xz gguf.xz" packs only those, in that order (work that
# needs neither the quality run's data nor its metrics: Ray first, then the GPU tests). .xfer/N/ is call N's carry; .xfer/1/manifest lists every item's pieces and
# sha256, which run.sh checks when it reassembles them.
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.xfer/' .git/info/exclude || echo '/.xfer/' >> .git/info/exclude
[ -f .stack/vllm.tar.xz ] || { echo "no .stack: run ../shared/device/build-stack.sh .stack first"; exit 1; }
W=${PAYLOAD_WORK:-/tmp/enrich-payload}; mkdir -p "$W"
dl() { python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$W/dl" "$@"; }

GGUF=$(python3 -c "from enrich.model.reference import embedded_gguf; print(embedded_gguf())")
[ -f "$W/gguf.xz" ] || xz -6 -T0 -c "$GGUF" > "$W/gguf.xz"
if [ ! -f "$W/polars.tar" ]; then
  dl polars==2.1.0 polars-runtime-32==2.1.0
  rm -rf "$W/rt" && mkdir "$W/rt" && (cd "$W/rt" && unzip -q "$W"/dl/polars_runtime_32-*.whl && tar cf - . | xz -9 -T0 > ../polars-rt.tar.xz)
  tar -C "$W" -cf "$W/polars.tar" polars-rt.tar.xz -C dl polars-2.1.0-py3-none-any.whl
fi
if [ ! -f "$W/splits.tar" ]; then
  python3 bench/split.py "$W/splits" --exclude examples/catalog.parquet && tar -C "$W/splits" -cf "$W/splits.tar" .
fi
if [ ! -f "$W/evaldeps.tar.xz" ]; then
  dl nltk==3.10.4 && python3 -m pip download -q --no-deps --no-binary=:all: -d "$W/dl" rouge-score==0.1.2
  rm -rf "$W/evaldeps" && python3 -m pip install -q --no-deps --no-compile --no-build-isolation --target "$W/evaldeps" \
    "$W"/dl/nltk-3.10.4-py3-none-any.whl "$W"/dl/rouge_score-0.1.2.tar.gz
  tar -C "$W/evaldeps" -cf - nltk rouge_score | xz -9 > "$W/evaldeps.tar.xz"
fi
if [[ " ${ITEMS:-} " == *" ray.tar.xz "* ]] && [ ! -f "$W/ray.tar.xz" ]; then
  dl ray==2.60.0 jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1
  rm -rf "$W/ray" && mkdir "$W/ray"
  for w in "$W"/dl/ray-*.whl "$W"/dl/jsonschema*.whl "$W"/dl/referencing-*.whl "$W"/dl/rpds_py-*.whl; do
    unzip -q -o "$w" -d "$W/ray"
  done
  rm -rf "$W/ray/ray/jars" "$W/ray/ray/rllib" "$W/ray/ray/dashboard/client/build"
  tar -C "$W/ray" -cf - . | xz -9 -T0 > "$W/ray.tar.xz"
fi

# Room a call has: 64 MiB, less what the working tree carries, less a margin for files added later.
tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 stat -c %s 2>/dev/null | paste -sd+ | bc)
room=$((67108864 - tree - 300000))
stack=$(du -cb .stack/*.tar.xz | tail -1 | cut -f1)
rm -rf .xfer && mkdir -p .xfer/1
python3 - "$W" "$room" "$stack" ${ITEMS:-splits.tar evaldeps.tar.xz polars.tar gguf.xz} <<'EOF'
import hashlib, sys
from pathlib import Path
work, room, stack = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
items = sys.argv[4:]
call, free, manifest = 1, room - stack, []
for name in items:
    data, part = (work / name).read_bytes(), 0
    while data:
        if free <= 0:
            call, free = call + 1, room
        piece, data = data[:free], data[free:]
        out = Path(f".xfer/{call}"); out.mkdir(parents=True, exist_ok=True)
        (out / f"{name}.{part:02d}").write_bytes(piece)
        free -= len(piece); part += 1
    manifest.append(f"{name} {part} {hashlib.sha256((work / name).read_bytes()).hexdigest()}")
Path(".xfer/1/manifest").write_text("\n".join(manifest) + "\n")
print(f"{call} calls; room per call {room:,} bytes")
EOF
for d in .xfer/*; do
  n=${d#.xfer/}; extra=0; [ "$n" = 1 ] && extra=$stack
  echo "call $n: $(( $(du -cb "$d" | tail -1 | cut -f1) + extra + tree )) bytes with the tree: $(ls "$d" | tr '\n' ' ')"
done
