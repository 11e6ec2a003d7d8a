#!/usr/bin/env bash
# What `gptoss serve` costs one streaming client: `gptoss bench`'s decode rate and the decode rate one
# streaming client sees from the server (bench/serve_load.py, 1 client, greedy, raw completions), measured
# in the same run on the same device; prints both and their ratio (target on the GPU: >= 0.97).
#
#   bench/serve_vs_bench.sh MODEL_DIR [--device cuda] [--gen-tokens 512] [other run options...]
# Environment: GPTOSS_BIN (default build/gptoss), PYTHON (default python3; the standard library suffices).
set -euo pipefail
model=${1:?usage: bench/serve_vs_bench.sh MODEL_DIR [--gen-tokens N] [run options]}
shift
gen=512
opts=()
while (($#)); do
  case "$1" in
    --gen-tokens) gen=$2; shift 2 ;;
    *) opts+=("$1"); shift ;;
  esac
done
bin=${GPTOSS_BIN:-build/gptoss}
py=${PYTHON:-python3}
here=$(cd "$(dirname "$0")" && pwd)

bench_json=$("$bin" bench --model "$model" --prompt-tokens 64 --gen-tokens "$gen" --json "${opts[@]}")
bench_tps=$(echo "$bench_json" | "$py" -c 'import json,sys; print(json.load(sys.stdin)["decode_tokens_per_s"])')

. "$here/serve_start.sh"
start_server "$bin" "$model" --parallel 1 --max-context $((gen + 512)) "${opts[@]}"
serve_json=$("$py" "$here/serve_load.py" --base-url "$url/v1" --clients 1 --requests 3 --max-tokens "$gen" \
  --temperature 0 --warmup --json)
kill -TERM $pid
wait $pid || true
"$py" - "$bench_tps" "$serve_json" <<'PY'
import json, sys
bench = float(sys.argv[1]); s = json.loads(sys.argv[2])
serve = s["decode_tokens_per_s_median"]
print(f"gptoss bench decode       {bench:.1f} tokens/s")
print(f"serve, 1 streaming client {serve:.1f} tokens/s (TTFT p50 {s['ttft_p50_s'] * 1e3:.1f} ms, "
      f"{s['output_tokens']} tokens in {s['requests']} requests)")
print(f"ratio                     {serve / bench:.3f}")
PY
