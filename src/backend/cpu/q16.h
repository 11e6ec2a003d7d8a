// Activations quantized to int16 for the fast MXFP4 kernels (--cpu-math fast), in blocks of 32 columns
// that line up with the MXFP4 weight blocks: x[c] ~= d[b] * q[c] with d[b] = max|x| over the block / 32767
// and q = round-to-nearest(x / d) in [-32767, 32767] (relative error per value <= 1.5e-5 of the block's
// largest). int8 blocks (llama.cpp's Q8_0 scale, max / 127) in these kernels put the tiny goldens' logits
// 0.04-0.6 off exact (worst row), past the 1e-2 the fast path allows; int16 costs about one more instruction
// per block and stays within 1e-4.
#pragma once

#include <cstdint>
#include <vector>

namespace gptoss::cpu {

inline constexpr int kQ16Block = 32;  // columns per block (= one MXFP4 block)

// Blocks are stored in pairs (b = 2p, 2p + 1), 64 int16 a pair, so that a kernel can decode both blocks of
// a weight row with 256-bit shuffles: one vpshufb turns the 32 low nibbles of the two blocks into
// [even columns of block 2p | even columns of block 2p+1] (one 128-bit lane each), the high nibbles
// likewise the odd columns, and unpacking bytes to int16 keeps the lanes apart. So a pair holds four
// vectors of 16 int16, each [8 values of block 2p | the same 8 of block 2p+1]:
//   vector 0: even columns 0, 2, .., 14    vector 1: odd columns 1, 3, .., 15
//   vector 2: even columns 16, 18, .., 30  vector 3: odd columns 17, 19, .., 31
// A row with an odd number of blocks ends in a half-empty pair whose second block is all zeros (scale 0).
// Position of column j (0..31) of block b within a token's row:
inline constexpr int64_t q16_pos(int64_t b, int j) {
  const int k = j / 2;  // the column's index among its block's even or odd columns
  return (b / 2) * 64 + ((k / 8) * 2 + j % 2) * 16 + (b % 2) * 8 + k % 8;
}

// Quantized rows of T tokens, `nb` blocks each. Token t's values start at q + t * stride (stride = 32 x nb
// rounded up to whole pairs, q16_pos within it), its scales at d + t * dstride (d[b] for block b; the pad
// block of an odd nb has scale 0).
struct Q16Act {
  const int16_t* q = nullptr;
  const float* d = nullptr;
  int64_t nb = 0;
  int64_t stride = 0, dstride = 0;
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
