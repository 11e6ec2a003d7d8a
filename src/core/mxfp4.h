// MXFP4 (OCP microscaling FP4) as stored in gpt-oss checkpoints (docs/MODEL.md §3):
//   blocks [..., rows, cols/32, 16] u8: 32 E2M1 codes per block, two per byte, LOW nibble first
//   scales [..., rows, cols/32]     u8: E8M0 exponent, value factor 2^(s - 127)
// Every decoded value is exactly representable in bf16 and f32 for s >= 1 (all real checkpoints).
#pragma once

#include <cmath>
#include <cstdint>

namespace gptoss {

inline constexpr int kMxfp4BlockElems = 32;  // values per block
inline constexpr int kMxfp4BlockBytes = 16;  // bytes per block

inline constexpr float kFp4Values[16] = {+0.0f, +0.5f, +1.0f, +1.5f, +2.0f, +3.0f, +4.0f, +6.0f,
                                         -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

// 2^(s-127) built directly from the exponent bits (exact; s=0 gives a subnormal-free 2^-127 via ldexp).
inline float mxfp4_scale(uint8_t s) { return std::ldexp(1.0f, int(s) - 127); }

// Decode one row of `cols` values (cols % 32 == 0) into f32.
inline void mxfp4_decode_row(const uint8_t* blocks, const uint8_t* scales, int cols, float* out) {
  for (int b = 0; b < cols / kMxfp4BlockElems; ++b) {
    const float f = mxfp4_scale(scales[b]);
    const uint8_t* q = blocks + b * kMxfp4BlockBytes;
    for (int j = 0; j < kMxfp4BlockBytes; ++j) {
      out[b * 32 + 2 * j] = kFp4Values[q[j] & 0xF] * f;
      out[b * 32 + 2 * j + 1] = kFp4Values[q[j] >> 4] * f;
    }
  }
}

}  // namespace gptoss
