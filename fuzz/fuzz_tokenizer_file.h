// The real o200k_harmony tokenizer for the fuzz targets, loaded once: from the file named by the
// environment variable GPTOSS_FUZZ_TOKENIZER if set (scripts/test.sh sets it), else from
// ../shared/data/o200k_base.tiktoken relative to the repository, found from the executable's location
// (BUILD_DIR/fuzz_x -> BUILD_DIR/../../shared). Exits with a message when it cannot be loaded.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "tokenizer/tokenizer.h"

inline gptoss::Tokenizer fuzz_load_tokenizer(const char* target) {
  std::string path;
  if (const char* env = std::getenv("GPTOSS_FUZZ_TOKENIZER")) {
    path = env;
  } else {
    std::error_code ec;
    const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
    path = (exe.parent_path() / ".." / ".." / "shared" / "data" / "o200k_base.tiktoken").string();
  }
  auto t = gptoss::Tokenizer::from_file(path);
  if (!t.ok()) {
    std::fprintf(stderr, "%s: %s (set GPTOSS_FUZZ_TOKENIZER)\n", target, t.status().message().c_str());
    std::exit(1);
  }
  return *t;
}
