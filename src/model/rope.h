// YaRN rotary embedding parameters (docs/MODEL.md §4.4): per-pair inverse frequencies with
// "NTK-by-parts" blending and the attention scaling (mscale) applied to both cos and sin.
#pragma once

#include <cmath>
#include <vector>

#include "format/config.h"

namespace gptoss {

struct RopeParams {
  std::vector<float> inv_freq;  // [d/2], float32 as transformers computes them
  float mscale = 1.0f;
};

inline RopeParams yarn_rope_params(const ModelConfig& c) {
  const int d = c.head_dim;
  const double base = c.rope_theta, factor = c.rope_factor, omax = c.rope_original_max_position;
  auto corr_dim = [&](double nrot) { return (d * std::log(omax / (nrot * 2 * M_PI))) / (2 * std::log(base)); };
  double low = corr_dim(c.rope_beta_fast), high = corr_dim(c.rope_beta_slow);
  if (c.rope_truncate) {
    low = std::floor(low);
    high = std::ceil(high);
  }
  low = std::max(low, 0.0);
  high = std::min(high, double(d - 1));
  if (low == high) high += 0.001;
  RopeParams p;
  p.inv_freq.resize(size_t(d / 2));
  for (int i = 0; i < d / 2; ++i) {
    // transformers: pos_freqs = base ** (arange(0, d, 2) / d) in float32; extrapolation 1/pos_freqs,
    // interpolation 1/(factor*pos_freqs), blended by the linear ramp over [low, high].
    const float pos_freq = std::pow(float(base), float(2 * i) / float(d));
    const float extra = 1.0f / pos_freq, inter = 1.0f / (float(factor) * pos_freq);
    const float ramp = float(std::clamp((double(i) - low) / (high - low), 0.0, 1.0));
    const float extra_factor = 1.0f - ramp;
    p.inv_freq[size_t(i)] = inter * (1.0f - extra_factor) + extra * extra_factor;
  }
  p.mscale = float(0.1 * std::log(factor) + 1.0);
  return p;
}

}  // namespace gptoss
