#!/usr/bin/env bash
# Download FlashAttention-4 (the CuTe-DSL `flash-attn-4` package) and the wheels it loads, for a
# Python 3.12 x86_64 GPU box, and pack them into two folders that each fit one device call.
#
#   bash scripts/fa4_wheels.sh            # on a machine with a package index; writes .fa4/
#
# Output (git-ignored): .fa4/part1 and .fa4/part2, each under PART_LIMIT_MIB, each with a copy of
# MANIFEST (every wheel's name, sha256 and the pieces it was cut into). A device call carries at
# most 64 MiB including the working tree, and the CUDA-13 compiler wheel alone is about 88 MiB, so
# wheels above PIECE_MIB are cut into pieces that scripts/fa4_install.sh joins again on the box.
#
# Why not one call: all but 0.2 MiB of the CUDA-13 wheel is two shared libraries that
# `import cutlass` loads (cutlass/_mlir/_mlir_libs/__init__.py binds both): the CuTe DSL's MLIR
# compiler, _cutlass_ir.cu13...so (184 MiB unpacked), and its runtime, libcute_dsl_runtime.so
# (42 MiB). Nothing large is unused, and recompressing the compiler alone with `xz -9` still
# leaves 48 MiB of it, so the whole set (106 MiB as wheels) stays above one call's 60 MiB.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/.fa4"
PIP="${PIP:-$ROOT/.venv/bin/pip}"
[ -x "$PIP" ] || PIP="python3 -m pip"
PIECE_MIB=45
PART_LIMIT_MIB=60

# Pinned: the set measured on the H200 box (flash-attn-4 4.0.0b36 is a pre-release, hence --pre).
# nvidia-cutlass-dsl names libs-cu12 as a dependency; with libs-cu13 installed it is not loaded,
# and --no-deps leaves it out. The CUDA-13 libraries match the box's torch (cu130).
WHEELS=(
  flash-attn-4==4.0.0b36
  nvidia-cutlass-dsl==4.8.1
  nvidia-cutlass-dsl-libs-base==4.8.1
  nvidia-cutlass-dsl-libs-core==4.8.1
  nvidia-cutlass-dsl-libs-cu13==4.8.1
  cuda-bindings==13.5.0
  cuda-pathfinder==1.9.1
  apache-tvm-ffi==0.1.15.post2
  torch-c-dlpack-ext==0.1.5
  quack-kernels==0.6.5
  einops==0.8.2
)

mib() { echo $(( ($1 + 1048575) / 1048576 )); }

rm -rf "$OUT"
mkdir -p "$OUT/wheels" "$OUT/pieces" "$OUT/part1" "$OUT/part2"
$PIP download --quiet --python-version 3.12 --platform manylinux_2_28_x86_64 --only-binary=:all: --no-deps --pre \
  -d "$OUT/wheels" "${WHEELS[@]}"

# Cut the large wheels; MANIFEST lines: "<wheel> <sha256> <piece> [<piece> ...]".
manifest="$OUT/pieces/MANIFEST"
: > "$manifest"
for wheel in "$OUT"/wheels/*.whl; do
  name="$(basename "$wheel")"
  sum="$(sha256sum "$wheel" | cut -d' ' -f1)"
  if [ "$(stat -c %s "$wheel")" -gt $((PIECE_MIB * 1048576)) ]; then
    split -b "${PIECE_MIB}M" -d -a 2 "$wheel" "$OUT/pieces/$name.part"
  else
    cp "$wheel" "$OUT/pieces/$name.part00"
  fi
  echo "$name $sum $(cd "$OUT/pieces" && ls "$name".part* | tr '\n' ' ')" >> "$manifest"
done

# Largest piece first, each into the lighter part: two parts of about equal size.
size1=0
size2=0
while read -r size piece; do
  if [ "$size1" -le "$size2" ]; then part=part1; size1=$((size1 + size)); else part=part2; size2=$((size2 + size)); fi
  mv "$OUT/pieces/$piece" "$OUT/$part/"
done < <(cd "$OUT/pieces" && stat -c '%s %n' *.part* | sort -rn)
cp "$manifest" "$OUT/part1/MANIFEST"
cp "$manifest" "$OUT/part2/MANIFEST"
rm -rf "$OUT/pieces"

echo "wheels (MiB):"
for wheel in "$OUT"/wheels/*.whl; do printf '  %4s  %s\n' "$(mib "$(stat -c %s "$wheel")")" "$(basename "$wheel")"; done
for part in part1 part2; do
  bytes="$(du -sb "$OUT/$part" | cut -f1)"
  printf '%s: %s MiB (%s bytes), %s files\n' "$part" "$(mib "$bytes")" "$bytes" "$(ls "$OUT/$part" | wc -l)"
  if [ "$bytes" -ge $((PART_LIMIT_MIB * 1048576)) ]; then
    echo "fa4_wheels.sh: $part is over ${PART_LIMIT_MIB} MiB; lower PIECE_MIB" >&2
    exit 1
  fi
done
rm -rf "$OUT/wheels"
echo "carry .fa4/part1 in one device call and .fa4/part2 in the next, each running scripts/fa4_install.sh"
