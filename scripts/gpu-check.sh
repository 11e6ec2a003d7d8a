#!/usr/bin/env bash
# One call on the GPU machine: configure + build (Release, CUDA on), run the CUDA parity tests,
# generate a gpt-oss-20b-shaped checkpoint with the project's tool, and benchmark it:
# `gptoss bench --device cuda` (decode at short and 32k context, prefill of 2048 tokens, load time,
# device copy bandwidth), what each op costs inside a decode step (`bench --op-costs`) and the per-op time
# split of one decode step measured op by op (bench_cuda_ops).
# End to end (PASS/FAIL lines in summary.txt): verify / generate --tokens / logits cuda vs cpu on the 20b-shaped
# checkpoint; generate --prompt and chat from a pipe on a small real-vocabulary checkpoint with the real
# tokenizer (carried as .gpudeps/tokenizer.json, a copy of ../shared/data/gpt-oss-tokenizer/tokenizer.json).
# Results land in $OUT (default /tmp/gpu-check): summary.txt (also printed last) and logs.tar.gz with env.txt,
# build.log, tests.log, bench_*.json, e2e.log, bench.err and the rest (at most 8 files come back from the GPU machine).
#
# The GPU machine has CUDA, CMake and ninja but maybe not the C++ dependencies: when they are
# missing, the Debian packages carried in .gpudeps/ are unpacked into a private prefix (not /).
# If the build still fails there, prebuilt binaries carried in .gpubin/ (built on the dev box with
# -DGPTOSS_CUDA=ON; gptoss needs libgptoss_cuda.so beside it) are used instead; the summary says which.
#   carry: [".gpudeps", ".gpubin"]   (both ignored via .git/info/exclude)
# --prebuilt skips the build and runs .gpubin/ as filled by scripts/gpu-prebuild.sh (the same CUDA 13.0 here and
# there; its runtime libraries in .gpubin/debs): the ~2.5 minutes of building there are device time.
#   carry: [".gpubin"]
#   usage: scripts/gpu-check.sh [--prebuilt] [--quick] [--profile] [--long] [--prefill-profile] [--decode-profile] [--120b | --120b-only] [--skip-main]
#          --quick: tests + short-context bench only;
#          --profile: also per-kernel GPU times of bench_cuda_ops under nsys or ncu -> profile.txt;
#          --120b: afterwards, a gpt-oss-120b-shaped checkpoint (65 GB) in tmpfs (the disk is 64 GB): verify and
#          bench --prompt-tokens 512 --gen-tokens 64 on the card, peak GPU memory from nvidia-smi (-> bench_120b.json);
#          --120b-only: build (reused when the build folder is still there) and the 120b part alone;
#          --long: CUDA (decode path, f32 KV) vs CPU logits over a 2,048-token prompt, beside the CPU against
#          itself at two prefill chunk sizes (how much this random checkpoint amplifies rounding differences),
#          and the same on 2 layers of the 20b geometry with KV f32 and bf16;
#          --skip-main: build, then only the extras named (--long, --prefill-profile, --120b);
#          --prefill-profile: per-kernel device time of one 512-token prefill chunk on the 20b checkpoint under ncu
#          (summed per kernel name -> prefill_profile.txt), to compare with the chunk's wall time from bench;
#          --decode-profile: the same for a 1-token prompt and 4 decode steps (-> decode_profile.txt), with each kernel's
#          DRAM bytes read and the rate they were read at;
#          --serve: `gptoss serve --device cuda` on the 20b checkpoint (with the carried tokenizer): chat, tools and
#          streaming requests by curl (PASS/FAIL), bench/serve_load.py with one streaming client against `gptoss bench`
#          at the same prompt and output lengths in the same run (the server's overhead as a ratio), 16 concurrent
#          clients, SIGTERM (-> serve.json, serve.log);
#          --batch: continuous batching on the 20b checkpoint: `bench --concurrency N` (engine level, fixed 512-token
#          prompts and 256 output tokens) at N = 1, 8, 32, 64, 128, 256, N = 8 without batching, and the ShareGPT-like
#          workload (1,000 requests at once over 128 slots), with --ab-base also the base build at N = 8 and 64
#          (-> batch_*.json in the archive, one line each in summary);
#          --batch-profile: nsys over `bench --concurrency 64` (512+64): GPU time per kernel, host time per CUDA call;
#          --batch-kprofile: ncu device time and DRAM bytes per kernel over `bench --concurrency 64` (1+8 tokens: 64-row
#          steps only) (-> batch_kprofile.txt), for hosts without nsys;
#          --grouped-ncu: ncu's speed-of-light, occupancy and warp-stall sections for 4 launches each of the grouped MoE
#          kernel in 64-row steps (64 requests of 1 + 8 tokens) -> grouped_ncu.txt: what bounds it (issue, memory
#          latency, shared memory), where batched decode spends two thirds of a step;
#          --ab-base DIR: a second source tree (an earlier commit: `git archive C | tar -x -C .gpubase`, carried) built
#          beside this one (in the background while the checks run), then decode of both binaries interleaved
#          (bench/ab_env.sh BIN: 3 rounds at context 2048, 2 at 32k; environment AB_LONG=0: 2048 only).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/gpu-check}
mkdir -p "$out"
prebuilt=0; quick=0; profile=0; big=0; only_big=0; pprof=0; dprof=0; long=0; skip_main=0; ab_base=; serve=0; batch=0; bprof=0; bkprof=0; gncu=0
while [ $# -gt 0 ]; do
  a=$1; shift
  case $a in --prebuilt) prebuilt=1 ;; --quick) quick=1 ;; --serve) serve=1 ;; --batch) batch=1 ;; --batch-profile) bprof=1 ;; --batch-kprofile) bkprof=1 ;; --grouped-ncu) gncu=1 ;; --ab-base) ab_base=$1; shift ;; --profile) profile=1 ;; --120b) big=1 ;; --120b-only) big=1; only_big=1 ;;
    --prefill-profile) pprof=1 ;; --decode-profile) dprof=1 ;; --long) long=1 ;; --skip-main) skip_main=1 ;;
    *) echo "unknown argument $a" >&2; exit 2 ;; esac
done
[ $prebuilt = 0 ] || [ -z "$ab_base" ] || { echo "--prebuilt with --ab-base: the base tree needs a build there (carry .gpudeps instead)" >&2; exit 2; }
[ -z "$ab_base" ] || [ -f "$ab_base/CMakeLists.txt" ] || { echo "--ab-base $ab_base: no source tree there" >&2; exit 2; }
summary="$out/summary.txt"
: >"$summary"
note() { echo "$*" | tee -a "$summary"; }

{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv; nproc; free -g | head -2
  grep PRETTY /etc/os-release; g++ --version | head -1; nvcc --version | tail -1; cmake --version | head -1; } >"$out/env.txt" 2>&1
note "== $(date -u +%F) on $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)"

# ---- dependencies
deps=/tmp/gptoss-deps
unpack_debs() { mkdir -p "$deps"; local f; for f in "$@"; do [ -f "$f" ] && dpkg -x "$f" "$deps"; done; }  # into $deps
if [ $prebuilt = 1 ]; then  # runtime libraries only
  [ -x .gpubin/gptoss ] || { note "--prebuilt: no .gpubin/gptoss (scripts/gpu-prebuild.sh fills it)"; exit 1; }
  unpack_debs .gpubin/debs/*.deb
  export LD_LIBRARY_PATH="$deps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
elif ! { command -v pkg-config >/dev/null && pkg-config --exists libpcre2-8 libxxhash libzip cpp-httplib && [ -f /usr/include/fmt/core.h ] \
       && [ -d /usr/include/CLI ] && [ -d /usr/include/gtest ] && [ -d /usr/include/nlohmann ]; }; then
  if ls .gpudeps/*.deb >/dev/null 2>&1; then
    unpack_debs .gpudeps/*.deb
    export PATH="$deps/usr/bin:$PATH"
    export PKG_CONFIG_PATH="$deps/usr/lib/x86_64-linux-gnu/pkgconfig:$deps/usr/share/pkgconfig"
    export PKG_CONFIG_SYSROOT_DIR="$deps"
    export CMAKE_PREFIX_PATH="$deps/usr"
    export LD_LIBRARY_PATH="$deps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
    note "deps: unpacked .gpudeps into $deps"
  else
    note "deps: missing and no .gpudeps carried"
  fi
fi

# ---- build
bin=build-gpu
gen=(); command -v ninja >/dev/null && gen=(-G Ninja)
# The binaries built on the dev box: the test binary reads tests/data through the source path it was built with.
use_gpubin() { bin=.gpubin; [ -e /work/main ] || { mkdir -p /work && ln -s "$PWD" /work/main; }; }
if [ $prebuilt = 1 ]; then
  use_gpubin
  note "build: prebuilt .gpubin ($(cat .gpubin/REVISION 2>/dev/null))"
  : >"$out/build.log"
elif cmake -S . -B "$bin" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DGPTOSS_CUDA=ON >"$out/build.log" 2>&1 &&
   cmake --build "$bin" -j16 --target gptoss gptoss_tests gptoss-make-checkpoint bench_cuda_ops >>"$out/build.log" 2>&1; then
  note "build: ok ($bin, built here)"
elif [ -x .gpubin/gptoss_tests ]; then
  note "build: FAILED here (see build.log tail below); using prebuilt .gpubin"
  tail -15 "$out/build.log" | tee -a "$summary"
  use_gpubin
  export LD_LIBRARY_PATH="$PWD/.gpubin/lib:${LD_LIBRARY_PATH:-}"
else
  note "build: FAILED"; tail -30 "$out/build.log" | tee -a "$summary"; exit 1
fi

if [ -n "$ab_base" ]; then  # the base tree builds while the checks below run; waited for before the A/B
  rm -rf build-base  # a warm machine keeps build folders, and the carried tree's timestamps may predate them
  ( cmake -S "$ab_base" -B build-base "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DGPTOSS_CUDA=ON &&
    cmake --build build-base -j8 --target gptoss ) >"$out/build_base.log" 2>&1 &
  base_pid=$!
fi
base_rc=1
wait_base() { [ -z "${base_pid:-}" ] || { wait "$base_pid"; base_rc=$?; base_pid=; }; }  # before timing anything

# check NAME COMMAND...: a PASS/FAIL line (exit status), output appended to e2e.log
check() {
  local name=$1; shift
  if timeout 180 "$@" >>"$out/e2e.log" 2>&1; then note "PASS $name"; else note "FAIL $name (rc=$?, see e2e.log)"; fi
}
# check_stats NAME STATS_LINES COMMAND...: PASS when it exits 0 and prints at least STATS_LINES lines with
# "tokens/s" (the stats line after each answer of generate --prompt and chat); stdin comes from the caller.
check_stats() {
  local name=$1 want=$2; shift 2
  local log=/tmp/gptoss-e2e-one.log
  timeout 180 "$@" >"$log" 2>&1
  local rc=$? got
  got=$(grep -c 'tokens/s' "$log")
  { echo "== $name (rc=$rc)"; cat "$log"; } >>"$out/e2e.log"
  if [ $rc = 0 ] && [ "$got" -ge "$want" ]; then note "PASS $name: $(grep 'tokens/s' "$log" | tr '\n' ' ')"
  else note "FAIL $name (rc=$rc, $got of $want stats lines, see e2e.log)"; fi
}

# One line per run: output and total tokens/s, TTFT and TPOT p50/p99, KV memory.
conc_line() {
  python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print("out %.0f tok/s, total %.0f tok/s, TTFT p50 %.0f p99 %.0f ms, TPOT p50 %.2f p99 %.2f ms, KV %.2f GB, errors %d" % (j["output_tokens_per_s"], j["total_tokens_per_s"], j["ttft_ms_p50"], j["ttft_ms_p99"], j["tpot_ms_p50"], j["tpot_ms_p99"], j["kv_bytes"]/1e9, j["errors"]))' "$1" 2>&1 | head -1
}
batch_checks() {
  note "== continuous batching: bench --concurrency on $ck (KV bf16)"
  local n f
  for n in 1 8 32 64 128 256; do
    f="$out/batch_fixed_$n.json"
    timeout 120 "$bin/gptoss" bench -m "$ck" --device cuda --kv-precision bf16 --concurrency $n --prompt-tokens 512 \
      --gen-tokens 256 --json >"$f" 2>>"$out/bench.err" && note "concurrency $n (512+256): $(conc_line "$f")" ||
      note "FAIL concurrency $n (rc=$?, see bench.err)"
  done
  # The base tree at 8 and 64 in the same call: the ratio of the two builds on this card.
  if [ -n "$ab_base" ] && [ "${base_rc:-1}" = 0 ]; then
    for n in 8 64; do
      f="$out/batch_base_$n.json"
      timeout 120 build-base/gptoss bench -m "$ck" --device cuda --kv-precision bf16 --concurrency $n --prompt-tokens 512 \
        --gen-tokens 256 --json >"$f" 2>>"$out/bench.err" && note "base: concurrency $n (512+256): $(conc_line "$f")" ||
        note "FAIL base concurrency $n (rc=$?, see bench.err)"
    done
  fi
  f="$out/batch_fixed_8_nobatch.json"
  timeout 120 "$bin/gptoss" bench -m "$ck" --device cuda --kv-precision bf16 --concurrency 8 --no-batching \
    --prompt-tokens 512 --gen-tokens 256 --json >"$f" 2>>"$out/bench.err" &&
    note "concurrency 8 without batching (512+256): $(conc_line "$f")" || note "FAIL concurrency 8 --no-batching"
  f="$out/batch_sharegpt.json"
  timeout 150 "$bin/gptoss" bench -m "$ck" --device cuda --kv-precision bf16 --concurrency 128 --workload sharegpt \
    --requests 1000 --json >"$f" 2>>"$out/bench.err" && note "sharegpt-like, 1000 requests, 128 slots: $(conc_line "$f")" ||
    note "FAIL sharegpt-like workload (rc=$?, see bench.err)"
}

# Where a batched step's time goes: nsys over `bench --concurrency 64` (GPU time per kernel, host time per CUDA
# call: launches and syncs), the top lines of each into the summary.
batch_profile() {
  make_20b
  for d in /usr/local/cuda/bin /usr/local/cuda/nsight-systems*/bin /opt/nvidia/nsight-systems/*/bin; do
    [ -d "$d" ] && PATH="$PATH:$d"
  done
  command -v nsys >/dev/null || { note "batch profile: nsys not found"; return; }
  timeout 240 nsys profile -t cuda -o /tmp/gptoss-bprof --force-overwrite true "$bin/gptoss" bench -m "$ck" \
    --device cuda --kv-precision bf16 --concurrency 64 --requests 64 --prompt-tokens 512 --gen-tokens 64 \
    >>"$out/e2e.log" 2>&1 || { note "batch profile: nsys rc=$?"; return; }
  timeout 120 nsys stats -r cuda_gpu_kern_sum,cuda_api_sum -f csv -o /tmp/gptoss-bprof /tmp/gptoss-bprof.nsys-rep \
    >>"$out/e2e.log" 2>&1
  local f
  for f in /tmp/gptoss-bprof_cuda_gpu_kern_sum.csv /tmp/gptoss-bprof_cuda_api_sum.csv; do
    [ -f "$f" ] || { note "batch profile: $f missing"; continue; }
    cp "$f" "$out/"
    note "batch profile (concurrency 64, 512+64): $(basename "$f"), top 14 by total time"
    python3 - "$f" <<'PY' | tee -a "$summary"
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
for r in rows[:14]:
    print("  %5s%%  %10.1f ms  %8s calls  %s" % (r.get("Time (%)", "?"), float(r.get("Total Time (ns)", 0)) / 1e6,
                                              r.get("Instances", r.get("Num Calls", "?")), r.get("Name", "?")[:90]))
PY
  done
}

big_model() {  # the gpt-oss-120b-shaped checkpoint: 36 layers x 128 experts, 65 GB; tmpfs because the disk is 64 GB
  note "== 120b"
  rm -rf /tmp/gptoss-20b /tmp/gptoss-realvocab  # disk and page cache back
  local dir=/dev/shm need=72 avail
  avail=$(df --output=avail -BG "$dir" | tail -1 | tr -dc 0-9)
  if [ "$avail" -lt $need ]; then
    mount -o remount,size=110G /dev/shm >>"$out/e2e.log" 2>&1 ||
      { mkdir -p /mnt/gptoss-big && mount -t tmpfs -o size=110G tmpfs /mnt/gptoss-big >>"$out/e2e.log" 2>&1 && dir=/mnt/gptoss-big; }
    avail=$(df --output=avail -BG "$dir" | tail -1 | tr -dc 0-9)
  fi
  note "120b: tmpfs $dir has ${avail}G free; $(free -g | awk '/Mem:/ {print "RAM " $2 "G total, " $7 "G available"}')"
  [ "$avail" -ge $need ] || { note "FAIL 120b: no tmpfs with ${need}G free (remount and mount both refused, see e2e.log)"; return; }
  local ck=$dir/gptoss-120b t0
  t0=$(date +%s)
  "$bin/gptoss-make-checkpoint" "$ck" --preset 120b >>"$out/e2e.log" 2>&1 || { note "FAIL 120b make-checkpoint (see e2e.log)"; return; }
  note "120b checkpoint: $(du -sh "$ck" | cut -f1) written in $(( $(date +%s) - t0 )) s"
  local smi=/tmp/gptoss-smi.log
  nvidia-smi --query-gpu=memory.used,memory.total --format=csv,noheader,nounits -lms 250 >"$smi" 2>/dev/null &
  local smi_pid=$!
  check "120b verify --device cuda" "$bin/gptoss" verify -m "$ck" --device cuda
  grep -E '^loaded|^forward|logits' "$out/e2e.log" | tail -3 | tee -a "$summary"
  timeout 300 "$bin/gptoss" bench -m "$ck" --device cuda --prompt-tokens 512 --gen-tokens 64 --repeats 3 --json >"$out/bench_120b.json" 2>>"$out/bench.err"
  note "bench 120b (--prompt-tokens 512 --gen-tokens 64 --repeats 3): rc=$? $(head -c 900 "$out/bench_120b.json")"
  kill "$smi_pid" 2>/dev/null; wait "$smi_pid" 2>/dev/null
  note "120b GPU memory used, peak over verify + bench: $(awk -F', ' 'BEGIN {m = 0} $1 > m {m = $1; t = $2} END {print m " of " t " MiB"}' "$smi")"
  tail -5 "$out/bench.err" | tee -a "$summary"
  rm -rf "$ck"
}
ck=/tmp/gptoss-20b
make_20b() {
  [ -f "$ck/config.json" ] && return 0
  local t0
  t0=$(date +%s)
  "$bin/gptoss-make-checkpoint" "$ck" --preset 20b >>"$out/build.log" 2>&1 || { note "make-checkpoint FAILED"; tail "$out/build.log" | tee -a "$summary"; exit 1; }
  note "checkpoint: $(du -sh $ck | cut -f1) written in $(( $(date +%s) - t0 )) s"
}
ncu_on_path() {  # true when ncu can be run (looked for where the CUDA and Nsight installs put it)
  local d
  for d in /usr/local/cuda/bin /usr/local/cuda/nsight-compute* /opt/nvidia/nsight-*/*/bin; do [ -d "$d" ] && PATH="$PATH:$d"; done
  command -v ncu >/dev/null
}
kernel_profile() {  # NAME DESC BENCH_ARGS...: ncu device time + DRAM bytes of every kernel of one bench run -> NAME.txt
  local name=$1 desc=$2; shift 2
  make_20b
  ncu_on_path || { note "$name: ncu not found"; return; }
  local t0
  t0=$(date +%s)
  # --cache-control none --clock-control none: L2 keeps what the previous kernel left, clocks as in a real run.
  timeout 300 ncu --cache-control none --clock-control none --metrics gpu__time_duration.sum,dram__bytes_read.sum \
    --csv --log-file /tmp/gptoss-ncu.csv "$bin/gptoss" bench -m "$ck" --device cuda "$@" >>"$out/e2e.log" 2>&1
  note "$name: ncu rc=$? in $(( $(date +%s) - t0 )) s"
  python3 - /tmp/gptoss-ncu.csv "$out/$name.txt" "$desc" <<'PY' 2>&1 | tee -a "$summary"
import csv, os, sys, collections
rows = [r for r in csv.reader(l for l in open(sys.argv[1]) if l.startswith('"'))] if os.path.exists(sys.argv[1]) else []
if not rows:
    sys.exit(f"{sys.argv[3]}: ncu wrote no kernel rows (timed out or failed: see e2e.log)")
head, rows = rows[0], rows[1:]
ki, mi, ui, vi = (head.index(c) for c in ('Kernel Name', 'Metric Name', 'Metric Unit', 'Metric Value'))
scale = {'nsecond': 1e-3, 'ns': 1e-3, 'usecond': 1.0, 'us': 1.0, 'msecond': 1e3, 'ms': 1e3, 'second': 1e6, 's': 1e6,
         'byte': 1e-6, 'Kbyte': 1e-3, 'Mbyte': 1.0, 'Gbyte': 1e3, 'KB': 1e-3, 'MB': 1.0, 'GB': 1e3, 'B': 1e-6}
us, mb, cnt = collections.Counter(), collections.Counter(), collections.Counter()
for r in rows:  # unknown unit: fail loudly
    name = r[ki].split('(')[0][:80]
    v = float(r[vi].replace(',', '')) * scale[r[ui]]
    if r[mi].startswith('gpu__time'): us[name] += v; cnt[name] += 1
    else: mb[name] += v
all_us = sum(us.values())
with open(sys.argv[2], 'w') as f:
    f.write(f"{sum(cnt.values())} kernels, {all_us/1e3:.3f} ms device time in all ({sys.argv[3]}); DRAM read MB and GB/s per kernel name\n")
    for n, t in us.most_common():
        f.write(f"{t/1e3:9.3f} ms {100*t/all_us:5.1f}% {cnt[n]:6d}x {t/cnt[n]:8.2f} us/call {mb[n]/cnt[n]:8.2f} MB/call {mb[n]/t if t else 0:6.3f} TB/s  {n}\n")
print(''.join(open(sys.argv[2]).readlines()[:24]), end='')
PY
}

main_checks() {
# ---- parity tests (CUDA vs CPU ops, tiny goldens on the GPU)
timeout 200 "$bin/gptoss_tests" --gtest_filter='*Cuda*' >"$out/tests.log" 2>&1
rc=$?
note "tests: rc=$rc, $(grep -c '^\[       OK \]' "$out/tests.log") passed, $(grep -c '^\[  FAILED  \]' "$out/tests.log") failed lines"
grep -E '^cuda |^\[  FAILED|Expected|actual|Which is' "$out/tests.log" | head -60 | tee -a "$summary"
# The CPU fast path's AVX-512 kernels (issue 21): the dev VM has AVX2 only, so they are tested on this host's CPU.
note "cpu isa: $(grep -o -w 'avx512f\|avx512_vnni\|avx512_bf16\|avx2' /proc/cpuinfo | sort -u | tr '\n' ' ')"
timeout 200 "$bin/gptoss_tests" --gtest_filter='CpuFast*:CpuMatmul*:Engine.FastMath*:Batch.FastMath*' >"$out/tests_cpufast.log" 2>&1
note "cpu fast tests: rc=$?, $(grep -c '^\[       OK \]' "$out/tests_cpufast.log") passed, $(grep -c '^\[  SKIPPED \]' "$out/tests_cpufast.log") skipped lines"
grep -E 'NOT TESTED|^\[  FAILED|Expected|actual|fast vs exact' "$out/tests_cpufast.log" | head -30 | tee -a "$summary"

# ---- 20b-shaped checkpoint (random weights, MXFP4 experts) and benchmarks
make_20b
cat "$ck"/*.safetensors >/dev/null  # page cache warm: load time is measured from the page cache
bench() {  # name, args...
  local name=$1; shift
  timeout 150 "$bin/gptoss" bench -m "$ck" --device cuda "$@" --json >"$out/bench_$name.json" 2>>"$out/bench.err"
  note "bench $name ($*): rc=$? $(head -c 900 "$out/bench_$name.json")"
}
# ---- end to end on the 20b-shaped checkpoint (PASS/FAIL lines)
check "verify --device cuda" "$bin/gptoss" verify -m "$ck" --device cuda
check "generate --device cuda --tokens -n 32" "$bin/gptoss" generate -m "$ck" --device cuda --tokens 1,2,3,4,5 -n 32 -t 0
toks=101,2002,30003,4004,555,66,7,88888,999,1234
if "$bin/gptoss" logits -m "$ck" --device cuda --tokens $toks -o /tmp/l_cuda.npy >>"$out/e2e.log" 2>&1 &&
   timeout 300 "$bin/gptoss" logits -m "$ck" --device cpu --cpu-math exact --tokens $toks -o /tmp/l_cpu.npy >>"$out/e2e.log" 2>&1; then
  python3 - <<'PY' 2>&1 | tee -a "$summary"
import numpy as np
a, b = np.load('/tmp/l_cuda.npy').reshape(-1, 201088), np.load('/tmp/l_cpu.npy').reshape(-1, 201088)
rel = max(np.abs(x - y).max() / np.abs(y).max() for x, y in zip(a, b))
agree = int((a.argmax(1) == b.argmax(1)).sum())
ok = rel <= 1e-2 and agree >= int(np.ceil(0.99 * len(b)))
print(f"{'PASS' if ok else 'FAIL'} 20b logits cuda vs cpu ({len(b)} tokens): worst relative error {rel:.3g} (<= 1e-2), top-1 {agree}/{len(b)}")
PY
else
  note "FAIL 20b logits cuda vs cpu (a logits run failed, see e2e.log)"
fi

# ---- end to end with text: real vocabulary (201088) and the real tokenizer, tiny layers
tokj=.gpudeps/tokenizer.json
if [ -f "$tokj" ]; then
  rv=/tmp/gptoss-realvocab
  if [ -f "$rv/config.json" ] || "$bin/gptoss-make-checkpoint" "$rv" --vocab 201088 --layers 2 --hidden 64 --inter 64 --seed 4 >>"$out/e2e.log" 2>&1; then
    check_stats "generate --device cuda --prompt Hello --tokenizer -n 16" 1 \
      "$bin/gptoss" generate -m "$rv" --device cuda --prompt "Hello" --tokenizer "$tokj" -n 16 </dev/null
    printf 'hi\n/reset\nbye\n' | check_stats "chat --device cuda --tokenizer --max-tokens 8 (hi, /reset, bye from a pipe)" 2 \
      "$bin/gptoss" chat -m "$rv" --device cuda --tokenizer "$tokj" --max-tokens 8
  else
    note "FAIL real-vocab checkpoint (make-checkpoint failed, see e2e.log)"
  fi
else
  note "FAIL generate/chat with text: .gpudeps/tokenizer.json not carried"
fi

wait_base
bench short --prompt-tokens 2048 --gen-tokens 128 --repeats 3 --kv-precision bf16
# What each op costs inside the running decode step (each left out in turn; into the summary).
timeout 200 "$bin/gptoss" bench -m "$ck" --device cuda --prompt-tokens 2048 --gen-tokens 128 --kv-precision bf16 \
  --op-costs 2>>"$out/bench.err" | sed -n '/^op costs/,$p' | tee -a "$summary"
timeout 60 "$bin/bench_cuda_ops" 4096 2>&1 | tee -a "$summary"
if [ $quick = 0 ]; then
  bench ctx32k --prompt-tokens 2048 --gen-tokens 64 --context 32768 --max-context 32900 --kv-precision bf16
  timeout 60 "$bin/bench_cuda_ops" 32768 2>&1 | tail -14 | tee -a "$summary"
fi
if [ $profile = 1 ]; then  # device time per kernel (no launch gaps), one decode step's ops at context 4096
  for d in /usr/local/cuda/bin /usr/local/cuda/nsight-systems*/bin /usr/local/cuda/nsight-compute* /opt/nvidia/nsight-*/*/bin; do
    [ -d "$d" ] && PATH="$PATH:$d"
  done
  if command -v nsys >/dev/null; then
    timeout 240 nsys profile -o /tmp/gptoss-prof --force-overwrite true "$bin/bench_cuda_ops" 4096 >/dev/null 2>&1
    timeout 120 nsys stats -r cuda_gpu_kern_sum -f csv /tmp/gptoss-prof.nsys-rep >"$out/profile.txt" 2>&1
    note "profile (nsys): $(wc -l <"$out/profile.txt") lines in profile.txt"
  elif command -v ncu >/dev/null; then
    BENCH_ITERS=3 timeout 300 ncu --metrics gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,sm__warps_active.avg.pct_of_peak_sustained_active \
      "$bin/bench_cuda_ops" 4096 >"$out/profile.txt" 2>&1
    note "profile (ncu): $(wc -l <"$out/profile.txt") lines in profile.txt"
  else
    note "profile: neither nsys nor ncu found"
  fi
fi
}  # main_checks

long_prompt() {  # rows compared as max|a-b| / max|b|; top-1 = argmax agreement
  local ids
  ids=$(python3 -c "import random; r=random.Random(7); print(','.join(str(r.randrange(200000)) for _ in range(2048)))")
  "$bin/gptoss" logits -m "$ck" --device cuda --max-batch 1 --tokens "$ids" -o /tmp/long_g1.npy >>"$out/e2e.log" 2>&1 &&
  "$bin/gptoss" logits -m "$ck" --device cuda --max-batch 2048 --tokens "$ids" -o /tmp/long_g2048.npy >>"$out/e2e.log" 2>&1 &&
  "$bin/gptoss" logits -m "$ck" --device cpu --cpu-math exact --max-batch 512 --tokens "$ids" -o /tmp/long_c512.npy >>"$out/e2e.log" 2>&1 &&
  "$bin/gptoss" logits -m "$ck" --device cpu --cpu-math exact --max-batch 64 --tokens "$ids" -o /tmp/long_c64.npy >>"$out/e2e.log" 2>&1 ||
    { note "FAIL long prompt (a logits run failed, see e2e.log)"; return; }
  # The same on 2 layers of the 20b geometry (less depth to amplify differences), KV f32 and bf16.
  local ck2=/tmp/gptoss-20b-2l
  [ -f "$ck2/config.json" ] || "$bin/gptoss-make-checkpoint" "$ck2" --preset 20b --layers 2 --vocab 4096 --seed 3 >>"$out/e2e.log" 2>&1
  local ids2
  ids2=$(python3 -c "import random; r=random.Random(8); print(','.join(str(r.randrange(4096)) for _ in range(2048)))")
  for kv in f32 bf16; do
    "$bin/gptoss" logits -m "$ck2" --device cuda --max-batch 1 --kv-precision $kv --tokens "$ids2" -o /tmp/long_s1_$kv.npy >>"$out/e2e.log" 2>&1 &&
    "$bin/gptoss" logits -m "$ck2" --device cuda --max-batch 2048 --kv-precision $kv --tokens "$ids2" -o /tmp/long_s2048_$kv.npy >>"$out/e2e.log" 2>&1 &&
    "$bin/gptoss" logits -m "$ck2" --device cpu --cpu-math exact --max-batch 512 --kv-precision $kv --tokens "$ids2" -o /tmp/long_sc_$kv.npy >>"$out/e2e.log" 2>&1 ||
      { note "FAIL long prompt, 2 layers (a logits run failed, see e2e.log)"; return; }
  done
  python3 - <<'PY' 2>&1 | tee -a "$summary"
import numpy as np
L = {k: np.load(f'/tmp/long_{k}.npy', mmap_mode='r') for k in ['g1', 'g2048', 'c512', 'c64']}
def cmp(a, b, what):
    x, c = L[a], L[b]
    r = np.array([float(np.abs(np.asarray(x[i]) - np.asarray(c[i])).max() / np.abs(np.asarray(c[i])).max()) for i in range(len(c))])
    top = int(sum(int(np.asarray(x[i]).argmax() == np.asarray(c[i]).argmax()) for i in range(len(c))))
    bad = np.nonzero(r > 1e-2)[0]
    print(f"long prompt 2048, {what}: median {np.median(r):.2g}, rows > 1e-2: {len(bad)} (first {bad[0] if len(bad) else '-'}), worst {r.max():.3g}, top-1 {top}/{len(c)}")
cmp('c64', 'c512', 'cpu chunks 64 vs cpu chunks 512 (baseline)')
cmp('g1', 'c512', 'cuda token by token vs cpu')
cmp('g2048', 'c512', 'cuda one chunk of 2048 (bf16 hi/lo GEMMs) vs cpu')
for kv in ['f32', 'bf16']:
    for k in ['s1', 's2048', 'sc']: L[f'{k}_{kv}'] = np.load(f'/tmp/long_{k}_{kv}.npy', mmap_mode='r')
    cmp(f's1_{kv}', f'sc_{kv}', f'2 layers, KV {kv}: cuda token by token vs cpu')
    cmp(f's2048_{kv}', f'sc_{kv}', f'2 layers, KV {kv}: cuda one chunk of 2048 vs cpu')
PY
  rm -f /tmp/long_*.npy
}
serve_checks() {  # gptoss serve on the card: requests by curl, then one and 16 streaming clients
  note "== serve"
  [ -f .gpudeps/tokenizer.json ] || { note "FAIL serve: .gpudeps/tokenizer.json not carried"; return; }
  cp .gpudeps/tokenizer.json "$ck/tokenizer.json"
  local port=8199 url=http://127.0.0.1:8199 log=$out/serve.log
  # The reference: gptoss bench at the load generator's lengths (its ~10-token prompt, 256 generated).
  timeout 150 "$bin/gptoss" bench -m "$ck" --device cuda --prompt-tokens 16 --gen-tokens 256 --repeats 3 \
    --kv-precision bf16 --json >"$out/bench_serve_ref.json" 2>>"$out/bench.err"
  local ref
  ref=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['decode_tokens_per_s'])" "$out/bench_serve_ref.json" 2>/dev/null)
  note "bench serve_ref (--prompt-tokens 16 --gen-tokens 256): decode ${ref:-?} tokens/s"
  for parallel in 1 4; do
    "$bin/gptoss" serve -m "$ck" --device cuda --port $port --parallel $parallel --kv-precision bf16 \
      --max-context 4096 >>"$log" 2>&1 &
    local pid=$! up=0
    for _ in $(seq 120); do curl -sf $url/health >/dev/null 2>&1 && { up=1; break; }; sleep 0.5; done
    [ $up = 1 ] || { note "FAIL serve --parallel $parallel did not come up (serve.log)"; kill $pid 2>/dev/null; return; }
    if [ $parallel = 1 ]; then
      local body='{"model":"m","messages":[{"role":"user","content":"Hello"}],"max_tokens":16,"temperature":0}'
      local tools='{"model":"m","messages":[{"role":"user","content":"Weather in Paris?"}],"max_tokens":16,
        "tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object",
        "properties":{"city":{"type":"string"}},"required":["city"]}}}]}'
      for req in "chat:$body" "tools:$tools"; do
        local name=${req%%:*} rc
        rc=$(curl -s -o /tmp/serve_resp.json -w '%{http_code}' $url/v1/chat/completions -H 'Content-Type: application/json' -d "${req#*:}")
        { echo "== $name"; cat /tmp/serve_resp.json; echo; } >>"$log"
        [ "$rc" = 200 ] && note "PASS serve $name: $(head -c 300 /tmp/serve_resp.json)" || note "FAIL serve $name (HTTP $rc)"
      done
      timeout 300 python3 bench/serve_load.py --base-url $url/v1 --clients 1 --requests 3 --max-tokens 256 \
        --temperature 0 --warmup --json >"$out/serve_1.json" 2>>"$log"
      python3 - "$out/serve_1.json" "${ref:-0}" <<'PY' 2>&1 | tee -a "$summary"
import json, sys
r = json.load(open(sys.argv[1])); ref = float(sys.argv[2])
got = r["decode_tokens_per_s_median"]
ratio = got / ref if ref else 0
print(f"{'PASS' if ratio >= 0.97 else 'FAIL'} serve, 1 streaming client: {got:.1f} tokens/s against "
      f"bench {ref:.1f} = {ratio:.3f} (target >= 0.97); TTFT p50 {r['ttft_p50_s'] * 1e3:.1f} ms, "
      f"{r['output_tokens']} tokens in {r['requests']} requests, {r['errors']} errors")
PY
    else
      timeout 300 python3 bench/serve_load.py --base-url $url/v1 --clients 16 --requests 2 --max-tokens 128 \
        --json >"$out/serve_16.json" 2>>"$log"
      note "serve --parallel 4, 16 clients: $(head -c 600 "$out/serve_16.json")"
    fi
    kill -TERM $pid; wait $pid; local rc=$?
    [ $rc = 0 ] && note "PASS serve --parallel $parallel exits 0 on SIGTERM" || note "FAIL serve SIGTERM exit $rc"
  done
}
[ $only_big = 1 ] || [ $skip_main = 1 ] || main_checks
if [ -n "$ab_base" ]; then
  wait_base
  if [ $base_rc = 0 ]; then
    make_20b
    note "A/B: $ab_base (build-base) vs this tree ($bin), decode interleaved"
    A=(-m "$ck" --device cuda --prompt-tokens 2048 --gen-tokens 128 --kv-precision bf16)
    bench/ab_env.sh - BIN "build-base/gptoss $bin/gptoss" 3 -- "${A[@]}" 2>&1 | grep decode | tee -a "$summary"
    [ "${AB_LONG:-1}" = 0 ] ||  # AB_LONG=0: context 2048 only (a change that leaves the attention alone)
      bench/ab_env.sh - BIN "build-base/gptoss $bin/gptoss" 2 -- "${A[@]}" --context 32768 --max-context 32900 2>&1 |
        grep decode | sed 's/^/32k /' | tee -a "$summary"
  else
    note "A/B: the base tree did not build"; tail -15 "$out/build_base.log" | tee -a "$summary"
  fi
fi
[ $serve = 1 ] && { make_20b; serve_checks; }
[ $batch = 1 ] && { make_20b; batch_checks; }
[ $bprof = 1 ] && batch_profile
[ $long = 1 ] && { make_20b; long_prompt; }
# 64 requests of 1 + 8 tokens: 8 steps of 64 rows, as batched decode runs them (at short context; 64 + 16 tokens
# timed out in 300 s under ncu).
[ $bkprof = 1 ] && kernel_profile batch_kprofile "bench --concurrency 64: 64 requests of 1 prompt + 8 output tokens" \
  --kv-precision bf16 --concurrency 64 --requests 64 --prompt-tokens 1 --gen-tokens 8
if [ $gncu = 1 ]; then  # the grouped MoE kernel's bounds: gate_up and down of the third 64-row step on
  make_20b
  if ncu_on_path; then
    timeout 300 ncu --cache-control none --clock-control none --kernel-name regex:moe_grouped --launch-skip 96 \
      --launch-count 4 --section SpeedOfLight --section Occupancy --section WarpStateStats --section MemoryWorkloadAnalysis \
      "$bin/gptoss" bench -m "$ck" --device cuda --kv-precision bf16 --concurrency 64 --requests 64 --prompt-tokens 1 \
      --gen-tokens 8 >"$out/grouped_ncu.txt" 2>&1
    note "grouped-ncu: rc=$?; $(grep -cE '^ +[A-Za-z]' "$out/grouped_ncu.txt") report lines (grouped_ncu.txt); throughput lines:"
    grep -E 'f16mma_mxfp4w_moe_grouped|Memory Throughput|DRAM Throughput|Compute \(SM\) Throughput|Achieved Occupancy|Stall' \
      "$out/grouped_ncu.txt" | head -40 | tee -a "$summary"
  else
    note "grouped-ncu: ncu not found"
  fi
fi
[ $pprof = 1 ] && kernel_profile prefill_profile "prefill of 512 tokens + 1 decode step" --prompt-tokens 512 --gen-tokens 1 --kv-precision bf16
[ $dprof = 1 ] && kernel_profile decode_profile "prompt of 1 token + 4 decode steps" --prompt-tokens 1 --gen-tokens 4 --repeats 1 --kv-precision bf16
[ $big = 1 ] && big_model
# At most 8 files come back from the GPU machine: summary.txt as it is, everything else in one archive.
( cd "$out" && ls | grep -v -e '^summary.txt$' -e '^logs.tar.gz$' >/tmp/gpu-check-files && [ -s /tmp/gpu-check-files ] &&
  tar czf logs.tar.gz -T /tmp/gpu-check-files && xargs rm -f </tmp/gpu-check-files )
cat "$summary"
exit 0
