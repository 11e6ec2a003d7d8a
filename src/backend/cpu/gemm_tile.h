// The many-token (prefill) kernel of the fast family, written once over a vector traits type `V`
// (matmul_avx2.cpp: 8 x f32 ymm; matmul_avx512.cpp: 16 x f32 zmm; V needs T, kLanes, zero, load, fma, hsum). Include only from a file compiled for
// AVX2 or better; everything here has internal linkage, so each ISA file keeps its own copy.
//
// y[t, r] = sum_c W[r, c] x[t, c] + bias[r], W row-major f32 / bf16 / MXFP4 with cols % 16 == 0:
//   for each group of up to 64 tokens (their x, a K-block at a time, stays in L2)
//     for each 4 rows: decode the rows once to f32 (exact: bf16 by a shift, MXFP4 by table x 2^(s-128))
//       for each K-block of 1024 columns (4 rows x 4 KiB stay in L1)
//         for each 3 tokens: 12 vector accumulators, 4 weight loads + 3 x loads per 12 FMAs;
//         the block's sums are added to y (the first block writes bias + sum).
// f32 accumulation throughout; only the order of the sums differs from the exact kernels.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "backend/cpu/mxfp4_scale_table.h"
#include "core/matrix.h"
#include "core/mxfp4.h"

namespace gptoss::cpu::gemmtile {
namespace {

constexpr int kRows = 4;             // rows decoded together
constexpr int kTokens = 3;           // tokens per register tile
constexpr int64_t kTokenGroup = 64;  // tokens sharing one decode of the rows
constexpr int64_t kColBlock = 1024;  // columns per L1 block

// Row r of W as f32 [cols] into out (AVX2 code: every x86 ISA of this family has it).
inline void decode_row(const MatrixRef& W, int64_t r, float* out, const Mxfp4ScaleTable& hs) {
  const int64_t cols = W.cols;
  if (W.type == WeightType::F32) {
    std::memcpy(out, static_cast<const float*>(W.data) + r * cols, size_t(cols) * sizeof(float));
  } else if (W.type == WeightType::BF16) {
    const uint16_t* p = static_cast<const uint16_t*>(W.data) + r * cols;
    for (int64_t c = 0; c < cols; c += 8) {
      const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + c));
      _mm256_storeu_ps(out + c, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)));
    }
  } else {
    // 2 x E2M1 as int8; the half scale undoes the factor 2 (both exact).
    const __m128i lut = _mm_setr_epi8(0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12);
    const __m128i nib = _mm_set1_epi8(0x0F);
    const int64_t nb = cols / kMxfp4BlockElems;
    const uint8_t* blocks = static_cast<const uint8_t*>(W.data) + r * nb * kMxfp4BlockBytes;
    const uint8_t* scales = W.scales + r * nb;
    for (int64_t b = 0; b < nb; ++b) {
      const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blocks + b * kMxfp4BlockBytes));
      const __m128i lo = _mm_shuffle_epi8(lut, _mm_and_si128(q, nib));                     // even columns
      const __m128i hi = _mm_shuffle_epi8(lut, _mm_and_si128(_mm_srli_epi16(q, 4), nib));  // odd columns
      const __m128i first = _mm_unpacklo_epi8(lo, hi), second = _mm_unpackhi_epi8(lo, hi);
      const __m256 s = _mm256_set1_ps(hs.v[scales[b]]);
      float* o = out + b * kMxfp4BlockElems;
      _mm256_storeu_ps(o, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(first)), s));
      _mm256_storeu_ps(o + 8, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(first, 8))), s));
      _mm256_storeu_ps(o + 16, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(second)), s));
      _mm256_storeu_ps(o + 24, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(second, 8))), s));
    }
  }
}

// R rows (decoded, stride ws) x TT tokens (stride xs) over columns [c0, c1); adds the sums to y, or writes
// bias + sums when `first`.
template <class V, int R, int TT>
inline void tile(const float* w, int64_t ws, const float* x, int64_t xs, int64_t c0, int64_t c1, bool first,
                 const float* bias, float* y, int64_t ystride) {
  typename V::T acc[R][TT];
  for (int i = 0; i < R; ++i)
    for (int t = 0; t < TT; ++t) acc[i][t] = V::zero();
  for (int64_t c = c0; c < c1; c += V::kLanes) {
    typename V::T xv[TT];
    for (int t = 0; t < TT; ++t) xv[t] = V::load(x + t * xs + c);
    for (int i = 0; i < R; ++i) {
      const typename V::T wv = V::load(w + i * ws + c);
      for (int t = 0; t < TT; ++t) acc[i][t] = V::fma(wv, xv[t], acc[i][t]);
    }
  }
  for (int t = 0; t < TT; ++t)
    for (int i = 0; i < R; ++i) {
      float& out = y[t * ystride + i];
      const float s = V::hsum(acc[i][t]);
      out = first ? s + (bias ? bias[i] : 0.0f) : out + s;
    }
}

template <class V, int R>
void token_tiles(const float* w, int64_t ws, const float* x, int64_t xs, int64_t n, int64_t c0, int64_t c1,
                 bool first, const float* bias, float* y, int64_t ystride) {
  int64_t t = 0;
  for (; t + kTokens <= n; t += kTokens)
    tile<V, R, kTokens>(w, ws, x + t * xs, xs, c0, c1, first, bias, y + t * ystride, ystride);
  if (n - t == 2) tile<V, R, 2>(w, ws, x + t * xs, xs, c0, c1, first, bias, y + t * ystride, ystride);
  if (n - t == 1) tile<V, R, 1>(w, ws, x + t * xs, xs, c0, c1, first, bias, y + t * ystride, ystride);
}

template <class V>
void rows(const MatrixRef& W, const float* x, int64_t T, const float* bias, float* y, int64_t r0, int64_t r1) {
  static const Mxfp4ScaleTable hs(0.5f);  // decode_row's E2M1 table is doubled
  const int64_t K = W.cols;
  thread_local std::vector<float> buf;
  buf.resize(size_t(kRows * K));
  for (int64_t g0 = 0; g0 < T; g0 += kTokenGroup) {
    const int64_t gn = std::min(kTokenGroup, T - g0);
    const float* xg = x + g0 * K;
    float* yg = y + g0 * W.rows;
    for (int64_t r = r0; r < r1; r += kRows) {
      const int nr = int(std::min<int64_t>(kRows, r1 - r));
      for (int i = 0; i < nr; ++i) decode_row(W, r + i, buf.data() + i * K, hs);
      const float* b = bias ? bias + r : nullptr;
      for (int64_t c0 = 0; c0 < K; c0 += kColBlock) {
        const int64_t c1 = std::min(K, c0 + kColBlock);
        const bool first = c0 == 0;
        switch (nr) {
          case 4: token_tiles<V, 4>(buf.data(), K, xg, K, gn, c0, c1, first, b, yg + r, W.rows); break;
          case 3: token_tiles<V, 3>(buf.data(), K, xg, K, gn, c0, c1, first, b, yg + r, W.rows); break;
          case 2: token_tiles<V, 2>(buf.data(), K, xg, K, gn, c0, c1, first, b, yg + r, W.rows); break;
          default: token_tiles<V, 1>(buf.data(), K, xg, K, gn, c0, c1, first, b, yg + r, W.rows); break;
        }
      }
    }
  }
}

}  // namespace
}  // namespace gptoss::cpu::gemmtile
