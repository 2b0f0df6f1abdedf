#!/usr/bin/env bash
# Every binary that links MLX must also link OpenBLAS directly (see mlx-sys/build.rs).
# Usage: check-openblas.sh FILE...  (the executables of a build, e.g. from cargo's JSON messages)
set -euo pipefail
checked=0
bad=0
for f in "$@"; do
  needed=$(readelf -d "$f" 2>/dev/null | grep NEEDED || true)
  grep -q 'libmlx\.so' <<<"$needed" || continue
  checked=$((checked + 1))
  if ! grep -q 'libopenblas' <<<"$needed"; then
    echo "check-openblas: $f links libmlx but not OpenBLAS" >&2
    bad=$((bad + 1))
  fi
done
if [ "$checked" -eq 0 ]; then
  echo "check-openblas: none of the $# executables links libmlx" >&2
  exit 1
fi
echo "check-openblas: $checked executables link libmlx, $bad of them without OpenBLAS"
[ "$bad" -eq 0 ]
