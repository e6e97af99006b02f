#!/usr/bin/env bash
# Install FlashAttention-4 on the GPU box from the parts scripts/fa4_wheels.sh made, one part per
# device call (each call carries one of .fa4/part1, .fa4/part2 on a warm machine):
#
#   bash scripts/fa4_install.sh .fa4/part1   # first call: keeps its pieces in /tmp/fa4-parts, exits 2
#   bash scripts/fa4_install.sh .fa4/part2   # second call: joins the pieces, installs, exits 0
#   python3 scripts/benchmark.py --fa4-site /tmp/fa4site ...
#
# Idempotent: a call after the install (or with a part already copied) changes nothing. Exit
# status: 0 installed, 2 pieces still missing (carry the other part next), 1 anything wrong.
# The folder is loaded with site.addsitedir, not PYTHONPATH: only addsitedir runs the
# nvidia_cutlass_dsl .pth file that makes `import cutlass` work.
set -euo pipefail

PART="${1:?usage: fa4_install.sh PART_DIR (a carried .fa4/partN folder)}"
PIECES="${FA4_PIECES:-/tmp/fa4-parts}"
SITE="${FA4_SITE:-/tmp/fa4site}"
PYTHON="${PYTHON:-python3}"

[ -f "$PART/MANIFEST" ] || { echo "fa4_install.sh: $PART/MANIFEST not found (run scripts/fa4_wheels.sh)" >&2; exit 1; }
mkdir -p "$PIECES"
if [ -f "$SITE/.installed" ] && cmp -s "$SITE/.installed" "$PART/MANIFEST"; then
  echo "fa4: already installed in $SITE"
  exit 0
fi
cp -n "$PART"/*.part* "$PIECES/" 2>/dev/null || true
cp "$PART/MANIFEST" "$PIECES/MANIFEST"
du -sh "$PIECES"

missing=()
while read -r wheel _sum pieces; do
  for piece in $pieces; do [ -f "$PIECES/$piece" ] || missing+=("$piece"); done
done < "$PIECES/MANIFEST"
if [ "${#missing[@]}" -gt 0 ]; then
  echo "fa4: waiting for ${#missing[@]} piece(s) (${missing[*]}); carry the other part in the next call"
  exit 2
fi

version="$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
if [ "$version" != "3.12" ]; then
  echo "fa4_install.sh: the wheels are for CPython 3.12, $PYTHON is $version" >&2
  exit 1
fi
wheels="$(mktemp -d)"
trap 'rm -rf "$wheels"' EXIT
while read -r wheel sum pieces; do
  (cd "$PIECES" && cat $pieces) > "$wheels/$wheel"
  echo "$sum  $wheels/$wheel" | sha256sum --check --quiet
  printf '  %8s  %s\n' "$(stat -c %s "$wheels/$wheel")" "$wheel"
done < "$PIECES/MANIFEST"
rm -rf "$SITE"
"$PYTHON" -m pip install --quiet --no-deps --no-index --target "$SITE" "$wheels"/*.whl
cp "$PIECES/MANIFEST" "$SITE/.installed"
echo "fa4: installed in $SITE; load it with --fa4-site $SITE (or FA4_SITE=$SITE)"
