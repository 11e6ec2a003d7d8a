// The exact kernel family (matmul.h) written once over a vector traits type `V` (matmul_avx2.cpp: 8 x f32
// ymm; matmul_avx512.cpp: 16 x f32 zmm). Include only from a file compiled for AVX2 or better; everything
// here has internal linkage, so each ISA file keeps its own copy compiled with its own flags.
//
// Row-major W [rows, cols] (f32 / bf16 / MXFP4): y[t, r] = sum_c W[r, c] x[t, c] + bias[r].
//   A 32-column segment (one MXFP4 block) is kSegVecs = 32 / kLanes weight vectors. bf16 and MXFP4
//   decode to the even columns first, then the odd ones (bf16: v << 16 and v & 0xFFFF0000; MXFP4: low and
//   high nibbles), so x is deinterleaved to match: xd[s*32 + j] = x[s*32 + 2j], xd[s*32 + 16 + j] =
//   x[s*32 + 2j + 1]; f32 weights use x as is. Every decode is exact.
//   A tile of R rows x TT tokens keeps R*TT vector accumulators, so each decoded weight vector feeds TT
//   FMAs. The sum of y[t, r] is: per segment, the FMAs of its vectors in order into one accumulator (or,
//   where V::kTwoChainsForOneToken and TT == 1, vector k into chain k % 2, added at the end), then V::hsum,
//   then + bias. So with two chains the TT a token gets matters: tokens go in tiles of V::kTokenTile, the
//   last n % kTokenTile of them in one smaller tile; the row split (4-row tiles, then single rows) never does.
// Dense [cols, rows] storage (W.transposed, f32 / bf16; the axpy form): y[t, r] = an FMA chain over c in
//   order from 0, then + bias; V::kChunkVecs picks where the partial sums live (see transposed_kernel).
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "backend/cpu/mxfp4_scale_table.h"
#include "core/matrix.h"
#include "core/mxfp4.h"

namespace gptoss::cpu::matmultile {
namespace {

constexpr int kSeg = 32;  // columns per segment (one MXFP4 block)

template <class V>
constexpr int kSegVecs = kSeg / V::kLanes;

// Decoders of one row's segment s into kSegVecs vectors. The last, partial segment (n < 32 columns, f32 and
// bf16 only: MXFP4 has cols % 32 == 0) is decoded from a zero-padded copy.
template <class V>
struct F32Rows {
  const float* base;
  int64_t cols;
  static constexpr bool kDeinterleaved = false;
  static void decode(const float* p, typename V::T* w) {
    for (int k = 0; k < kSegVecs<V>; ++k) w[k] = V::load(p + k * V::kLanes);
  }
  void segment(int64_t r, int64_t s, typename V::T* w) const { decode(base + r * cols + s * kSeg, w); }
  void tail(int64_t r, int64_t s, int n, typename V::T* w) const {
    alignas(64) float buf[kSeg] = {};
    std::memcpy(buf, base + r * cols + s * kSeg, size_t(n) * sizeof(float));
    decode(buf, w);
  }
};

template <class V>
struct Bf16Rows {
  const uint16_t* base;
  int64_t cols;
  static constexpr bool kDeinterleaved = true;
  void segment(int64_t r, int64_t s, typename V::T* w) const { V::bf16_segment(base + r * cols + s * kSeg, w); }
  void tail(int64_t r, int64_t s, int n, typename V::T* w) const {
    alignas(64) uint16_t buf[kSeg] = {};
    std::memcpy(buf, base + r * cols + s * kSeg, size_t(n) * sizeof(uint16_t));
    V::bf16_segment(buf, w);
  }
};

template <class V>
struct Mxfp4Rows {
  const uint8_t* blocks;  // [rows, nseg, 16]
  const uint8_t* scales;  // [rows, nseg]
  int64_t nseg;
  static constexpr bool kDeinterleaved = true;
  void segment(int64_t r, int64_t s, typename V::T* w) const {
    const int64_t blk = r * nseg + s;
    if constexpr (V::kMxfp4PrefetchBlocks > 0) {
      // One cache line holds 4 blocks: request the line kMxfp4PrefetchBlocks ahead on each row's stream, so
      // several DRAM requests per row are in flight (the hardware prefetcher alone keeps too few).
      if ((s & 3) == 0) {
        _mm_prefetch(reinterpret_cast<const char*>(blocks + (blk + V::kMxfp4PrefetchBlocks) * 16), _MM_HINT_T0);
        if ((s & 63) == 0)
          _mm_prefetch(reinterpret_cast<const char*>(scales + blk + V::kMxfp4PrefetchBlocks), _MM_HINT_T0);
      }
    }
    V::mxfp4_segment(blocks + blk * 16, scales[blk], w);
  }
  void tail(int64_t, int64_t, int, typename V::T* w) const {  // cols % 32 == 0: never called
    for (int k = 0; k < kSegVecs<V>; ++k) w[k] = V::zero();
  }
};

// y[t, r + i] for i < R, t < TT: xp = prepared x rows (stride xs floats, zero-padded to whole segments).
template <class V, int R, int TT, class Rows>
inline void tile(const Rows& w, int64_t r, int64_t nfull, int tail_n, const float* xp, int64_t xs,
                 const float* bias, float* y, int64_t ystride) {
  constexpr int kChains = V::kTwoChainsForOneToken && TT == 1 ? 2 : 1;
  typename V::T acc[kChains][R][TT];
  for (int k = 0; k < kChains; ++k)
    for (int i = 0; i < R; ++i)
      for (int t = 0; t < TT; ++t) acc[k][i][t] = V::zero();
  auto step = [&](int64_t s, bool is_tail) {
    for (int i = 0; i < R; ++i) {
      typename V::T wv[kSegVecs<V>];
      if (is_tail) {
        w.tail(r + i, s, tail_n, wv);
      } else {
        w.segment(r + i, s, wv);
      }
      for (int t = 0; t < TT; ++t) {
        const float* xt = xp + t * xs + s * kSeg;
        for (int k = 0; k < kSegVecs<V>; ++k)
          acc[k % kChains][i][t] = V::fma(wv[k], V::load(xt + k * V::kLanes), acc[k % kChains][i][t]);
      }
    }
  };
  for (int64_t s = 0; s < nfull; ++s) step(s, false);
  if (tail_n) step(nfull, true);
  for (int i = 0; i < R; ++i)
    for (int t = 0; t < TT; ++t) {
      typename V::T v = acc[0][i][t];
      if constexpr (kChains == 2) v = V::add(v, acc[1][i][t]);
      y[t * ystride + r + i] = V::hsum(v) + (bias ? bias[r + i] : 0.0f);
    }
}

template <class V, int TT, class Rows>
void tile_rows(const Rows& w, int64_t r0, int64_t r1, int64_t nfull, int tail_n, const float* xp, int64_t xs,
               const float* bias, float* y, int64_t ystride) {
  int64_t r = r0;
  for (; r + 4 <= r1; r += 4) tile<V, 4, TT>(w, r, nfull, tail_n, xp, xs, bias, y, ystride);
  for (; r < r1; ++r) tile<V, 1, TT>(w, r, nfull, tail_n, xp, xs, bias, y, ystride);
}

// The last n (1 <= n <= TT) tokens of a group in one tile of n tokens.
template <class V, int TT, class Rows>
void tile_rows_last(int64_t n, const Rows& w, int64_t r0, int64_t r1, int64_t nfull, int tail_n, const float* xp,
                    int64_t xs, const float* bias, float* y, int64_t ystride) {
  if (n == TT) {
    tile_rows<V, TT>(w, r0, r1, nfull, tail_n, xp, xs, bias, y, ystride);
  } else if constexpr (TT > 1) {
    tile_rows_last<V, TT - 1>(n, w, r0, r1, nfull, tail_n, xp, xs, bias, y, ystride);
  }
}

// Prepared activations for `tokens` tokens of `cols` columns: [tokens, nseg * 32], deinterleaved per
// segment or copied, zero-padded. A plain copy: its cost is 1 / (rows of the slice) of the products'.
float* prepare_x(const float* x, int64_t tokens, int64_t cols, bool deinterleave, int64_t* stride) {
  thread_local std::vector<float> buf;
  const int64_t xs = (cols + kSeg - 1) / kSeg * kSeg;
  if (buf.size() < size_t(tokens * xs)) buf.resize(size_t(tokens * xs));
  for (int64_t t = 0; t < tokens; ++t) {
    const float* src = x + t * cols;
    float* dst = buf.data() + t * xs;
    std::fill(dst + (deinterleave ? 0 : cols), dst + xs, 0.0f);
    if (!deinterleave) {
      std::memcpy(dst, src, size_t(cols) * sizeof(float));
      continue;
    }
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t s = c / kSeg, j = c % kSeg;
      dst[s * kSeg + (j % 2) * 16 + j / 2] = src[c];
    }
  }
  *stride = xs;
  return buf.data();
}

template <class V, class Rows>
void rows_kernel(const Rows& w, const MatrixRef& W, const float* x, int64_t T, const float* bias, float* y,
                 int64_t r0, int64_t r1) {
  constexpr int kTT = V::kTokenTile;
  const int64_t nfull = W.cols / kSeg;
  const int tail_n = int(W.cols % kSeg);
  // Tokens per group (a multiple of kTT): the group's prepared x (about 512 KiB) stays in L2 while every
  // 4-row block of [r0, r1) passes over it, kTT tokens at a time.
  const int64_t xs_est = (nfull + (tail_n ? 1 : 0)) * kSeg;
  const int64_t group = std::max<int64_t>(kTT, (int64_t(512) * 1024 / 4 / xs_est) / kTT * kTT);
  for (int64_t g0 = 0; g0 < T; g0 += group) {
    const int64_t gn = std::min(group, T - g0);
    int64_t xs;
    const float* xp = prepare_x(x + g0 * W.cols, gn, W.cols, Rows::kDeinterleaved, &xs);
    float* yg = y + g0 * W.rows;
    for (int64_t rb = r0; rb < r1; rb += 4) {
      const int64_t re = std::min(r1, rb + 4);
      int64_t t = 0;
      for (; t + kTT <= gn; t += kTT)
        tile_rows<V, kTT>(w, rb, re, nfull, tail_n, xp + t * xs, xs, bias, yg + t * W.rows, W.rows);
      if (t < gn)
        tile_rows_last<V, kTT - 1>(gn - t, w, rb, re, nfull, tail_n, xp + t * xs, xs, bias, yg + t * W.rows,
                                   W.rows);
    }
  }
}

template <class V>
struct F32Cols {
  using Elem = float;
  static typename V::T full(const float* p) { return V::load(p); }
  static typename V::T part(const float* p, int n) { return V::load_part(p, n); }
};

template <class V>
struct Bf16Cols {
  using Elem = uint16_t;
  static typename V::T full(const uint16_t* p) { return V::load_bf16(p); }
  static typename V::T part(const uint16_t* p, int n) { return V::load_bf16_part(p, n); }
};

// Outputs [rb, rb + kChunkVecs * kLanes) of one token in registers (kPartial: the last chunk, clipped at r1).
template <class V, bool kPartial, class Load>
inline void transposed_chunk(const MatrixRef& W, const float* xt, const float* bias, float* yt, int64_t rb,
                             int64_t r1) {
  constexpr int kVecs = V::kChunkVecs;
  int n[kVecs];  // valid lanes of each output vector
  for (int v = 0; v < kVecs; ++v)
    n[v] = kPartial ? int(std::clamp<int64_t>(r1 - (rb + V::kLanes * v), 0, V::kLanes)) : V::kLanes;
  const auto* base = static_cast<const typename Load::Elem*>(W.data);
  typename V::T acc[kVecs];
  for (int v = 0; v < kVecs; ++v) acc[v] = V::zero();
  for (int64_t c = 0; c < W.cols; ++c) {
    const typename V::T xv = V::set1(xt[c]);
    const auto* wc = base + c * W.rows + rb;
    for (int v = 0; v < kVecs; ++v) {
      const auto* p = wc + V::kLanes * v;
      acc[v] = V::fma(kPartial && n[v] != V::kLanes ? Load::part(p, n[v]) : Load::full(p), xv, acc[v]);
    }
  }
  for (int v = 0; v < kVecs; ++v) {
    float* out = yt + rb + V::kLanes * v;
    typename V::T o = acc[v];
    if (kPartial && n[v] != V::kLanes) {
      if (bias) o = V::add(o, V::load_part(bias + rb + V::kLanes * v, n[v]));
      V::store_part(out, o, n[v]);
    } else {
      if (bias) o = V::add(o, V::load(bias + rb + V::kLanes * v));
      V::store(out, o);
    }
  }
}

// Both forms give every y[t, r] the same sum: an FMA chain over c in order from 0, then + bias.
//   In registers (V::kChunkVecs > 0): kChunkVecs vectors of outputs stay in registers while c runs over all
//     columns; each step reads kChunkVecs contiguous vectors of one stored row.
//   Through y (kChunkVecs == 0): 4 columns per pass over the whole output slice, so each pass streams 4
//     stored rows contiguously; y is read and written once per pass.
template <class V, class Load>
void transposed_kernel(const MatrixRef& W, const float* x, int64_t T, const float* bias, float* y, int64_t r0,
                       int64_t r1) {
  const auto* base = static_cast<const typename Load::Elem*>(W.data);
  for (int64_t t = 0; t < T; ++t) {
    const float* xt = x + t * W.cols;
    float* yt = y + t * W.rows;
    if constexpr (V::kChunkVecs > 0) {
      constexpr int64_t kChunk = V::kChunkVecs * V::kLanes;
      int64_t rb = r0;
      for (; rb + kChunk <= r1; rb += kChunk) transposed_chunk<V, false, Load>(W, xt, bias, yt, rb, r1);
      if (rb < r1) transposed_chunk<V, true, Load>(W, xt, bias, yt, rb, r1);
    } else {
      constexpr int kCols = 4;
      std::fill(yt + r0, yt + r1, 0.0f);
      for (int64_t c0 = 0; c0 < W.cols; c0 += kCols) {
        const int nc = int(std::min<int64_t>(kCols, W.cols - c0));
        typename V::T xv[kCols];
        const typename Load::Elem* wk[kCols];  // stored rows c0 .. c0 + nc
        for (int k = 0; k < nc; ++k) {
          xv[k] = V::set1(xt[c0 + k]);
          wk[k] = base + (c0 + k) * W.rows;
        }
        int64_t r = r0;
        for (; r + V::kLanes <= r1; r += V::kLanes) {
          typename V::T acc = V::load(yt + r);
          for (int k = 0; k < nc; ++k) acc = V::fma(Load::full(wk[k] + r), xv[k], acc);
          V::store(yt + r, acc);
        }
        if (r < r1) {
          const int n = int(r1 - r);
          typename V::T acc = V::load_part(yt + r, n);
          for (int k = 0; k < nc; ++k) acc = V::fma(Load::part(wk[k] + r, n), xv[k], acc);
          V::store_part(yt + r, acc, n);
        }
      }
      if (bias)
        for (int64_t r = r0; r < r1; ++r) yt[r] += bias[r];
    }
  }
}

// matmul_rows' contract (matmul_kernels.h).
template <class V>
void rows(const MatrixRef& W, const float* x, int64_t T, const float* bias, float* y, int64_t r0, int64_t r1) {
  if (W.transposed && W.type == WeightType::F32) {
    transposed_kernel<V, F32Cols<V>>(W, x, T, bias, y, r0, r1);
  } else if (W.transposed && W.type == WeightType::BF16) {
    transposed_kernel<V, Bf16Cols<V>>(W, x, T, bias, y, r0, r1);
  } else if (W.type == WeightType::F32) {
    rows_kernel<V>(F32Rows<V>{static_cast<const float*>(W.data), W.cols}, W, x, T, bias, y, r0, r1);
  } else if (W.type == WeightType::BF16) {
    rows_kernel<V>(Bf16Rows<V>{static_cast<const uint16_t*>(W.data), W.cols}, W, x, T, bias, y, r0, r1);
  } else {
    rows_kernel<V>(Mxfp4Rows<V>{static_cast<const uint8_t*>(W.data), W.scales, W.cols / kSeg}, W, x, T, bias, y,
                   r0, r1);
  }
}

}  // namespace
}  // namespace gptoss::cpu::matmultile
