#!/usr/bin/env bash
# Installs what gptoss needs on Debian 12, builds it (build/gptoss), and runs its main job: convert a
# model and verify the result. The model is models/gpt-oss-20b if it exists (a Hugging Face download),
# otherwise a small random demo checkpoint with the real o200k_harmony vocabulary and tokenizer, which
# `build/gptoss chat --model build/demo-model-gptoss` can talk to (it writes random text).
#
#   scripts/setup.sh                  # deps + build + convert + verify
#   scripts/setup.sh --cuda           # the same, building the CUDA backend even where no GPU is visible
#   scripts/setup.sh --tokenizer F    # the demo model's tokenizer from a local o200k_base.tiktoken
#   scripts/setup.sh --deps-only      # only the packages (used by CI and scripts/test.sh)
#
# The CUDA backend is compiled only when `nvidia-smi -L` lists a GPU (or --cuda asks for it): its kernels
# take most of the build time. scripts/test.sh always compiles it where nvcc is installed.
set -euo pipefail

APT_PACKAGES=(build-essential cmake pkg-config git clang nlohmann-json3-dev libcli11-dev libfmt-dev libpcre2-dev
  libxxhash-dev libzip-dev libcpp-httplib-dev libgtest-dev libgmock-dev libbenchmark-dev python3 python3-venv python3-pip curl ca-certificates)

# The demo model's tokenizer: o200k_harmony's BPE ranks from OpenAI's public encodings (what tiktoken and
# openai-harmony download), checked against the SHA-256 openai-harmony pins. With the o200k_harmony special
# tokens built into the loader, every one of the model's 201,088 ids decodes.
TIKTOKEN_URL=https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken
TIKTOKEN_SHA256=446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d

deps_only=0 cuda=auto tokenizer=""
while (($#)); do
  case "$1" in
    --deps-only) deps_only=1 ;;
    --cuda) cuda=on ;;
    --tokenizer) tokenizer=$(realpath -- "${2:?--tokenizer needs a file}"); shift ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
cd "$(dirname "$0")/.."

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

# apt-get waiting up to 10 minutes for another apt/dpkg process (unattended-upgrades, cloud-init) to finish:
# DPkg::Lock::Timeout covers dpkg's locks; `update` also takes the package lists' lock, which apt does not
# wait for, hence the retry.
apt_get() {
  local deadline=$((SECONDS + 600)) err
  err=$(mktemp)
  until DEBIAN_FRONTEND=noninteractive $sudo apt-get -o DPkg::Lock::Timeout=600 "$@" 2>"$err"; do
    if ! grep -q "Could not get lock\|Unable to lock\|Unable to acquire" "$err" || ((SECONDS >= deadline)); then
      cat "$err" >&2
      rm -f "$err"
      return 1
    fi
    echo "   (another apt process holds the lock: waiting)"
    sleep 5
  done
  rm -f "$err"
}

install_deps() {
  local missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    echo "== installing Debian packages: ${missing[*]}"
    apt_get update -qq
    apt_get install -y -qq "${missing[@]}" >/dev/null
  fi
}

build() {
  local cuda_flag=-DGPTOSS_CUDA=OFF
  if [ "$cuda" = on ]; then
    cuda_flag=-DGPTOSS_CUDA=ON
    echo "== building (Release) into build/, with the CUDA backend (--cuda)"
  elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    cuda_flag=-DGPTOSS_CUDA=AUTO
    echo "== building (Release) into build/, with the CUDA backend where nvcc is found (a GPU is present)"
  else
    echo "== building (Release) into build/, CPU only: no NVIDIA GPU found (scripts/setup.sh --cuda builds the CUDA"
    echo "   backend anyway)"
  fi
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release "$cuda_flag" >/dev/null
  cmake --build build -j"$(nproc)"
}

# Puts o200k_base.tiktoken into $1: from --tokenizer, ../shared/data (the project's workplace), or downloaded;
# its SHA-256 is checked in every case.
fetch_tokenizer() {
  local dst=$1/o200k_base.tiktoken src=$tokenizer
  [ -n "$src" ] || [ ! -f ../shared/data/o200k_base.tiktoken ] || src=../shared/data/o200k_base.tiktoken
  if [ -n "$src" ]; then
    cp "$src" "$dst.tmp"
  else
    echo "== downloading the o200k_harmony tokenizer ranks from $TIKTOKEN_URL"
    curl -fsSL --retry 3 -o "$dst.tmp" "$TIKTOKEN_URL"
  fi
  if ! echo "$TIKTOKEN_SHA256  $dst.tmp" | sha256sum -c --quiet - >/dev/null 2>&1; then
    rm -f "$dst.tmp"
    echo "setup.sh: ${src:-$TIKTOKEN_URL} is not o200k_base.tiktoken (SHA-256 differs from $TIKTOKEN_SHA256)" >&2
    return 1
  fi
  mv "$dst.tmp" "$dst"
}

install_deps
[ "$deps_only" = 1 ] && exit 0
build

src=models/gpt-oss-20b
if [ -d "$src" ]; then
  echo "== converting $src (Hugging Face download)"
else
  src=build/demo-model
  echo "== models/gpt-oss-20b not found: using a small random demo checkpoint in $src instead"
  echo "   (download openai/gpt-oss-20b into models/gpt-oss-20b to convert the real model)"
  if [ ! -f "$src/config.json" ] || [ ! -f "$src/o200k_base.tiktoken" ]; then
    rm -rf "$src"
    build/gptoss-make-checkpoint "$src" --preset demo --seed 1 2>/dev/null
    fetch_tokenizer "$src"
  fi
fi
out="${src}-gptoss"
build/gptoss convert --model "$src" --output "$out" --force
build/gptoss verify --model "$out"
if [ "$src" = build/demo-model ]; then
  cp "$src/o200k_base.tiktoken" "$out/"  # convert carries tokenizer.json, not the .tiktoken ranks
  echo "== the demo model completes a text (random weights, so random text):"
  build/gptoss generate --model "$out" --prompt "Hello!" -n 16 --seed 1 --raw
  echo
  echo "   chat with it: build/gptoss chat --model $out"
fi
