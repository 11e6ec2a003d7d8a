// The sum of a ymm's 8 floats, for the kernels on ymm registers (matmul_avx2.cpp, mxfp4_q16_tile.h). Include
// only from a file compiled for AVX or better; internal linkage (an unnamed namespace), so each file keeps its
// own copy compiled with its own flags.
#pragma once

#include <immintrin.h>

namespace gptoss::cpu {
namespace {

inline float hsum_ymm(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

}  // namespace
}  // namespace gptoss::cpu
