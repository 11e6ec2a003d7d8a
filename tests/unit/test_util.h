// Helpers shared by the engine tests: the committed golden checkpoints and the error measure.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

namespace gptoss::test {

// tests/data/golden/NAME: a tiny checkpoint, tokens.txt and transformers' float32 logits.
inline std::string golden_dir(const std::string& name) {
  return std::string(GPTOSS_SOURCE_DIR) + "/tests/data/golden/" + name;
}

// "1,2,3" in a file -> ids.
inline std::vector<int32_t> read_tokens(const std::string& path) {
  std::ifstream f(path);
  std::vector<int32_t> out;
  std::string tok;
  while (std::getline(f, tok, ',')) out.push_back(std::stoi(tok));
  return out;
}

// max |a - b| / max |b|: scale-free and robust to near-zero entries; infinite if a has a non-finite value.
inline double rel_err(const float* a, const float* b, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    num = std::max(num, std::fabs(double(a[i]) - double(b[i])));
    den = std::max(den, std::fabs(double(b[i])));
  }
  return den > 0 ? num / den : num;
}

}  // namespace gptoss::test
