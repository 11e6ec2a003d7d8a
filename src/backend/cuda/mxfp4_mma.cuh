// MXFP4 weights as f16 mma operands, shared by the decode (moe_decode_tc.cu) and grouped (moe_grouped_tc.cu)
// tensor-core MoE kernels. A weight is code * 2^(s - 127) with s its 32-value block's scale byte; one mma sums
// over 4 blocks of a row, so each block is scaled relative to its row's largest scale smax
// (launch_mxfp4_row_max): w' = code * 2^(s - smax), exact in f16 for smax - s <= 23 (smaller blocks weigh
// < 2^-23 of the row's largest and are flushed); the row's sum is multiplied by 2^(smax - 127) in f32.
#pragma once

#include <cuda_fp16.h>

#include <cstdint>

#include "backend/cuda/kernels.h"
#include "backend/cuda/mma.cuh"

namespace gptoss::cuda {

// 8 E2M1 codes of a word (nibble i = value i) -> h[k] = f16x2 (v_k, v_{k+4}) * 2^-14: code s.e1.e0.m
// placed at bits 15 / 11..9 of an f16 (subnormal for e = 0), as fp4x8_scaled in moe_decode.cu.
__device__ __forceinline__ void fp4x8_half2(uint32_t w, uint32_t (&h)[4]) {
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const uint32_t t = w >> (4 * k);
    h[k] = ((t & 0x00070007u) << 9) | ((t & 0x00080008u) << 12);
  }
}

// f16x2 (f, f) with f = 2^(s - smax + 14): turns code * 2^-14 into code * 2^(s - smax); 0 below f16 range.
__device__ __forceinline__ uint32_t block_factor(uint32_t s, uint32_t smax) {
  const int e = int(s) - int(smax) + 29;  // f16 exponent field of 2^(s - smax + 14); s <= smax
  const uint32_t h = e > 0 ? uint32_t(e) << 10 : 0u;
  return h | (h << 16);
}

__device__ __forceinline__ uint32_t hmul2_bits(uint32_t a, uint32_t b) {
  __half2 x, y;
  memcpy(&x, &a, 4);
  memcpy(&y, &b, 4);
  const __half2 r = __hmul2(x, y);
  uint32_t out;
  memcpy(&out, &r, 4);
  return out;
}

__device__ __forceinline__ uint32_t word_of(const uint4& q, int i) { return i == 0 ? q.x : i == 1 ? q.y : i == 2 ? q.z : q.w; }

// A warp's rows r0 + g and r0 + g + 8 (g = lane / 4) of expert e: lane quarter q = lane % 4 reads block b0 + 4s + q
// of both (a row's 4 lanes read 64 contiguous bytes per step); rows past w.rows read as zeros.
struct RowPair {
  int64_t ra, rb;
  bool va, vb;
  const uint4 *qa, *qb;
  const uint8_t *sa, *sb;
};

__device__ __forceinline__ RowPair row_pair(const WView& w, int e, int64_t r0, int g, int nb) {
  RowPair p;
  p.ra = r0 + g;
  p.rb = r0 + g + 8;
  p.va = p.ra < w.rows;
  p.vb = p.rb < w.rows;
  p.qa = reinterpret_cast<const uint4*>(w.data + e * w.stride) + (p.va ? p.ra : 0) * nb;
  p.qb = reinterpret_cast<const uint4*>(w.data + e * w.stride) + (p.vb ? p.rb : 0) * nb;
  p.sa = w.scales + e * w.scales_stride + (p.va ? p.ra : 0) * nb;
  p.sb = w.scales + e * w.scales_stride + (p.vb ? p.rb : 0) * nb;
  return p;
}

// The batch of kSteps steps from block b0: codes (wa, wb) and scale bytes (ca, cb) of both rows.
template <int kSteps>
__device__ __forceinline__ void fetch_row_pair(const RowPair& p, int nb, int q, int b0, uint4 (&wa)[kSteps],
                                               uint4 (&wb)[kSteps], uint32_t (&ca)[kSteps], uint32_t (&cb)[kSteps]) {
#pragma unroll
  for (int s = 0; s < kSteps; ++s) {
    const int b = b0 + 4 * s + q;
    const bool in = b < nb;
    wa[s] = in && p.va ? __ldg(p.qa + b) : make_uint4(0, 0, 0, 0);
    wb[s] = in && p.vb ? __ldg(p.qb + b) : make_uint4(0, 0, 0, 0);
    ca[s] = in && p.va ? __ldg(p.sa + b) : 0u;
    cb[s] = in && p.vb ? __ldg(p.sb + b) : 0u;
  }
}

// The products of one fetched batch (fetch_row_pair from block b0) into c: for each step s (block b = b0 + 4s + q),
// word wi and value pair p, the A operand (both rows' codes scaled by their blocks' factors against the rows'
// largest scale bytes ma, mb) times kNT n-tiles of x from shared memory, xs[(((wi * 2 + p) * kNT + nt) * nb + b)
// * kCols + g] (zeros where !xgate or b >= nb).
template <int kSteps, int kNT, int kCols>
__device__ __forceinline__ void mma_row_pair(const uint4 (&wa)[kSteps], const uint4 (&wb)[kSteps],
                                             const uint32_t (&ca)[kSteps], const uint32_t (&cb)[kSteps], uint32_t ma,
                                             uint32_t mb, int b0, int q, int g, int nb, bool xgate,
                                             const uint2* __restrict__ xs, float (&c)[kNT][2][4]) {
#pragma unroll
  for (int s = 0; s < kSteps; ++s) {
    const int b = b0 + 4 * s + q;
    const uint32_t fa = block_factor(ca[s], ma), fb = block_factor(cb[s], mb);
    const bool xin = xgate && b < nb;
#pragma unroll
    for (int wi = 0; wi < 4; ++wi) {
      uint32_t ha[4], hb[4];
      fp4x8_half2(word_of(wa[s], wi), ha);
      fp4x8_half2(word_of(wb[s], wi), hb);
#pragma unroll
      for (int p = 0; p < 2; ++p) {
        const uint32_t A[4] = {hmul2_bits(ha[2 * p], fa), hmul2_bits(hb[2 * p], fb), hmul2_bits(ha[2 * p + 1], fa),
                               hmul2_bits(hb[2 * p + 1], fb)};
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt) {
          const uint2 xv = xin ? xs[(((wi * 2 + p) * kNT + nt) * nb + b) * kCols + g] : make_uint2(0, 0);
          mma_f16(c[nt][p], A, xv.x, xv.y);
        }
      }
    }
  }
}

}  // namespace gptoss::cuda
