#!/usr/bin/env bash
# Converts a 20b-shaped checkpoint in every mode and compares each with a plain copy of the same
# input to the same disk, in one run: wall time, MB/s (output bytes), peak RSS, ratio to the copy.
#
# usage: bench/bench_convert.sh [MODEL_DIR]
#   MODEL_DIR  default /work/models/20b-hf; generated once with gptoss-make-checkpoint --preset 20b
#   env GPTOSS_BIN   the CLI (default build/gptoss; gptoss-make-checkpoint is taken from beside it)
#   env BENCH_OUT    scratch dir on the disk to measure (default: beside MODEL_DIR); outputs are
#                    deleted after each mode
#   env F32_LAYERS   layers for safetensors/f32 (default 12: all 24 layers in f32 are 84 GB)
# Needs /usr/bin/time (GNU time). The page cache is not dropped (that would disturb other users);
# every mode reads the same input after the copy has read it once.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${GPTOSS_BIN:-$ROOT/build/gptoss}
MAKE=$(dirname "$BIN")/gptoss-make-checkpoint
MODEL=${1:-/work/models/20b-hf}
OUT=${BENCH_OUT:-$(dirname "$MODEL")/bench-out}
F32_LAYERS=${F32_LAYERS:-12}
mkdir -p "$OUT"

if [ ! -d "$MODEL" ]; then
  echo "generating $MODEL (20b preset, ~13.8 GB) ..." >&2
  "$MAKE" "$MODEL.partial" --preset 20b --seed 0 && mv "$MODEL.partial" "$MODEL"
fi
IN_BYTES=$(du -sb "$MODEL" | cut -f1)

# run NAME CMD...: prints one table row; sets COPY_S for the baseline
run() {
  local name=$1; shift
  local log="$OUT/time.log"
  /usr/bin/time -v "$@" > /dev/null 2> "$log"
  local wall rss secs bytes
  wall=$(grep "Elapsed (wall clock)" "$log" | awk '{print $NF}')
  rss=$(grep "Maximum resident set size" "$log" | awk '{print $NF}')
  secs=$(echo "$wall" | awk -F: '{ if (NF == 3) print $1*3600 + $2*60 + $3; else print $1*60 + $2 }')
  bytes=$(du -sb "$OUT/dst" | cut -f1)
  [ -z "${COPY_S:-}" ] && COPY_S=$secs
  printf "%-28s %8.1f s %9.0f MB/s %8.1f GB out %9.0f MiB RSS %6.2fx copy\n" "$name" "$secs" \
    "$(echo "$bytes $secs" | awk '{print $1/1e6/$2}')" "$(echo "$bytes" | awk '{print $1/1e9}')" \
    "$(echo "$rss" | awk '{print $1/1024}')" "$(echo "$secs $COPY_S" | awk '{print $1/$2}')"
  rm -rf "$OUT/dst"
}

echo "gptoss convert benchmark: $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB RAM, input $MODEL ($(echo "$IN_BYTES" | awk '{print $1/1e9}') GB), output disk $(df -h "$OUT" | awk 'NR==2{print $1}')"
rm -rf "$OUT/dst"
cat "$MODEL"/*.safetensors > /dev/null  # the same cache state for every mode
run "copy (cp -r + sync)" sh -c "cp -r '$MODEL' '$OUT/dst' && sync"
run "native mxfp4" "$BIN" convert --model-path "$MODEL" -o "$OUT/dst" -q
run "native mxfp4 --threads 1" "$BIN" convert --model-path "$MODEL" -o "$OUT/dst" -q --threads 1
run "native bf16" "$BIN" convert --model-path "$MODEL" -o "$OUT/dst" -q --dtype bf16
run "safetensors bf16" "$BIN" convert --model-path "$MODEL" -o "$OUT/dst" -q --format safetensors
run "safetensors f32 ($F32_LAYERS layers)" "$BIN" convert --model-path "$MODEL" -o "$OUT/dst" -q --format safetensors --dtype f32 --layers "$F32_LAYERS"
run "orbax bf16" "$BIN" convert --model-path "$MODEL" -o "$OUT/dst" -q --format orbax
