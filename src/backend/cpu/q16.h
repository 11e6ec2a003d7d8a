// Activations quantized to int16 for the fast MXFP4 kernels (--cpu-math fast), in blocks of 32 columns
// that line up with the MXFP4 weight blocks: x[c] ~= d[b] * q[c] with d[b] = max|x| over the block / 32767
// and q = round-to-nearest(x / d) in [-32767, 32767] (relative error per value <= 1.5e-5 of the block's
// largest). int8 blocks (llama.cpp's Q8_0 scale, max / 127) in these kernels put the tiny goldens' logits
// 0.04-0.6 off exact (worst row), past the 1e-2 the fast path allows; int16 costs about one more instruction
// per block and stays within 1e-4.
// The kernels multiply 2 * E2M1 (an exact integer in -12..12) by q with vpmaddwd: 2 * 12 * 32767 per pair,
// two pairs per int32 lane, far from overflow.
#pragma once

#include <cstdint>
#include <vector>

namespace gptoss::cpu {

inline constexpr int kQ16Block = 32;  // columns per block (= one MXFP4 block)

// Quantized rows of T tokens, `nb` blocks each. Per token t and block b:
//   q + (t * nb + b) * 32: the block's even columns 0, 2, .., 30, then its odd columns 1, 3, .., 31
//                          (the order of an MXFP4 block's low nibbles, then its high nibbles)
//   d + t * nb + b:        the block's scale
struct Q16Act {
  const int16_t* q = nullptr;
  const float* d = nullptr;
  int64_t nb = 0;
};

// Storage for Q16Act, grown on demand.
class Q16Buffer {
 public:
  // x: f32 [T, cols], cols % 32 == 0.
  Q16Act quantize(const float* x, int64_t T, int64_t cols);

 private:
  std::vector<int16_t> q_;
  std::vector<float> d_;
};

}  // namespace gptoss::cpu
