// AVX2 + FMA kernels: the AVX-512 design (see matmul_avx512.cpp) on 8-lane registers.
//   bf16: 16 values = one 32-byte load; (v << 16) = even elements, (v & 0xFFFF0000) = odd ones.
//   MXFP4: vpshufb looks the nibbles up as int8 (2 x the E2M1 value), sign-extended and converted to f32,
//          then multiplied by 2^(s-128) (the block scale, halved for the doubled table; exact).
// A 32-column segment is 4 ymm of weights against 4 ymm of x deinterleaved like the AVX-512 path
// (even elements first, then odd); tiles are 4 rows x up to 2 tokens (8 accumulators of 16 ymm).
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "backend/cpu/matmul_kernels.h"
#include "core/dtype.h"
#include "core/mxfp4.h"

namespace gptoss::cpu {
namespace {

constexpr int kSeg = 32;

struct HalfScaleTable {
  float v[256];
  HalfScaleTable() {
    for (int s = 0; s < 256; ++s) v[s] = 0.5f * mxfp4_scale(uint8_t(s));
  }
};
const HalfScaleTable kHalfScales;

// Weights of one 32-column segment as 4 x 8 f32 in the deinterleaved order of prepared x:
// w[0] = even cols 0..14, w[1] = even 16..30, w[2] = odd 1..15, w[3] = odd 17..31 (f32: plain order).
struct F32Rows {
  const float* base;
  int64_t cols;
  static constexpr bool kDeinterleaved = false;
  void segment(int64_t r, int64_t s, __m256* w) const {
    const float* p = base + r * cols + s * kSeg;
    for (int k = 0; k < 4; ++k) w[k] = _mm256_loadu_ps(p + 8 * k);
  }
  void tail(int64_t r, int64_t s, int n, __m256* w) const {
    alignas(32) float buf[kSeg] = {};
    std::memcpy(buf, base + r * cols + s * kSeg, size_t(n) * sizeof(float));
    for (int k = 0; k < 4; ++k) w[k] = _mm256_load_ps(buf + 8 * k);
  }
};

struct Bf16Rows {
  const uint16_t* base;
  int64_t cols;
  static constexpr bool kDeinterleaved = true;
  static void split(const uint16_t* p, __m256* w) {
    const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 16));
    const __m256i hi = _mm256_set1_epi32(int(0xFFFF0000u));
    w[0] = _mm256_castsi256_ps(_mm256_slli_epi32(a, 16));
    w[1] = _mm256_castsi256_ps(_mm256_slli_epi32(b, 16));
    w[2] = _mm256_castsi256_ps(_mm256_and_si256(a, hi));
    w[3] = _mm256_castsi256_ps(_mm256_and_si256(b, hi));
  }
  void segment(int64_t r, int64_t s, __m256* w) const { split(base + r * cols + s * kSeg, w); }
  void tail(int64_t r, int64_t s, int n, __m256* w) const {
    alignas(32) uint16_t buf[kSeg] = {};
    std::memcpy(buf, base + r * cols + s * kSeg, size_t(n) * sizeof(uint16_t));
    split(buf, w);
  }
};

struct Mxfp4Rows {
  const uint8_t* blocks;
  const uint8_t* scales;
  int64_t nseg;
  static constexpr bool kDeinterleaved = true;
  void segment(int64_t r, int64_t s, __m256* w) const {
    const int64_t blk = r * nseg + s;
    // 2 x E2M1 as int8: 0, 1, 2, 3, 4, 6, 8, 12, then the negatives.
    const __m128i lut = _mm_setr_epi8(0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12);
    const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blocks + blk * 16));
    const __m128i nib = _mm_set1_epi8(0x0F);
    const __m128i lo = _mm_shuffle_epi8(lut, _mm_and_si128(q, nib));
    const __m128i hi = _mm_shuffle_epi8(lut, _mm_and_si128(_mm_srli_epi16(q, 4), nib));
    const __m256 scale = _mm256_set1_ps(kHalfScales.v[scales[blk]]);
    w[0] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo)), scale);
    w[1] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8))), scale);
    w[2] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi)), scale);
    w[3] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8))), scale);
  }
  void tail(int64_t, int64_t, int, __m256* w) const {  // cols % 32 == 0: never called
    for (int k = 0; k < 4; ++k) w[k] = _mm256_setzero_ps();
  }
};

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

template <int R, int TT, class Rows>
inline void tile(const Rows& w, int64_t r, int64_t nfull, int tail_n, const float* xp, int64_t xs,
                 const float* bias, float* y, int64_t ystride) {
  __m256 acc[R][TT];
  for (int i = 0; i < R; ++i)
    for (int t = 0; t < TT; ++t) acc[i][t] = _mm256_setzero_ps();
  for (int64_t s = 0; s <= nfull; ++s) {
    if (s == nfull && !tail_n) break;
    for (int i = 0; i < R; ++i) {
      __m256 wv[4];
      if (s == nfull) {
        w.tail(r + i, s, tail_n, wv);
      } else {
        w.segment(r + i, s, wv);
      }
      for (int t = 0; t < TT; ++t) {
        const float* xt = xp + t * xs + s * kSeg;
        for (int k = 0; k < 4; ++k) acc[i][t] = _mm256_fmadd_ps(wv[k], _mm256_loadu_ps(xt + 8 * k), acc[i][t]);
      }
    }
  }
  for (int i = 0; i < R; ++i)
    for (int t = 0; t < TT; ++t) y[t * ystride + r + i] = hsum(acc[i][t]) + (bias ? bias[r + i] : 0.0f);
}

template <int TT, class Rows>
void tile_rows(const Rows& w, int64_t r0, int64_t r1, int64_t nfull, int tail_n, const float* xp, int64_t xs,
               const float* bias, float* y, int64_t ystride) {
  int64_t r = r0;
  for (; r + 4 <= r1; r += 4) tile<4, TT>(w, r, nfull, tail_n, xp, xs, bias, y, ystride);
  for (; r < r1; ++r) tile<1, TT>(w, r, nfull, tail_n, xp, xs, bias, y, ystride);
}

float* prepare_x(const float* x, int64_t tokens, int64_t cols, bool deinterleave, int64_t* stride) {
  thread_local std::vector<float> buf;
  const int64_t nseg = (cols + kSeg - 1) / kSeg;
  const int64_t xs = nseg * kSeg;
  if (buf.size() < size_t(tokens * xs)) buf.resize(size_t(tokens * xs));
  for (int64_t t = 0; t < tokens; ++t) {
    const float* src = x + t * cols;
    float* dst = buf.data() + t * xs;
    std::fill(dst, dst + xs, 0.0f);
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t s = c / kSeg, j = c % kSeg;
      dst[deinterleave ? s * kSeg + (j % 2) * 16 + j / 2 : c] = src[c];
    }
  }
  *stride = xs;
  return buf.data();
}

template <class Rows>
void rows_kernel(const Rows& w, const MatrixRef& W, const float* x, int64_t T, const float* bias, float* y,
                 int64_t r0, int64_t r1) {
  const int64_t nfull = W.cols / kSeg;
  const int tail_n = int(W.cols % kSeg);
  const int64_t xs_est = (nfull + (tail_n ? 1 : 0)) * kSeg;
  const int64_t group = std::max<int64_t>(2, (int64_t(512) * 1024 / 4 / xs_est) / 2 * 2);
  for (int64_t g0 = 0; g0 < T; g0 += group) {
    const int64_t gn = std::min(group, T - g0);
    int64_t xs;
    const float* xp = prepare_x(x + g0 * W.cols, gn, W.cols, Rows::kDeinterleaved, &xs);
    float* yg = y + g0 * W.rows;
    for (int64_t rb = r0; rb < r1; rb += 4) {
      const int64_t re = std::min(r1, rb + 4);
      int64_t t = 0;
      for (; t + 2 <= gn; t += 2)
        tile_rows<2>(w, rb, re, nfull, tail_n, xp + t * xs, xs, bias, yg + t * W.rows, W.rows);
      if (t < gn) tile_rows<1>(w, rb, re, nfull, tail_n, xp + t * xs, xs, bias, yg + t * W.rows, W.rows);
    }
  }
}

// Dense [cols, rows] storage (axpy form), as in matmul_avx512.cpp: y[t, r0:r1] += x[t, c] * W[c, r0:r1],
// four columns per pass over the output slice, accumulated over c in order.
template <class Load>
void transposed_kernel(Load load, const MatrixRef& W, const float* x, int64_t T, const float* bias, float* y,
                       int64_t r0, int64_t r1) {
  constexpr int kCols = 4;
  for (int64_t t = 0; t < T; ++t) {
    float* yt = y + t * W.rows;
    const float* xt = x + t * W.cols;
    std::fill(yt + r0, yt + r1, 0.0f);
    for (int64_t c0 = 0; c0 < W.cols; c0 += kCols) {
      const int nc = int(std::min<int64_t>(kCols, W.cols - c0));
      __m256 xv[kCols];
      for (int k = 0; k < kCols; ++k) xv[k] = _mm256_set1_ps(k < nc ? xt[c0 + k] : 0.0f);
      int64_t r = r0;
      for (; r + 8 <= r1; r += 8) {
        __m256 acc = _mm256_loadu_ps(yt + r);
        for (int k = 0; k < nc; ++k) acc = _mm256_fmadd_ps(load((c0 + k) * W.rows + r), xv[k], acc);
        _mm256_storeu_ps(yt + r, acc);
      }
      for (; r < r1; ++r)
        for (int k = 0; k < nc; ++k) {
          const int64_t i = (c0 + k) * W.rows + r;
          const float wv = W.type == WeightType::F32 ? static_cast<const float*>(W.data)[i]
                                                     : bf16_to_f32(static_cast<const uint16_t*>(W.data)[i]);
          yt[r] = std::fma(wv, xt[c0 + k], yt[r]);
        }
    }
    if (bias)
      for (int64_t r = r0; r < r1; ++r) yt[r] += bias[r];
  }
}

}  // namespace

void matmul_rows_avx2(const MatrixRef& W, const float* x, int64_t T, const float* bias, float* y, int64_t r0,
                      int64_t r1) {
  if (W.transposed && W.type == WeightType::F32) {
    const float* base = static_cast<const float*>(W.data);
    transposed_kernel([base](int64_t i) { return _mm256_loadu_ps(base + i); }, W, x, T, bias, y, r0, r1);
  } else if (W.transposed && W.type == WeightType::BF16) {
    const uint16_t* base = static_cast<const uint16_t*>(W.data);
    transposed_kernel(
        [base](int64_t i) {
          const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(base + i));
          return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
        },
        W, x, T, bias, y, r0, r1);
  } else if (W.type == WeightType::F32) {
    rows_kernel(F32Rows{static_cast<const float*>(W.data), W.cols}, W, x, T, bias, y, r0, r1);
  } else if (W.type == WeightType::BF16) {
    rows_kernel(Bf16Rows{static_cast<const uint16_t*>(W.data), W.cols}, W, x, T, bias, y, r0, r1);
  } else {
    rows_kernel(Mxfp4Rows{static_cast<const uint8_t*>(W.data), W.scales, W.cols / kSeg}, W, x, T, bias, y, r0,
                r1);
  }
}

}  // namespace gptoss::cpu
