#!/usr/bin/env bash
# Runs the whole test suite: C++ unit tests (Release, and again under ASan+UBSan), the Python tests
# that compare against the references (numpy float64, transformers goldens, tiktoken, Hugging Face
# tokenizers, openai-harmony, Orbax), and a short libFuzzer run of every fuzz target.
# Needs the packages of scripts/setup.sh --deps-only; Python packages go into build/venv.
# GPU tests skip with a notice when no GPU is present; tests that need ../shared skip when it is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=$(nproc)
FUZZ_SECONDS=${FUZZ_SECONDS:-20}

echo "== build (Release)"
# AUTO: the CUDA backend is compiled wherever nvcc is installed, GPU or not (all CUDA code must keep
# compiling); scripts/setup.sh may have configured build/ without it.
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DGPTOSS_CUDA=AUTO >/dev/null
cmake --build build -j"$JOBS"
# Benchmarks are not tests, but their code (CUDA included: bench_stream, bench_cuda_ops) has to keep compiling.
cmake --build build -j"$JOBS" --target benchmarks

echo "== C++ unit tests"
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "NOTICE: no NVIDIA GPU here: the CUDA tests (Cuda*) are compiled but skipped;"
  echo "        run scripts/gpu-check.sh on a GPU machine for them."
fi
ctest --test-dir build --output-on-failure -j"$JOBS"

echo "== C++ unit tests under AddressSanitizer + UndefinedBehaviorSanitizer"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DGPTOSS_SANITIZE=ON -DGPTOSS_CUDA=OFF >/dev/null
cmake --build build-asan -j"$JOBS" --target gptoss_tests
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ctest --test-dir build-asan --output-on-failure -j"$JOBS"

echo "== Python reference tests"
if [ ! -x build/venv/bin/python ]; then
  python3 -m venv build/venv
fi
build/venv/bin/python -m pip install -q --disable-pip-version-check -r tests/requirements.txt
# Only the venv's packages: no PYTHONPATH, no user site, its bin/ first on PATH (the system python3 of a
# fresh machine has no numpy; tests run Python only as sys.executable).
PYTHONPATH="" PYTHONNOUSERSITE=1 PATH="$PWD/build/venv/bin:$PATH" GPTOSS_BIN="$PWD/build/gptoss" \
  build/venv/bin/python -m pytest -q -rs tests/py

echo "== fuzzing (${FUZZ_SECONDS}s per target)"
CC=clang CXX=clang++ cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DGPTOSS_FUZZ=ON -DGPTOSS_CUDA=OFF \
  -DGPTOSS_TESTS=OFF >/dev/null
cmake --build build-fuzz -j"$JOBS" --target fuzz_targets
for f in build-fuzz/fuzz_*; do
  name=$(basename "$f")
  # Seeds: fuzz/corpus/<dir> whose name starts the target's (fuzz_safetensors_header -> safetensors).
  # New inputs go to a scratch corpus (first argument), never into the repository.
  work=build-fuzz/corpus-$name
  mkdir -p "$work"
  seeds=()
  for d in fuzz/corpus/*/; do
    d=${d%/}
    case "${name#fuzz_}" in "$(basename "$d")"*) seeds+=("$d") ;; esac
  done
  echo "-- $name"
  GPTOSS_FUZZ_TOKENIZER="$PWD/../shared/data/o200k_base.tiktoken" "$f" -max_total_time="$FUZZ_SECONDS" -print_final_stats=0 "$work" "${seeds[@]}" \
    2>&1 | tail -n 2
done
echo "== all tests passed"
