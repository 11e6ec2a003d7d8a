#!/usr/bin/env bash
# A/B of an environment variable on `gptoss bench`: the runs for each value are interleaved (round 1: every
# value, round 2: every value, ...) so that clock and thermal drift hit all values alike, and each value's
# best decode / prefill tokens/s is printed with its ratio to the first value, the baseline of the same run.
#   bench/ab_env.sh GPTOSS_BIN VAR "v1 v2 ..." ROUNDS -- gptoss bench arguments (without --json)
# e.g. bench/ab_env.sh build/gptoss GPTOSS_CUDA_PREFETCH "0 3" 3 -- -m ck --device cuda --gen-tokens 128
# VAR = BIN: the values are gptoss binaries instead (two builds compared, GPTOSS_BIN unused), e.g.
#      bench/ab_env.sh - BIN "build-base/gptoss build/gptoss" 3 -- -m ck --device cuda
set -uo pipefail
bin=$1 var=$2 values=$3 rounds=$4
shift 4
[ "${1:-}" = "--" ] && shift
tmp=$(mktemp -d)
for r in $(seq "$rounds"); do
  for v in $values; do
    if [ "$var" = BIN ]; then run=(timeout 300 "$v"); else run=(env "$var=$v" timeout 300 "$bin"); fi
    f=$tmp/$(echo "$v" | tr / _)
    "${run[@]}" bench "$@" --json >"$f.$r.json" 2>"$f.$r.err" ||
      echo "run $var=$v round $r failed: $(tail -2 "$f.$r.err")" >&2
  done
done
python3 - "$tmp" "$var" "$rounds" $values <<'PY'
import json, sys, glob
tmp, var, rounds, values = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
def runs(v, key):
    out = []
    for r in range(1, rounds + 1):
        try: out.append(json.load(open(f"{tmp}/{v.replace('/', '_')}.{r}.json"))[key])
        except Exception: pass
    return out
for key in ("decode_tokens_per_s", "prefill_tokens_per_s"):
    base = max(runs(values[0], key), default=0)
    for v in values:
        xs = runs(v, key)
        best = max(xs, default=0)
        ratio = f"{best / base:.3f}" if base else "-"
        print(f"{key:22s} {var}={v:8s} best {best:10.1f}  x{ratio} of {var}={values[0]}   runs: " + " ".join(f"{x:.1f}" for x in xs))
PY
rm -rf "$tmp"
