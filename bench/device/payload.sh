#!/usr/bin/env bash
# Build here (registry reachable) what travels to the device beside .stack, split so that each call stays
# under 64 MiB with the working tree:  .xfer/a (with .stack)  .xfer/b (polars)  .xfer/c
#   a: GGUF part 1 (16 MB)        + .stack (47 MB)   -> call 1
#   b: polars 2.1.0 (32 MB, xz)   + GGUF part 2      -> call 2
#   c: GGUF part 3                                   -> call 3
# The GGUF is the embedded model's (98 MB; the GPU tests convert it there, as enrich does here).
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.xfer/' .git/info/exclude || echo '/.xfer/' >> .git/info/exclude
rm -rf .xfer && mkdir -p .xfer/a .xfer/b .xfer/c
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$W" polars==2.1.0 polars-runtime-32==2.1.0
cp "$W"/polars-2.1.0-py3-none-any.whl .xfer/b/
(mkdir "$W/rt" && cd "$W/rt" && unzip -q "$W"/polars_runtime_32-*.whl && tar cf - . | xz -9 -T0 > ../polars-rt.tar.xz)
mv "$W/polars-rt.tar.xz" .xfer/b/
GGUF=$(python3 -c "from enrich.models import embedded_gguf; print(embedded_gguf())")
split -b 16000000 -a 2 "$GGUF" "$W/gguf.part."      # 7 pieces of 16 MB at most: 1 / 2 / 4 go to a / b / c
mv "$W/gguf.part.aa" .xfer/a/; mv "$W/gguf.part.ab" "$W/gguf.part.ac" .xfer/b/
mv "$W"/gguf.part.* .xfer/c/
ls "$GGUF" >/dev/null && ls .xfer/*/gguf.part.* | wc -l > .xfer/a/gguf.parts
du -b .xfer/* .stack | sort -k2
