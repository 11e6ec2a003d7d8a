// Token sampling on the host: temperature, top-k, top-p (nucleus). Linear in the vocabulary (expected) for
// every setting: a full sort of 201,088 candidates per token would cost ~10-25 ms, several GPU decode steps,
// so top-k is a selection and top-p a weighted selection; nothing is sorted but a final handful.
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

  // Candidates ranked by logit, ties: lower id first (a strict total order, so "the top n" is one set).
  auto above = [](const Candidate& a, const Candidate& b) { return a.logit != b.logit ? a.logit > b.logit : a.id < b.id; };
  cand_.resize(size_t(V));
  for (int32_t i = 0; i < V; ++i) cand_[size_t(i)] = {logits[size_t(i)], 0.0f, i};
  if (cut_k) {  // the top k, by selection (a heap for small k)
    const auto k = long(opts_.top_k);
    if (k <= 1024)
      std::partial_sort(cand_.begin(), cand_.begin() + k, cand_.end(), above);
    else
      std::nth_element(cand_.begin(), cand_.begin() + k, cand_.end(), above);
    cand_.resize(size_t(k));
  }
  double total = 0;
  for (auto& c : cand_) total += double(c.w = weight(c.logit));
  size_t keep = cand_.size();
  if (cut_p) {
    // The nucleus: the fewest top-ranked candidates whose weight reaches top_p of the total, found by a
    // weighted quickselect instead of a sort (flat logits put most of the vocabulary in the nucleus, and
    // sorting 201,088 candidates took ~25 ms). Invariant: cand_[0, lo) rank above cand_[lo, hi), all of
    // them are in the nucleus and weigh acc < need; the nucleus ends in (lo, hi]; cand_[hi, n) are out.
    const double need = std::max(double(opts_.top_p) * total, 1e-300);  // top_p 0: the top candidate alone
    size_t lo = 0, hi = cand_.size();
    double acc = 0;
    for (;;) {
      if (hi - lo <= 64) {  // small: sort and count
        std::sort(cand_.begin() + long(lo), cand_.begin() + long(hi), above);
        keep = lo;
        while (keep < hi && acc < need) acc += double(cand_[keep++].w);
        break;
      }
      // Pivot: median of three (so at least one candidate of the range ranks below it), moved to hi - 1;
      // then A = the candidates above it and the pivot itself, at [lo, lo + a).
      size_t i0 = lo, i1 = lo + (hi - lo) / 2, i2 = hi - 1;
      if (above(cand_[i1], cand_[i0])) std::swap(i0, i1);
      if (above(cand_[i2], cand_[i1])) std::swap(i1, i2);
      if (above(cand_[i1], cand_[i0])) std::swap(i0, i1);
      std::swap(cand_[i1], cand_[hi - 1]);
      const Candidate pivot = cand_[hi - 1];
      const auto first = cand_.begin() + long(lo);
      const size_t u = size_t(std::partition(first, cand_.begin() + long(hi - 1),
                                             [&](const Candidate& x) { return above(x, pivot); }) - first);
      std::swap(cand_[lo + u], cand_[hi - 1]);
      const size_t a = u + 1;
      double mass = 0;
      for (size_t i = lo; i < lo + a; ++i) mass += double(cand_[i].w);
      if (acc + mass >= need) {
        hi = lo + a;  // the nucleus ends in A (and A < the range: the pivot is not its lowest)
      } else {
        acc += mass;  // all of A is in
        lo += a;
      }
    }
    keep = std::max<size_t>(keep, 1);
    total = 0;
    for (size_t i = 0; i < keep; ++i) total += double(cand_[i].w);
  }
  // The inverse CDF over the kept candidates, in the order they now hold (fixed by the logits: the draw
  // stays deterministic for a seed).
  double r = uniform() * total;
  for (size_t i = 0; i < keep; ++i) {
    r -= double(cand_[i].w);
    if (r <= 0) return cand_[i].id;
  }
  return cand_[keep - 1].id;
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
