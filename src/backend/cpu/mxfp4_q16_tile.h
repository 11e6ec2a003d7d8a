// The MXFP4 x int16 row kernel, written once over a `Dot` traits type and instantiated per ISA
// (mxfp4_q16_avx2.cpp: vpmaddwd + vpaddd; mxfp4_q16_avx512.cpp: AVX512-VNNI vpdpwssd on ymm).
// Include only from a file compiled for AVX2 or better. Everything here has internal linkage (an unnamed
// namespace), so each ISA file keeps its own copy compiled with its own flags.
//
// A row's blocks go two at a time (q16.h's pairs): 32 bytes of codes, two 256-bit vpshufb on a table of
// 2 x E2M1 (low nibbles: even columns, high: odd), each 128-bit lane one block, then bytes unpacked into
// the high byte of int16 lanes: four vectors of 16 x (256 x 2 x E2M1), in the order of q16.h's pair.
// Dot::dot4 gives 8 int32 sums of their products with the activations (lanes 0-3 block 2p, 4-7 block
// 2p+1; |sum| <= 8 x 3072 x 32767 < 2^31, exact). A tile of R rows x TT tokens keeps R*TT float accumulators
// and adds float(sums) x [block scales 2^(s-136) | ..] x [activation scales | ..] per pair (2^-136 = half
// for the doubled table, 1/256 for the byte shift).
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "backend/cpu/mxfp4_scale_table.h"
#include "backend/cpu/q16.h"
#include "backend/cpu/ymm_hsum.h"
#include "core/matrix.h"
#include "core/mxfp4.h"

namespace gptoss::cpu::q16tile {
namespace {

// Blocks b, b + 1 of a row (kSingle: only b; the next 16 bytes are not read) as 4 x 16 int16, q16.h's order.
template <bool kSingle>
inline void load_pair(const uint8_t* p, __m256i w[4]) {
  const __m256i lut =
      _mm256_broadcastsi128_si256(_mm_setr_epi8(0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12));
  const __m256i nib = _mm256_set1_epi8(0x0F);
  const __m256i q = kSingle ? _mm256_zextsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)))
                            : _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  const __m256i even = _mm256_shuffle_epi8(lut, _mm256_and_si256(q, nib));
  const __m256i odd = _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(q, 4), nib));
  const __m256i z = _mm256_setzero_si256();
  w[0] = _mm256_unpacklo_epi8(z, even);
  w[1] = _mm256_unpacklo_epi8(z, odd);
  w[2] = _mm256_unpackhi_epi8(z, even);
  w[3] = _mm256_unpackhi_epi8(z, odd);
}

inline __m256 pair_vec(float lo, float hi) { return _mm256_set_m128(_mm_set1_ps(hi), _mm_set1_ps(lo)); }

// Lines requested ahead on each row's stream: the hardware prefetcher alone keeps too few DRAM requests in
// flight for a 2-core matvec (the exact AVX-512 kernel measured 43% -> 85% of bandwidth with this).
inline constexpr int64_t kPrefetchBlocks = 512;

// One pair p (kSingle: the lone last block of an odd row) into acc.
template <class Dot, int R, int TT, bool kSingle>
inline void pair_step(const uint8_t* blocks, const uint8_t* scales, int64_t nb, const Mxfp4ScaleTable& ps, int64_t r,
                      int64_t p, const Q16Act& x, int64_t t0, __m256 (&acc)[R][TT]) {
  __m256 dx[TT];
  for (int t = 0; t < TT; ++t) {
    const float* d = x.d + (t0 + t) * x.dstride + 2 * p;
    dx[t] = pair_vec(d[0], d[1]);  // d[1] of a pad block is 0
  }
  for (int i = 0; i < R; ++i) {
    const int64_t blk = (r + i) * nb + 2 * p;
    if ((p & 1) == 0) _mm_prefetch(reinterpret_cast<const char*>(blocks + (blk + kPrefetchBlocks) * 16), _MM_HINT_T0);
    __m256i w[4];
    load_pair<kSingle>(blocks + blk * 16, w);
    const __m256 dw = pair_vec(ps.v[scales[blk]], kSingle ? 0.0f : ps.v[scales[blk + 1]]);  // no pad scale
    for (int t = 0; t < TT; ++t) {
      const __m256i sum = Dot::dot4(w, x.q + (t0 + t) * x.stride + p * 64);
      acc[i][t] = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(sum), dw), dx[t], acc[i][t]);
    }
  }
}

template <class Dot, int R, int TT>
inline void tile(const uint8_t* blocks, const uint8_t* scales, int64_t nb, const Mxfp4ScaleTable& ps, int64_t r,
                 const Q16Act& x, int64_t t0, const float* bias, float* y, int64_t ystride) {
  __m256 acc[R][TT];
  for (int i = 0; i < R; ++i)
    for (int t = 0; t < TT; ++t) acc[i][t] = _mm256_setzero_ps();
  const int64_t full = nb / 2;
  for (int64_t p = 0; p < full; ++p) pair_step<Dot, R, TT, false>(blocks, scales, nb, ps, r, p, x, t0, acc);
  if (nb % 2) pair_step<Dot, R, TT, true>(blocks, scales, nb, ps, r, full, x, t0, acc);
  for (int i = 0; i < R; ++i)
    for (int t = 0; t < TT; ++t)
      y[(t0 + t) * ystride + r + i] = hsum_ymm(acc[i][t]) + (bias ? bias[r + i] : 0.0f);
}

template <class Dot, int R, int TT>
void tile_rows(const uint8_t* blocks, const uint8_t* scales, int64_t nb, const Mxfp4ScaleTable& ps, int64_t r0,
               int64_t r1, const Q16Act& x, int64_t t0, const float* bias, float* y, int64_t ystride) {
  int64_t r = r0;
  for (; r + R <= r1; r += R) tile<Dot, R, TT>(blocks, scales, nb, ps, r, x, t0, bias, y, ystride);
  for (; r < r1; ++r) tile<Dot, 1, TT>(blocks, scales, nb, ps, r, x, t0, bias, y, ystride);
}

template <class Dot>
void rows(const MatrixRef& W, const Q16Act& x, int64_t T, const float* bias, float* y, int64_t r0, int64_t r1) {
  static const Mxfp4ScaleTable ps(0.5f / 256.0f);  // 2^(s - 136): the doubled codes sit in the high byte
  const auto* blocks = static_cast<const uint8_t*>(W.data);
  const int64_t nb = W.cols / kQ16Block;
  // Rows in groups of 16 (their blocks stay in L1/L2 while the tokens pass). Tokens 4 at a time with one row
  // (each decoded pair feeds 4 tokens; 4 accumulators + 4 weight + 4 scale vectors fit the 16 ymm), the rest
  // as 3 x 1 row, 2 x 2 rows or 1 x 4 rows: always at least 3-4 independent accumulator chains.
  constexpr int64_t kRowGroup = 16;
  for (int64_t rb = r0; rb < r1; rb += kRowGroup) {
    const int64_t re = std::min(r1, rb + kRowGroup);
    int64_t t = 0;
    for (; t + 4 <= T; t += 4) tile_rows<Dot, 1, 4>(blocks, W.scales, nb, ps, rb, re, x, t, bias, y, W.rows);
    switch (T - t) {
      case 3: tile_rows<Dot, 1, 3>(blocks, W.scales, nb, ps, rb, re, x, t, bias, y, W.rows); break;
      case 2: tile_rows<Dot, 2, 2>(blocks, W.scales, nb, ps, rb, re, x, t, bias, y, W.rows); break;
      case 1: tile_rows<Dot, 4, 1>(blocks, W.scales, nb, ps, rb, re, x, t, bias, y, W.rows); break;
      default: break;
    }
  }
}

}  // namespace
}  // namespace gptoss::cpu::q16tile
