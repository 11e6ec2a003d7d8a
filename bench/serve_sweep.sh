#!/usr/bin/env bash
# The server benchmarks of issue 20 in one call: starts `gptoss serve` on MODEL_DIR, runs bench/serve_load.py's
# fixed-length runs at each concurrency (FIXED tokens, CONCURRENCY list, 2 x N requests each) and the
# ShareGPT-like run (SHAREGPT requests released at once, seed 0), and prints one line per run; every run's
# JSON report goes to OUT (one object a line, "run" naming it).
#
#   bench/serve_sweep.sh MODEL_DIR [--device cuda] [other serve options...]
# Environment: GPTOSS_BIN (default build/gptoss), PYTHON (default python3), OUT (default serve_sweep.jsonl),
#   FIXED (512:256), CONCURRENCY ("1 8 32 64 128 256"), SHAREGPT (1000; 0 skips it), CONTEXT (--max-context of
#   the server and the ShareGPT clip, 2048), PARALLEL (slots, default the largest concurrency), PROCESSES (client
#   processes, 2).
set -euo pipefail
model=${1:?usage: bench/serve_sweep.sh MODEL_DIR [serve options]}
shift
bin=${GPTOSS_BIN:-build/gptoss}
py=${PYTHON:-python3}
out=${OUT:-serve_sweep.jsonl}
fixed=${FIXED:-512:256}
conc=${CONCURRENCY:-1 8 32 64 128 256}
sharegpt=${SHAREGPT:-1000}
ctx=${CONTEXT:-2048}
procs=${PROCESSES:-2}
parallel=${PARALLEL:-$(echo $conc | tr ' ' '\n' | sort -n | tail -1)}
here=$(cd "$(dirname "$0")" && pwd)

. "$here/serve_start.sh"
start_server "$bin" "$model" --parallel "$parallel" --max-context "$ctx" "$@"
url=$url/v1
: >"$out"
one() {  # NAME serve_load options...: one run, its report appended to OUT, a line printed
  local name=$1 json; shift
  json=$("$py" "$here/serve_load.py" --base-url "$url" --processes "$procs" --json "$@") || true
  "$py" - "$name" "$json" "$out" <<'PY'
import json, sys
name, text, out = sys.argv[1:]
if not text.strip():
    sys.exit(f"{name}: serve_load.py gave no report")
r = json.loads(text)
r["run"] = name
with open(out, "a") as f:
    f.write(json.dumps(r) + "\n")
def f(k, d=1):
    return "-" if r[k] is None else f"{r[k]:.{d}f}"
print(f"{name:<20} {r['requests']:>5} requests, {r['failures']} failed, {r['length_mismatches']} mismatched; "
      f"output {f('output_tokens_per_s')} tok/s, total {f('total_tokens_per_s')} tok/s; "
      f"TTFT p50/p99 {f('ttft_ms_p50', 0)}/{f('ttft_ms_p99', 0)} ms; TPOT p50/p99 {f('tpot_ms_p50', 2)}/{f('tpot_ms_p99', 2)} ms")
PY
}
"$py" "$here/serve_load.py" --base-url "$url" --fixed 16:16 --concurrency 1 --num-requests 1 >/dev/null  # warm-up
for n in $conc; do
  one "fixed $fixed x$n" --fixed "$fixed" --concurrency "$n" --num-requests $((2 * n))
done
if [ "$sharegpt" -gt 0 ]; then
  one "sharegpt $sharegpt" --workload sharegpt --num-requests "$sharegpt" --max-context "$ctx" --seed 0
fi
kill -TERM $pid
wait $pid || true
