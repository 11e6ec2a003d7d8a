// The MXFP4 x int16 row kernel, written once over a `Dot` traits type and instantiated per ISA
// (mxfp4_q16_avx2.cpp: vpmaddwd + vpaddd; mxfp4_q16_avx512.cpp: AVX512-VNNI vpdpwssd on ymm).
// Include only from a file compiled for AVX2 or better. Everything here has internal linkage (an unnamed
// namespace), so each ISA file keeps its own copy compiled with its own flags.
//
// One 32-column block: the weights' 16 bytes become two ymm of 16 int16 (2 * E2M1 by vpshufb on a table,
// sign-extended): low nibbles = even columns, high nibbles = odd columns, matching Q16Act's block order.
// Dot(w_even, w_odd, x) gives 8 int32 partial sums of 2 * sum(w q), exact. A tile of R rows x TT tokens
// keeps R*TT float accumulators and adds float(partial sums) * (2^(s-128) * d) per block (the half scale
// undoes the table's factor 2).
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "backend/cpu/q16.h"
#include "core/matrix.h"
#include "core/mxfp4.h"

namespace gptoss::cpu::q16tile {
namespace {

struct HalfScales {
  float v[256];
  HalfScales() {
    for (int s = 0; s < 256; ++s) v[s] = 0.5f * mxfp4_scale(uint8_t(s));
  }
};

// The block's even (low nibble) and odd (high nibble) columns as int16 2 * E2M1.
inline void load_weights(const uint8_t* block, __m256i& even, __m256i& odd) {
  const __m128i lut = _mm_setr_epi8(0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12);
  const __m128i nib = _mm_set1_epi8(0x0F);
  const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(block));
  even = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(lut, _mm_and_si128(q, nib)));
  odd = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(lut, _mm_and_si128(_mm_srli_epi16(q, 4), nib)));
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Lines requested ahead on each row's stream: the hardware prefetcher alone keeps too few DRAM requests in
// flight for a 2-core matvec (the exact AVX-512 kernel measured 43% -> 85% of bandwidth with this).
inline constexpr int64_t kPrefetchBlocks = 512;

template <class Dot, int R, int TT>
inline void tile(const uint8_t* blocks, const uint8_t* scales, int64_t nb, const HalfScales& hs, int64_t r,
                 const Q16Act& x, int64_t t0, const float* bias, float* y, int64_t ystride) {
  __m256 acc[R][TT];
  for (int i = 0; i < R; ++i)
    for (int t = 0; t < TT; ++t) acc[i][t] = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    __m256i we[R], wo[R];
    float dw[R];
    for (int i = 0; i < R; ++i) {
      const int64_t blk = (r + i) * nb + b;
      if ((b & 3) == 0) _mm_prefetch(reinterpret_cast<const char*>(blocks + (blk + kPrefetchBlocks) * 16), _MM_HINT_T0);
      load_weights(blocks + blk * 16, we[i], wo[i]);
      dw[i] = hs.v[scales[blk]];
    }
    for (int t = 0; t < TT; ++t) {
      const int64_t xb = (t0 + t) * nb + b;
      const int16_t* xq = x.q + xb * kQ16Block;
      const __m256i xe = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq));
      const __m256i xo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + 16));
      const float dx = x.d[xb];
      for (int i = 0; i < R; ++i) {
        const __m256i p = Dot::dot(we[i], wo[i], xe, xo);
        acc[i][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(dw[i] * dx), acc[i][t]);
      }
    }
  }
  for (int i = 0; i < R; ++i)
    for (int t = 0; t < TT; ++t) y[(t0 + t) * ystride + r + i] = hsum(acc[i][t]) + (bias ? bias[r + i] : 0.0f);
}

template <class Dot, int TT>
void tile_rows(const uint8_t* blocks, const uint8_t* scales, int64_t nb, const HalfScales& hs, int64_t r0,
               int64_t r1, const Q16Act& x, int64_t t0, const float* bias, float* y, int64_t ystride) {
  int64_t r = r0;
  for (; r + 4 <= r1; r += 4) tile<Dot, 4, TT>(blocks, scales, nb, hs, r, x, t0, bias, y, ystride);
  for (; r < r1; ++r) tile<Dot, 1, TT>(blocks, scales, nb, hs, r, x, t0, bias, y, ystride);
}

template <class Dot>
void rows(const MatrixRef& W, const Q16Act& x, int64_t T, const float* bias, float* y, int64_t r0, int64_t r1) {
  static const HalfScales hs;
  const auto* blocks = static_cast<const uint8_t*>(W.data);
  const int64_t nb = W.cols / kQ16Block;
  // Rows in groups of 16 (their blocks stay in L1/L2 while the tokens pass), tokens 2 at a time.
  constexpr int64_t kRowGroup = 16;
  for (int64_t rb = r0; rb < r1; rb += kRowGroup) {
    const int64_t re = std::min(r1, rb + kRowGroup);
    int64_t t = 0;
    for (; t + 2 <= T; t += 2) tile_rows<Dot, 2>(blocks, W.scales, nb, hs, rb, re, x, t, bias, y, W.rows);
    if (t < T) tile_rows<Dot, 1>(blocks, W.scales, nb, hs, rb, re, x, t, bias, y, W.rows);
  }
}

}  // namespace
}  // namespace gptoss::cpu::q16tile
