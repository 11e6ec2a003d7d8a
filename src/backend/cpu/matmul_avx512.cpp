// AVX-512 kernels (F, BW, VL, DQ). f32 FMAs on f32 activations; weights decoded in registers:
//   bf16: 32 values = one 64-byte load; (v << 16) gives the even elements as f32, (v & 0xFFFF0000) the odd.
//   MXFP4: one 16-byte block zero-extended to 16 dwords; vpermps looks up the low nibble (bits 0..3) in a
//          16-entry table of E2M1 values pre-multiplied by the block's 2^(s-127) (exact: a power of two),
//          giving the even elements; the same after >> 4 gives the odd ones.
// Both produce (even, odd) halves of each 32-column segment, so x is first deinterleaved the same way
// (xd[seg*32 + j] = x[seg*32 + 2j], xd[seg*32 + 16 + j] = x[seg*32 + 2j + 1]); f32 weights use x as is.
// A kernel call computes an R-row x TT-token tile of dot products with R*TT zmm accumulators (16 lanes of
// partial sums each, summed at the end), so each decoded weight vector feeds TT FMAs: at T = 1 this is a
// memory-bound matvec, at T >= 4 four tokens share each decode.
// GCC 12's AVX-512 intrinsics pass _mm512_undefined_*() (a self-initialised variable) as the unused
// source of unmasked operations, which -Wuninitialized reports at the header line when inlined here.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <algorithm>
#include <bit>
#include <cstring>
#include <vector>

#include "backend/cpu/matmul_kernels.h"
#include "core/mxfp4.h"

namespace gptoss::cpu {
namespace {

constexpr int kSeg = 32;  // columns per segment (one MXFP4 block, one zmm pair)

struct ScaleTable {
  alignas(64) float v[256];
  ScaleTable() {
    for (int s = 0; s < 256; ++s) v[s] = mxfp4_scale(uint8_t(s));
  }
};
const ScaleTable kScales;

// Columns `n` (1..32) of the last segment as a lane mask for 32 x 16-bit / 2 x 16 x 32-bit loads.
inline __mmask32 tail_mask32(int n) { return n >= 32 ? ~__mmask32(0) : (__mmask32(1) << n) - 1; }

struct F32Rows {
  const float* base;
  int64_t cols;
  static constexpr bool kDeinterleaved = false;
  void segment(int64_t r, int64_t s, __m512& a, __m512& b) const {
    const float* p = base + r * cols + s * kSeg;
    a = _mm512_loadu_ps(p);
    b = _mm512_loadu_ps(p + 16);
  }
  void tail(int64_t r, int64_t s, int n, __m512& a, __m512& b) const {
    const float* p = base + r * cols + s * kSeg;
    const __mmask32 m = tail_mask32(n);
    a = _mm512_maskz_loadu_ps(__mmask16(m), p);
    b = _mm512_maskz_loadu_ps(__mmask16(m >> 16), p + 16);
  }
  void prefetch(int64_t, int64_t) const {}
};

struct Bf16Rows {
  const uint16_t* base;
  int64_t cols;
  static constexpr bool kDeinterleaved = true;
  static void split(__m512i v, __m512& a, __m512& b) {
    a = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
    b = _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32(int(0xFFFF0000u))));
  }
  void segment(int64_t r, int64_t s, __m512& a, __m512& b) const {
    split(_mm512_loadu_si512(base + r * cols + s * kSeg), a, b);
  }
  void tail(int64_t r, int64_t s, int n, __m512& a, __m512& b) const {
    split(_mm512_maskz_loadu_epi16(tail_mask32(n), base + r * cols + s * kSeg), a, b);
  }
  void prefetch(int64_t, int64_t) const {}
};

struct Mxfp4Rows {
  static constexpr int64_t kPrefetchBlocks = 512;  // 8 KiB ahead: several rows of the next 4-row tiles
  const uint8_t* blocks;
  const uint8_t* scales;
  int64_t nseg;
  static constexpr bool kDeinterleaved = true;
  void segment(int64_t r, int64_t s, __m512& a, __m512& b) const {
    const int64_t blk = r * nseg + s;
    // One cache line holds 4 blocks: request the line kPrefetchBlocks ahead on each row's stream, so
    // several DRAM requests per row are in flight (the hardware prefetcher alone keeps too few).
    if ((s & 3) == 0) {
      _mm_prefetch(reinterpret_cast<const char*>(blocks + (blk + kPrefetchBlocks) * 16), _MM_HINT_T0);
      if ((s & 63) == 0) _mm_prefetch(reinterpret_cast<const char*>(scales + blk + kPrefetchBlocks), _MM_HINT_T0);
    }
    const __m512 table = _mm512_mul_ps(_mm512_loadu_ps(kFp4Values), _mm512_set1_ps(kScales.v[scales[blk]]));
    const __m512i q = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blocks + blk * 16)));
    a = _mm512_permutexvar_ps(q, table);
    b = _mm512_permutexvar_ps(_mm512_srli_epi32(q, 4), table);
  }
  void tail(int64_t, int64_t, int, __m512& a, __m512& b) const {  // cols % 32 == 0: never called
    a = b = _mm512_setzero_ps();
  }
  void prefetch(int64_t, int64_t) const {}
};

// y[t, r] for r in [r, r+R), t in [0, TT): xp = prepared x rows (stride xs floats, zero-padded to whole
// segments). TT == 1 keeps separate accumulators for the two halves: two FMA chains per row hide latency.
template <int R, int TT, class Rows>
inline void tile(const Rows& w, int64_t r, int64_t nfull, int tail_n, const float* xp, int64_t xs,
                 const float* bias, float* y, int64_t ystride) {
  constexpr int kSets = TT == 1 ? 2 : 1;
  __m512 acc[kSets][R][TT];
  for (int k = 0; k < kSets; ++k)
    for (int i = 0; i < R; ++i)
      for (int t = 0; t < TT; ++t) acc[k][i][t] = _mm512_setzero_ps();
  auto step = [&](int64_t s, bool is_tail) {
    __m512 xa[TT], xb[TT];
    for (int t = 0; t < TT; ++t) {
      xa[t] = _mm512_loadu_ps(xp + t * xs + s * kSeg);
      xb[t] = _mm512_loadu_ps(xp + t * xs + s * kSeg + 16);
    }
    for (int i = 0; i < R; ++i) {
      __m512 wa, wb;
      if (is_tail) {
        w.tail(r + i, s, tail_n, wa, wb);
      } else {
        w.segment(r + i, s, wa, wb);
      }
      for (int t = 0; t < TT; ++t) {
        acc[0][i][t] = _mm512_fmadd_ps(wa, xa[t], acc[0][i][t]);
        acc[kSets - 1][i][t] = _mm512_fmadd_ps(wb, xb[t], acc[kSets - 1][i][t]);
      }
    }
  };
  for (int64_t s = 0; s < nfull; ++s) step(s, false);
  if (tail_n) step(nfull, true);
  for (int i = 0; i < R; ++i)
    for (int t = 0; t < TT; ++t) {
      __m512 v = acc[0][i][t];
      if (kSets == 2) v = _mm512_add_ps(v, acc[kSets - 1][i][t]);
      y[t * ystride + r + i] = _mm512_reduce_add_ps(v) + (bias ? bias[r + i] : 0.0f);
    }
}

template <int TT, class Rows>
void tile_rows(const Rows& w, int64_t r0, int64_t r1, int64_t nfull, int tail_n, const float* xp, int64_t xs,
               const float* bias, float* y, int64_t ystride) {
  int64_t r = r0;
  for (; r + 4 <= r1; r += 4) tile<4, TT>(w, r, nfull, tail_n, xp, xs, bias, y, ystride);
  for (; r < r1; ++r) tile<1, TT>(w, r, nfull, tail_n, xp, xs, bias, y, ystride);
}

// Prepared activations for up to `tokens` tokens of `cols` columns: deinterleaved or copied, zero-padded.
float* prepare_x(const float* x, int64_t tokens, int64_t cols, bool deinterleave, int64_t* stride) {
  thread_local std::vector<float> buf;
  const int64_t nseg = (cols + kSeg - 1) / kSeg;
  const int64_t xs = nseg * kSeg;
  if (buf.size() < size_t(tokens * xs)) buf.resize(size_t(tokens * xs));
  for (int64_t t = 0; t < tokens; ++t) {
    const float* src = x + t * cols;
    float* dst = buf.data() + t * xs;
    if (!deinterleave) {
      std::memcpy(dst, src, size_t(cols) * sizeof(float));
      std::fill(dst + cols, dst + xs, 0.0f);
      continue;
    }
    const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    for (int64_t s = 0; s < nseg; ++s) {
      const int n = int(std::min<int64_t>(kSeg, cols - s * kSeg));
      const __mmask32 m = tail_mask32(n);
      const __m512 lo = _mm512_maskz_loadu_ps(__mmask16(m), src + s * kSeg);
      const __m512 hi = _mm512_maskz_loadu_ps(__mmask16(m >> 16), src + s * kSeg + 16);
      _mm512_storeu_ps(dst + s * kSeg, _mm512_permutex2var_ps(lo, even, hi));
      _mm512_storeu_ps(dst + s * kSeg + 16, _mm512_permutex2var_ps(lo, odd, hi));
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
  // Tokens per group: the group's prepared x (about 512 KiB) stays in L2 while every row block of
  // [r0, r1) passes over it, 4 rows x 4 tokens at a time.
  const int64_t xs_est = (nfull + (tail_n ? 1 : 0)) * kSeg;
  const int64_t group = std::max<int64_t>(4, (int64_t(512) * 1024 / 4 / xs_est) / 4 * 4);
  for (int64_t g0 = 0; g0 < T; g0 += group) {
    const int64_t gn = std::min(group, T - g0);
    int64_t xs;
    const float* xp = prepare_x(x + g0 * W.cols, gn, W.cols, Rows::kDeinterleaved, &xs);
    float* yg = y + g0 * W.rows;
    if (gn <= 3) {
      if (gn == 1) tile_rows<1>(w, r0, r1, nfull, tail_n, xp, xs, bias, yg, W.rows);
      if (gn == 2) tile_rows<2>(w, r0, r1, nfull, tail_n, xp, xs, bias, yg, W.rows);
      if (gn == 3) tile_rows<3>(w, r0, r1, nfull, tail_n, xp, xs, bias, yg, W.rows);
      continue;
    }
    for (int64_t rb = r0; rb < r1; rb += 4) {
      const int64_t re = std::min(r1, rb + 4);
      int64_t t = 0;
      for (; t + 4 <= gn; t += 4) tile_rows<4>(w, rb, re, nfull, tail_n, xp + t * xs, xs, bias, yg + t * W.rows, W.rows);
      const float* xt = xp + t * xs;
      float* yt = yg + t * W.rows;
      if (gn - t == 1) tile_rows<1>(w, rb, re, nfull, tail_n, xt, xs, bias, yt, W.rows);
      if (gn - t == 2) tile_rows<2>(w, rb, re, nfull, tail_n, xt, xs, bias, yt, W.rows);
      if (gn - t == 3) tile_rows<3>(w, rb, re, nfull, tail_n, xt, xs, bias, yt, W.rows);
    }
  }
}

// Dense [cols, rows] storage (axpy form): 256 outputs of one token in 16 zmm accumulators while c runs over
// all columns, so each step reads 16 contiguous vectors of one weight row and nothing is stored until the
// end (an earlier version accumulating in y through memory ran 8x slower on AMD Zen). Accumulation runs
// over c in order, as the reference.
template <bool kTail, class Load>
inline void transposed_chunk(Load load, const MatrixRef& W, const float* xt, const float* bias, float* yt,
                             int64_t rb, int64_t r1) {
  constexpr int kVec = 16;
  __mmask16 mask[kVec];
  for (int v = 0; v < kVec; ++v) {
    const int64_t left = r1 - (rb + 16 * v);
    mask[v] = !kTail || left >= 16 ? __mmask16(0xFFFF) : left <= 0 ? __mmask16(0) : __mmask16((1u << left) - 1);
  }
  __m512 acc[kVec];
  for (int v = 0; v < kVec; ++v) acc[v] = _mm512_setzero_ps();
  for (int64_t c = 0; c < W.cols; ++c) {
    const __m512 xv = _mm512_set1_ps(xt[c]);
    for (int v = 0; v < kVec; ++v)
      acc[v] = _mm512_fmadd_ps(load(c * W.rows + rb + 16 * v, kTail ? mask[v] : __mmask16(0xFFFF)), xv, acc[v]);
  }
  for (int v = 0; v < kVec; ++v) {
    if (kTail) {
      __m512 out = acc[v];
      if (bias) out = _mm512_add_ps(out, _mm512_maskz_loadu_ps(mask[v], bias + rb + 16 * v));
      _mm512_mask_storeu_ps(yt + rb + 16 * v, mask[v], out);
    } else {
      __m512 out = acc[v];
      if (bias) out = _mm512_add_ps(out, _mm512_loadu_ps(bias + rb + 16 * v));
      _mm512_storeu_ps(yt + rb + 16 * v, out);
    }
  }
}

template <class Load>
void transposed_kernel(Load load, const MatrixRef& W, const float* x, int64_t T, const float* bias, float* y,
                       int64_t r0, int64_t r1) {
  constexpr int64_t kChunk = 256;
  for (int64_t t = 0; t < T; ++t) {
    const float* xt = x + t * W.cols;
    float* yt = y + t * W.rows;
    int64_t rb = r0;
    for (; rb + kChunk <= r1; rb += kChunk) transposed_chunk<false>(load, W, xt, bias, yt, rb, r1);
    if (rb < r1) transposed_chunk<true>(load, W, xt, bias, yt, rb, r1);
  }
}

}  // namespace

void matmul_rows_avx512(const MatrixRef& W, const float* x, int64_t T, const float* bias, float* y, int64_t r0,
                        int64_t r1) {
  if (W.transposed && W.type == WeightType::F32) {
    const float* base = static_cast<const float*>(W.data);
    transposed_kernel(
        [base](int64_t i, __mmask16 m) {
          return m == 0xFFFF ? _mm512_loadu_ps(base + i) : _mm512_maskz_loadu_ps(m, base + i);
        },
        W, x, T, bias, y, r0, r1);
  } else if (W.transposed && W.type == WeightType::BF16) {
    const uint16_t* base = static_cast<const uint16_t*>(W.data);
    transposed_kernel(
        [base](int64_t i, __mmask16 m) {
          const __m256i h = m == 0xFFFF ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(base + i))
                                        : _mm256_maskz_loadu_epi16(m, base + i);
          return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
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
