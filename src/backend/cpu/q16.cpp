#include "backend/cpu/q16.h"

#include <cmath>

namespace gptoss::cpu {

Q16Act Q16Buffer::quantize(const float* x, int64_t T, int64_t cols) {
  const int64_t nb = cols / kQ16Block, dstride = (nb + 1) / 2 * 2, stride = dstride * kQ16Block;
  q_.assign(size_t(T * stride), 0);  // the pad block of an odd nb stays zero
  d_.assign(size_t(T * dstride), 0.0f);
  for (int64_t t = 0; t < T; ++t) {
    int16_t* q = q_.data() + t * stride;
    for (int64_t b = 0; b < nb; ++b) {
      const float* src = x + t * cols + b * kQ16Block;
      // Plain comparisons and the 1.5 x 2^23 rounding trick (round to nearest even for |v| < 2^22, as
      // nearbyint in the default rounding mode) instead of fmax / nearbyint calls: the loops vectorise
      // (the calls kept both loops scalar; bench/cpu_notes.md). A NaN in x gives an unspecified code.
      float amax = 0.0f;
      for (int j = 0; j < kQ16Block; ++j) {
        const float a = std::fabs(src[j]);
        amax = a > amax ? a : amax;
      }
      const float inv = amax > 0.0f ? 32767.0f / amax : 0.0f;
      float v[kQ16Block];
      for (int j = 0; j < kQ16Block; ++j) {
        const float r = (src[j] * inv + 12582912.0f) - 12582912.0f;  // |r| <= 32767 up to the rounding of inv
        v[j] = r > 32767.0f ? 32767.0f : r < -32767.0f ? -32767.0f : r;
      }
      for (int j = 0; j < kQ16Block; ++j) q[q16_pos(b, j)] = int16_t(v[j]);
      d_[size_t(t * dstride + b)] = amax / 32767.0f;
    }
  }
  return Q16Act{q_.data(), d_.data(), nb, stride, dstride};
}

}  // namespace gptoss::cpu
