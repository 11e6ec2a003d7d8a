#!/usr/bin/env bash
# Whether CUDA files compile to the same PTX and the same machine code (cubin) in this tree as at commit REV: a
# refactor of a kernel that leaves its code unchanged leaves its speed unchanged, which can be checked here
# without a GPU. The hashed names of anonymous namespaces (they change with the file's contents) are normalised
# and debug lines left out, in the PTX compared and in the PTX that ptxas assembles for the cubin comparison.
#   usage: scripts/ptx-same.sh REV src/backend/cuda/moe_decode_tc.cu [more .cu files]
# Prints a line per file (same / N lines differ) and exits 1 if any differs.
set -euo pipefail
rev=${1:?usage: scripts/ptx-same.sh REV FILE.cu...}
shift
cd "$(dirname "$0")/.."
base=$(mktemp -d)
trap 'rm -rf "$base"' EXIT
git archive "$rev" src include | tar -x -C "$base"
flags=(-std=c++20 -arch=sm_90a -O3 -Isrc -Iinclude -ptx)
anon='[0-9a-f]+_[0-9]+_[A-Za-z0-9_]+_cu_[0-9a-f]+'  # an anonymous namespace's hashed name
norm() { sed -E "s/_GLOBAL__N__$anon/ANON/g; s/_INTERNAL_$anon/ANON/g" "$1" | grep -v -E '^\s*(//|\.file\s|\.loc\s)|^\s*$'; }
rc=0
for f in "$@"; do
  nvcc "${flags[@]}" "$f" -o "$base/new.ptx"
  (cd "$base" && nvcc "${flags[@]}" "$f" -o "$base/old.ptx")
  norm "$base/old.ptx" >"$base/old.n.ptx"
  norm "$base/new.ptx" >"$base/new.n.ptx"
  n=$(diff "$base/old.n.ptx" "$base/new.n.ptx" | grep -c '^[<>]' || true)
  ptxas -arch=sm_90a -O3 "$base/old.n.ptx" -o "$base/old.cubin"
  ptxas -arch=sm_90a -O3 "$base/new.n.ptx" -o "$base/new.cubin"
  if cmp -s "$base/old.cubin" "$base/new.cubin"; then cubin="same cubin"; else cubin="cubin differs"; rc=1; fi
  if [ "$n" = 0 ]; then echo "same PTX, $cubin: $f"; else echo "$n PTX lines differ, $cubin: $f"; rc=1; fi
done
exit $rc
