#!/usr/bin/env bash
# The grouped MoE kernel's weight-fetch variants and the batched step size, in one device call, no build there
# (written in session 16; the device time ran out before it ran, bench/cuda_notes.md):
#   git apply bench/grouped_fetch.patch && scripts/gpu-prebuild.sh   (here), then on the device, carry [".gpubin"]:
#   bench/grouped_fetch_ab.sh
# The patch's temporary switches: GPTOSS_GROUPED_FETCH = 4s (one batch of 4 steps in flight, as landed), 2d (two
# batches of 2 steps, double-buffered), 1d, 4d; GPTOSS_GROUPED_MAXA = most assignments per expert for the grouped
# kernel before the cuBLAS path (64 as landed). Results: $OUT/summary2.txt, one line per run.
export OUT=${OUT:-/tmp/out}
S=$OUT/summary2.txt
# prebuilt here by scripts/gpu-prebuild.sh: the runtime libraries from .gpubin/debs
deps=/tmp/gptoss-deps; mkdir -p $deps; for f in .gpubin/debs/*.deb; do dpkg -x "$f" $deps; done
[ -e /work/main ] || { mkdir -p /work && ln -s "$PWD" /work/main; }
export LD_LIBRARY_PATH="$PWD/.gpubin:/usr/local/cuda/lib64:$deps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
{ date -u; nvidia-smi --query-gpu=name --format=csv,noheader; } > $S
B=.gpubin
ldd $B/gptoss | grep -i "not found" | tee -a $S
tests() {
  GPTOSS_GROUPED_FETCH=$1 timeout 60 $B/gptoss_tests --gtest_filter='*CudaMoe*:Batch.Cuda*:CudaOps.FusedNormMoe' >/tmp/t_$1.log 2>&1
  echo "tests $1 rc=$? ok=$(grep -c '^\[       OK \]' /tmp/t_$1.log) failed=$(grep -c '^\[  FAILED  \]' /tmp/t_$1.log)" | tee -a $S
  grep -E '^\[  FAILED|Expected|actual|Which is' /tmp/t_$1.log | head -8 | tee -a $S
}
ck=/tmp/gptoss-20b
$B/gptoss-make-checkpoint $ck --preset 20b >/dev/null 2>&1 &
mk=$!
tests 2d
wait $mk
line() { python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print("out %.0f tok/s, total %.0f, TTFT p50 %.0f p99 %.0f ms, TPOT p50 %.2f p99 %.2f ms" % (j["output_tokens_per_s"], j["total_tokens_per_s"], j["ttft_ms_p50"], j["ttft_ms_p99"], j["tpot_ms_p50"], j["tpot_ms_p99"]))' "$1" 2>&1 | head -1; }
run() {  # name env... -- bench args
  local name=$1; shift; local f=$OUT/$name.json
  env "$@" >$f 2>>$OUT/bench2.err; echo "$(date +%T) $name: $(line $f)" | tee -a $S
}
C=(-m $ck --device cuda --kv-precision bf16 --json)
ab() { for v in 4s 2d 1d; do
  run "r${1}_n64_$v" GPTOSS_GROUPED_FETCH=$v timeout 60 $B/gptoss bench "${C[@]}" --concurrency 64 --prompt-tokens 512 --gen-tokens 256
done; }
ab 1
best=$(python3 - $OUT <<'PY'
import json,sys,glob,collections
d=collections.defaultdict(list)
for f in glob.glob(sys.argv[1]+'/r*_n64_*.json'):
    try: d[f.split('_')[-1][:-5]].append(json.load(open(f))['output_tokens_per_s'])
    except Exception: pass
print(max(d, key=lambda k: max(d[k])) if d else '4s')
PY
)
echo "best fetch variant: $best" | tee -a $S
export GPTOSS_GROUPED_FETCH=$best
N64=(--concurrency 64 --prompt-tokens 512 --gen-tokens 256)
run n64_bt2048 timeout 60 $B/gptoss bench "${C[@]}" "${N64[@]}" --batch-tokens 2048
run sharegpt_bt2048 timeout 100 $B/gptoss bench "${C[@]}" --concurrency 128 --workload sharegpt --requests 1000 --batch-tokens 2048
ab 2
run n64_bt1024 timeout 60 $B/gptoss bench "${C[@]}" "${N64[@]}" --batch-tokens 1024
run n64_bt2048_maxa256 GPTOSS_GROUPED_MAXA=256 timeout 60 $B/gptoss bench "${C[@]}" "${N64[@]}" --batch-tokens 2048
run n128_bt2048 timeout 60 $B/gptoss bench "${C[@]}" --concurrency 128 --prompt-tokens 512 --gen-tokens 256 --batch-tokens 2048
tests 1d
tail -3 $OUT/bench2.err >> $S
(cd $OUT && tar czf logs2.tar.gz *.json bench2.err 2>/dev/null && rm -f *.json)
