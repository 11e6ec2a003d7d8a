#!/usr/bin/env bash
# One device call for the batched-step work left untested in session 16 (bench/cuda_notes.md): the grouped MoE
# kernel's fetch variants (bench/grouped_fetch.patch), CUDA graphs of batched decode steps
# (bench/batch_graphs.patch), the step size (--batch-tokens) and the grouped-vs-cuBLAS threshold, without building
# there. Here:  git apply bench/grouped_fetch.patch bench/batch_graphs.patch && scripts/gpu-prebuild.sh
# Device (carry [".gpubin"]):  bench/batch_ab.sh        -> $OUT/summary2.txt, one line per run, written as it goes
# The patches' temporary switches: GPTOSS_GROUPED_FETCH = 4s (as landed) | 2d | 1d | 4d; GPTOSS_BATCH_GRAPHS = 1
# (the patch's default) | 0; GPTOSS_GROUPED_MAXA = most assignments per expert before the cuBLAS path (64).
export OUT=${OUT:-/tmp/out}
S=$OUT/summary2.txt
deps=/tmp/gptoss-deps; mkdir -p $deps; for f in .gpubin/debs/*.deb; do dpkg -x "$f" $deps; done
[ -e /work/main ] || { mkdir -p /work && ln -s "$PWD" /work/main; }  # tests/data by the path it was built with
export LD_LIBRARY_PATH="$PWD/.gpubin:/usr/local/cuda/lib64:$deps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
{ date -u; nvidia-smi --query-gpu=name --format=csv,noheader; cat .gpubin/REVISION; } > $S
B=.gpubin
ldd $B/gptoss | grep -i "not found" | tee -a $S
tests() {  # ENV=VALUE...: the CUDA MoE and batch tests under those switches
  env "$@" timeout 90 $B/gptoss_tests --gtest_filter='*CudaMoe*:Batch.Cuda*:CudaOps.FusedNormMoe' >/tmp/t.log 2>&1
  echo "tests $* rc=$? ok=$(grep -c '^\[       OK \]' /tmp/t.log) failed=$(grep -c '^\[  FAILED  \]' /tmp/t.log)" | tee -a $S
  grep -E '^\[  FAILED|Expected|actual|Which is' /tmp/t.log | head -8 | tee -a $S
}
ck=/tmp/gptoss-20b
$B/gptoss-make-checkpoint $ck --preset 20b >/dev/null 2>&1 &
mk=$!
tests GPTOSS_GROUPED_FETCH=2d GPTOSS_BATCH_GRAPHS=1
tests GPTOSS_GROUPED_FETCH=1d GPTOSS_BATCH_GRAPHS=0
wait $mk
line() { python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print("out %.0f tok/s, total %.0f, TTFT p50 %.0f p99 %.0f ms, TPOT p50 %.2f p99 %.2f ms" % (j["output_tokens_per_s"], j["total_tokens_per_s"], j["ttft_ms_p50"], j["ttft_ms_p99"], j["tpot_ms_p50"], j["tpot_ms_p99"]))' "$1" 2>&1 | head -1; }
run() {  # NAME ENV=VALUE... -- gptoss bench arguments
  local name=$1; shift; local envs=()
  while [ "$1" != "--" ]; do envs+=("$1"); shift; done; shift
  local f=$OUT/$name.json
  env "${envs[@]}" timeout 120 $B/gptoss bench -m $ck --device cuda --kv-precision bf16 --json "$@" >$f 2>>$OUT/bench2.err
  echo "$(date +%T) $name: $(line $f)" | tee -a $S
}
N64=(--concurrency 64 --prompt-tokens 512 --gen-tokens 256)
for r in 1 2; do
  for v in 4s 2d 1d; do run "r${r}_$v" GPTOSS_GROUPED_FETCH=$v GPTOSS_BATCH_GRAPHS=0 -- "${N64[@]}"; done
  run "r${r}_4s_graphs" GPTOSS_GROUPED_FETCH=4s GPTOSS_BATCH_GRAPHS=1 -- "${N64[@]}"
done
best=$(python3 - $OUT <<'PY'
import json, sys, glob, collections
d = collections.defaultdict(list)
for v in ('4s', '2d', '1d'):
    for f in glob.glob(f'{sys.argv[1]}/r*_{v}.json'):
        try: d[v].append(json.load(open(f))['output_tokens_per_s'])
        except Exception: pass
print(max(d, key=lambda k: max(d[k])) if d else '4s')
PY
)
echo "best fetch variant: $best" | tee -a $S
E=(GPTOSS_GROUPED_FETCH=$best GPTOSS_BATCH_GRAPHS=1)
run n64_bt2048 "${E[@]}" -- "${N64[@]}" --batch-tokens 2048
run n64_bt1024 "${E[@]}" -- "${N64[@]}" --batch-tokens 1024
run n64_bt2048_maxa256 "${E[@]}" GPTOSS_GROUPED_MAXA=256 -- "${N64[@]}" --batch-tokens 2048
run sharegpt_bt2048 "${E[@]}" -- --concurrency 128 --workload sharegpt --requests 1000 --batch-tokens 2048
run sharegpt_bt256 "${E[@]}" -- --concurrency 128 --workload sharegpt --requests 1000 --batch-tokens 256
run n128_bt2048 "${E[@]}" -- --concurrency 128 --prompt-tokens 512 --gen-tokens 256 --batch-tokens 2048
run n1 "${E[@]}" -- --concurrency 1 --prompt-tokens 512 --gen-tokens 256
tail -3 $OUT/bench2.err >> $S
(cd $OUT && tar czf logs2.tar.gz *.json bench2.err 2>/dev/null && rm -f *.json)
