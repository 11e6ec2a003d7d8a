#!/usr/bin/env bash
# Installs what gptoss needs on Debian 12, builds it (build/gptoss), and runs its main job: convert a
# model and verify the result. The model is models/gpt-oss-20b if it exists (a Hugging Face download),
# otherwise a small random checkpoint generated here (said so on the console).
#
#   scripts/setup.sh              # deps + build + convert + verify
#   scripts/setup.sh --deps-only  # only the packages (used by CI and scripts/test.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(build-essential cmake pkg-config git clang nlohmann-json3-dev libcli11-dev libfmt-dev libpcre2-dev
  libxxhash-dev libcpp-httplib-dev libgtest-dev libgmock-dev libbenchmark-dev python3 python3-venv python3-pip)

install_deps() {
  local missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    echo "== installing Debian packages: ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

build() {
  echo "== building (Release) into build/"
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build build -j"$(nproc)"
}

install_deps
[ "${1:-}" = "--deps-only" ] && exit 0
build

src=models/gpt-oss-20b
if [ -d "$src" ]; then
  echo "== converting $src (Hugging Face download)"
else
  src=build/demo-model
  echo "== models/gpt-oss-20b not found: using a small random checkpoint in $src instead"
  echo "   (download openai/gpt-oss-20b into models/gpt-oss-20b to convert the real model)"
  [ -d "$src" ] || build/gptoss-make-checkpoint "$src" --preset tiny --seed 1
fi
out="${src}-gptoss"
build/gptoss convert --model-path "$src" --output "$out" --force
build/gptoss verify --model "$out"
