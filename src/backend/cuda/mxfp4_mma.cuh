// MXFP4 weights as f16 mma operands, shared by the decode (moe_decode_tc.cu) and grouped (moe_grouped_tc.cu)
// tensor-core MoE kernels. A weight is code * 2^(s - 127) with s its 32-value block's scale byte; one mma sums
// over 4 blocks of a row, so each block is scaled relative to its row's largest scale smax
// (launch_mxfp4_row_max): w' = code * 2^(s - smax), exact in f16 for smax - s <= 23 (smaller blocks weigh
// < 2^-23 of the row's largest and are flushed); the row's sum is multiplied by 2^(smax - 127) in f32.
#pragma once

#include <cuda_fp16.h>

#include <cstdint>

#include "backend/cuda/common.cuh"

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

// A warp's 16 rows [r0, r0 + 16) of expert e as m16n8k16 A operands (mma.cuh): lane (g, q) = (lane / 4, lane % 4)
// holds rows ra = r0 + g and rb = r0 + g + 8 and reads blocks b0 + 4s + q of both (s < kSteps): a row's 4 lanes
// read 64 contiguous bytes per step. The mma's k index is permuted: lane q's logical k (2q, 2q+1 | 2q+8, 2q+9) are
// values (2p, 2p+4 | 2p+1, 2p+5) of word wi of its own block (the pairs fp4x8_half2 yields); the B operand (x) is
// stored in the same order by the kernels. Rows past R and blocks past nb read as zeros.
template <int kSteps>
struct Mxfp4WarpRows {
  int64_t ra, rb;
  bool va, vb;
  int q, nb;
  const uint4 *qa, *qb;
  const uint8_t *sa, *sb;
  uint32_t ma = 0, mb = 0;  // the rows' largest scale bytes
  uint4 wa[kSteps], wb[kSteps];
  uint32_t ca[kSteps], cb[kSteps];

  __device__ __forceinline__ Mxfp4WarpRows(const WView& w, int e, int64_t r0, int lane)
      : ra(r0 + lane / 4), rb(r0 + lane / 4 + 8), va(ra < w.rows), vb(rb < w.rows), q(lane % 4),
        nb(int(w.cols / 32)) {
    const uint8_t* data = w.data + e * w.stride;
    const uint8_t* scales = w.scales + e * w.scales_stride;
    qa = reinterpret_cast<const uint4*>(data) + (va ? ra : 0) * nb;
    qb = reinterpret_cast<const uint4*>(data) + (vb ? rb : 0) * nb;
    sa = scales + (va ? ra : 0) * nb;
    sb = scales + (vb ? rb : 0) * nb;
  }

  // Requests the batch of steps b0 / 4 ... b0 / 4 + kSteps - 1 (block b0 + 4s + q of each row).
  __device__ __forceinline__ void fetch(int b0) {
#pragma unroll
    for (int s = 0; s < kSteps; ++s) {
      const int b = b0 + 4 * s + q;
      const bool in = b < nb;
      wa[s] = in && va ? __ldg(qa + b) : make_uint4(0, 0, 0, 0);
      wb[s] = in && vb ? __ldg(qb + b) : make_uint4(0, 0, 0, 0);
      ca[s] = in && va ? __ldg(sa + b) : 0u;
      cb[s] = in && vb ? __ldg(sb + b) : 0u;
    }
  }

  // rowmax: [E, R] the largest scale byte of each row (launch_mxfp4_row_max).
  __device__ __forceinline__ void fetch_rowmax(const uint8_t* __restrict__ rowmax, int e, int64_t R) {
    ma = va ? __ldg(rowmax + int64_t(e) * R + ra) : 0u;
    mb = vb ? __ldg(rowmax + int64_t(e) * R + rb) : 0u;
  }

  // f(s, wi, p, A) for every A operand of the fetched batch: step s (block b0 + 4s + q), word wi, value pair p.
  // A block's factor is computed once per step, each word decoded once for both pairs.
  template <class F>
  __device__ __forceinline__ void for_each_operand(F&& f) const {
#pragma unroll
    for (int s = 0; s < kSteps; ++s) {
      const uint32_t fa = block_factor(ca[s], ma), fb = block_factor(cb[s], mb);
#pragma unroll
      for (int wi = 0; wi < 4; ++wi) {
        uint32_t ha[4], hb[4];
        fp4x8_half2(word_of(wa[s], wi), ha);
        fp4x8_half2(word_of(wb[s], wi), hb);
#pragma unroll
        for (int p = 0; p < 2; ++p) {
          const uint32_t A[4] = {hmul2_bits(ha[2 * p], fa), hmul2_bits(hb[2 * p], fb), hmul2_bits(ha[2 * p + 1], fa),
                                 hmul2_bits(hb[2 * p + 1], fb)};
          f(s, wi, p, A);
        }
      }
    }
  }

  // What a row's f16 sums are multiplied by in f32: 2^(smax - 127) of rows ra / rb.
  __device__ __forceinline__ float scale_a() const { return e8m0_to_f32(ma); }
  __device__ __forceinline__ float scale_b() const { return e8m0_to_f32(mb); }
};

}  // namespace gptoss::cuda
