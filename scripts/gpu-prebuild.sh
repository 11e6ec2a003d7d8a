#!/usr/bin/env bash
# Fills .gpubin/ for `scripts/gpu-check.sh --prebuilt`: the CUDA build of this working tree made here (nvcc of the
# same CUDA 13.0 as the GPU machine's) and the Debian runtime libraries the binaries need beyond the GPU machine's
# system (fmt, pcre2, xxhash, libzip, cpp-httplib), so a device call spends no device time on building.
# Stays under the device tool's carry limit (64 MiB in all): stripped binaries, runtime packages only.
#   usage: scripts/gpu-prebuild.sh [BUILD_DIR]   (default build-cuda; configured here if it is not)
set -euo pipefail
cd "$(dirname "$0")/.."
b=${1:-build-cuda}
[ -f "$b/CMakeCache.txt" ] || cmake -S . -B "$b" -DCMAKE_BUILD_TYPE=Release -DGPTOSS_CUDA=ON >/dev/null
cmake --build "$b" -j"$(nproc)" --target gptoss gptoss_tests gptoss-make-checkpoint bench_cuda_ops
rm -rf .gpubin && mkdir -p .gpubin/debs
cp "$b/gptoss" "$b/gptoss_tests" "$b/gptoss-make-checkpoint" "$b/bench_cuda_ops" "$b/libgptoss_cuda.so" .gpubin/
strip .gpubin/gptoss .gpubin/gptoss_tests .gpubin/gptoss-make-checkpoint .gpubin/bench_cuda_ops
(cd .gpubin/debs && apt-get download libfmt9 libpcre2-8-0 libxxhash0 libzip4 libcpp-httplib0.11 >/dev/null 2>&1)
git describe --always --dirty >.gpubin/REVISION
echo "$(du -sh .gpubin | cut -f1) in .gpubin ($(cat .gpubin/REVISION)); carry [\".gpubin\"] with scripts/gpu-check.sh --prebuilt"
