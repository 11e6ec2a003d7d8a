#!/usr/bin/env bash
# gptoss against llama.cpp on the CPU, same checkpoint, same run, same threads: decode (32 tokens after a
# context of 128) and prefill (one 512-token prompt), printed side by side with their ratio (issue 21's
# targets: decode >= 1.2x, prefill >= 2x). Each engine's figure is the best of REPEATS runs; the engines
# take turns so that both see the same machine load, each with its weights in the page cache.
#
#   bench/cpu_vs_llamacpp.sh MODEL_DIR MODEL.gguf [--threads 2] [--math "fast exact"] [--repeats 2]
#
# MODEL.gguf is MODEL_DIR converted by llama.cpp's own converter (../shared/peers/llama-cpp.sh gguf MODEL_DIR
# OUT.gguf: bf16 attention and head, MXFP4 experts kept). --math lists the --cpu-math modes of gptoss to
# run (each gets its own rows). Environment: GPTOSS_BIN (default build/gptoss), LLAMA_BENCH (default
# build/peers/llama.cpp/build/bin/llama-bench, made by llama-cpp.sh build), PYTHON (default python3).
# To pin both engines to the same cores, run the script under taskset.
set -euo pipefail
model=${1:?usage: bench/cpu_vs_llamacpp.sh MODEL_DIR MODEL.gguf [--threads N] [--math "fast exact"] [--repeats N]}
gguf=${2:?usage: bench/cpu_vs_llamacpp.sh MODEL_DIR MODEL.gguf [--threads N] [--math "fast exact"] [--repeats N]}
shift 2
threads=2 maths="fast" repeats=2
while (($#)); do
  case "$1" in
    --threads) threads=$2; shift 2 ;;
    --math) maths=$2; shift 2 ;;
    --repeats) repeats=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
bin=${GPTOSS_BIN:-build/gptoss}
llama=${LLAMA_BENCH:-build/peers/llama.cpp/build/bin/llama-bench}
py=${PYTHON:-python3}
[ -x "$llama" ] || { echo "no llama-bench at $llama (set LLAMA_BENCH; ../shared/peers/llama-cpp.sh build DIR)" >&2; exit 2; }

field() { "$py" -c "import json,sys; print(json.load(sys.stdin)$1)"; }
# The 20b checkpoint and its GGUF are 13.8 GB each: on a machine whose memory holds only one of them, each
# engine would otherwise read its weights from disk while being timed. Before an engine runs, the other's
# files leave the page cache (posix_fadvise DONTNEED) and its own are read in once.
shopt -s nullglob
ours_files=("$model"/*.safetensors)
shopt -u nullglob
[ ${#ours_files[@]} -gt 0 ] || { echo "no *.safetensors in $model" >&2; exit 2; }
[ -f "$gguf" ] || { echo "no GGUF at $gguf" >&2; exit 2; }
resident() {  # resident KEEP_FILE... -- DROP_FILE...
  "$py" - "$@" <<'PY'
import os, sys
args = sys.argv[1:]
sep = args.index("--")
for path in args[sep + 1:]:
    fd = os.open(path, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
for path in args[:sep]:
    with open(path, "rb", buffering=0) as f:
        while f.read(64 << 20):
            pass
PY
}
best() { printf '%s\n' "$@" | sort -g | tail -1; }

declare -A ours_tg ours_pp
llama_tg=() llama_pp=()
for ((r = 0; r < repeats; ++r)); do
  resident "${ours_files[@]}" -- "$gguf"
  for m in $maths; do
    j=$("$bin" bench --model "$model" --device cpu --threads "$threads" --cpu-math "$m" --prompt-tokens 128 \
      --gen-tokens 32 --repeats 1 --json)
    ours_tg[$m]="${ours_tg[$m]:-} $(echo "$j" | field '["decode_tokens_per_s"]')"
    # Best of 2 prefills in one process: the first touches the mmap'd weights' pages, as llama-bench's own
    # warm-up run (on by default) does before it times.
    j=$("$bin" bench --model "$model" --device cpu --threads "$threads" --cpu-math "$m" --prompt-tokens 512 \
      --gen-tokens 1 --repeats 2 --json)
    ours_pp[$m]="${ours_pp[$m]:-} $(echo "$j" | field '["prefill_tokens_per_s"]')"
  done
  resident "$gguf" -- "${ours_files[@]}"
  j=$("$llama" -m "$gguf" -t "$threads" -p 0 -n 32 -d 128 -r 1 -o json 2>/dev/null)
  llama_tg+=("$(echo "$j" | field '[0]["avg_ts"]')")
  j=$("$llama" -m "$gguf" -t "$threads" -p 512 -n 0 -r 1 -o json 2>/dev/null)
  llama_pp+=("$(echo "$j" | field '[0]["avg_ts"]')")
done

lt=$(best "${llama_tg[@]}")
lp=$(best "${llama_pp[@]}")
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores," \
  "$(grep -o -w 'avx512f\|avx512_vnni\|avx512_bf16\|avx2' /proc/cpuinfo | sort -u | tr '\n' ' ')"
echo "threads $threads, best of $repeats; $(date -u +%Y-%m-%dT%H:%MZ)"
printf '%-31s %14s %14s\n' "engine" "decode tok/s" "prefill tok/s"
printf '%-31s %14.2f %14.2f\n' "llama.cpp (tg32 @ d128, pp512)" "$lt" "$lp"
for m in $maths; do
  # shellcheck disable=SC2086
  ot=$(best ${ours_tg[$m]}) op=$(best ${ours_pp[$m]})
  printf '%-31s %14.2f %14.2f\n' "gptoss --cpu-math $m" "$ot" "$op"
  printf '%-31s %13.2fx %13.2fx\n' "  ratio to llama.cpp" "$("$py" -c "print($ot / $lt)")" "$("$py" -c "print($op / $lp)")"
done
