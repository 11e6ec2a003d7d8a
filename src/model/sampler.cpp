// Token sampling on the host: temperature, top-k, top-p (nucleus). Linear in the vocabulary for the
// default settings: a full sort of 201,088 candidates per token would cost ~10 ms, several times a GPU
// decode step, so candidates are only ordered where a cut needs an order, and only as far as it needs.
#include <algorithm>
#include <cmath>

#include "gptoss/gptoss.h"

namespace gptoss {

namespace {
float max_of(std::span<const float> x) {  // 8 independent chains (std::max_element measured 5x slower)
  float m8[8] = {x[0], x[0], x[0], x[0], x[0], x[0], x[0], x[0]};
  for (size_t i = 0; i < x.size(); ++i) m8[i % 8] = x[i] > m8[i % 8] ? x[i] : m8[i % 8];
  return *std::max_element(m8, m8 + 8);
}
}  // namespace

int32_t Sampler::sample(std::span<const float> logits) {
  const int32_t V = int32_t(logits.size());
  if (greedy()) return int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
  const bool cut_k = opts_.top_k > 0 && opts_.top_k < V, cut_p = opts_.top_p < 1.0f;
  if (!cut_k && !cut_p) return sample_at(logits, uniform());  // no truncation: one draw in id order
  const float m = max_of(logits);
  const float inv_t = 1.0f / opts_.temperature;
  auto weight = [&](float l) { return std::exp((l - m) * inv_t); };  // float exp: ample for a draw

  // Candidates ordered by logit (ties: lower id first) as far as the cuts need.
  auto by_logit = [](const auto& a, const auto& b) { return a.first != b.first ? a.first > b.first : a.second < b.second; };
  cand_.clear();
  for (int32_t i = 0; i < V; ++i) cand_.emplace_back(logits[size_t(i)], i);
  size_t sorted = 0;
  auto sort_prefix = [&](size_t n) {  // cand_[0, n): the largest n, sorted
    n = std::min(n, cand_.size());
    if (n <= sorted) return;
    if (n <= 1024) {  // a heap of n: cheap rejects
      std::partial_sort(cand_.begin(), cand_.begin() + long(n), cand_.end(), by_logit);
    } else {  // selection + sort: O(V + n log n)
      if (n < cand_.size()) std::nth_element(cand_.begin(), cand_.begin() + long(n), cand_.end(), by_logit);
      std::sort(cand_.begin(), cand_.begin() + long(n), by_logit);
    }
    sorted = n;
  };
  if (cut_k) {
    sort_prefix(size_t(opts_.top_k));
    cand_.resize(size_t(opts_.top_k));
  }
  double total = 0;
  for (auto& c : cand_) total += double(weight(c.first));
  size_t keep = cand_.size();
  if (cut_p) {
    // The nucleus: the fewest leading candidates whose weight reaches top_p of the total. Sort a prefix,
    // and a 4x longer one while the prefix holds too little (usually the first 256 suffice).
    const double need = double(opts_.top_p) * total;
    for (size_t n = 256;; n *= 4) {
      sort_prefix(n);
      double acc = 0;
      keep = 0;
      while (keep < sorted && acc < need) acc += double(weight(cand_[keep++].first));
      if (acc >= need || sorted == cand_.size()) break;
    }
    total = 0;
    for (size_t i = 0; i < keep; ++i) total += double(weight(cand_[i].first));
  }
  double r = uniform() * total;
  for (size_t i = 0; i < keep; ++i) {
    r -= double(weight(cand_[i].first));
    if (r <= 0) return cand_[i].second;
  }
  return cand_[keep - 1].second;
}

int32_t Sampler::sample_at(std::span<const float> logits, double u) {
  const int32_t V = int32_t(logits.size());
  const float m = max_of(logits);
  const float inv_t = 1.0f / opts_.temperature;
  w_.resize(size_t(V));
  float* w = w_.data();
  double total = 0;
  for (int32_t i = 0; i < V; ++i) total += double(w[i] = std::exp((logits[size_t(i)] - m) * inv_t));
  double r = u * total;
  int32_t last = 0;
  for (int32_t i = 0; i < V; ++i) {
    if (w[i] > 0) last = i;
    r -= double(w[i]);
    if (r <= 0) return i;
  }
  return last;  // rounding left r > 0: the last token with any weight
}

}  // namespace gptoss
