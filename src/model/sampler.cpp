#include <algorithm>
#include <cmath>

#include "gptoss/gptoss.h"

namespace gptoss {

int32_t Sampler::sample(std::span<const float> logits) {
  const int32_t V = int32_t(logits.size());
  if (opts_.temperature <= 0.0f) return int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
  // Candidates sorted by logit (ties: lower id first) — top-k cut, softmax at temperature, top-p cut.
  cand_.clear();
  for (int32_t i = 0; i < V; ++i) cand_.emplace_back(logits[size_t(i)], i);
  auto by_logit = [](const auto& a, const auto& b) { return a.first != b.first ? a.first > b.first : a.second < b.second; };
  size_t k = cand_.size();
  if (opts_.top_k > 0 && size_t(opts_.top_k) < k) {
    k = size_t(opts_.top_k);
    std::partial_sort(cand_.begin(), cand_.begin() + long(k), cand_.end(), by_logit);
    cand_.resize(k);
  } else {
    std::sort(cand_.begin(), cand_.end(), by_logit);
  }
  const float m = cand_[0].first;
  double total = 0;
  for (auto& [l, id] : cand_) {
    l = float(std::exp(double(l - m) / double(opts_.temperature)));
    total += l;
  }
  if (opts_.top_p < 1.0f) {
    double acc = 0;
    size_t keep = 0;
    while (keep < cand_.size()) {
      acc += cand_[keep++].first / total;
      if (acc >= double(opts_.top_p)) break;
    }
    cand_.resize(keep);
    total = 0;
    for (auto& c : cand_) total += c.first;
  }
  double r = std::uniform_real_distribution<double>(0.0, total)(rng_);
  for (const auto& [p, id] : cand_) {
    r -= p;
    if (r <= 0) return id;
  }
  return cand_.back().second;
}

}  // namespace gptoss
