#include "backend/cpu/q16.h"

#include <cmath>

namespace gptoss::cpu {

Q16Act Q16Buffer::quantize(const float* x, int64_t T, int64_t cols) {
  const int64_t nb = cols / kQ16Block;
  q_.resize(size_t(T * nb * kQ16Block));
  d_.resize(size_t(T * nb));
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t b = 0; b < nb; ++b) {
      const float* src = x + t * cols + b * kQ16Block;
      const int64_t i = t * nb + b;
      float amax = 0.0f;
      for (int j = 0; j < kQ16Block; ++j) amax = std::fmax(amax, std::fabs(src[j]));
      const float inv = amax > 0.0f ? 32767.0f / amax : 0.0f;
      int16_t* q = q_.data() + i * kQ16Block;
      for (int j = 0; j < kQ16Block; ++j) {
        const float v = std::nearbyint(src[j] * inv);  // |v| <= 32767 up to the rounding of inv
        q[(j % 2) * 16 + j / 2] = int16_t(v > 32767.0f ? 32767.0f : v < -32767.0f ? -32767.0f : v);
      }
      d_[size_t(i)] = amax / 32767.0f;
    }
  }
  return Q16Act{q_.data(), d_.data(), nb};
}

}  // namespace gptoss::cpu
