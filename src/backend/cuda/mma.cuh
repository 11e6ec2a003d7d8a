// Tensor-core helpers for the attention and MXFP4 decode kernels: bf16 / f16 pair packing (hi/lo splits),
// mma.sync m16n8k16, ldmatrix and cp.async. Fragment layouts (PTX ISA, mma.m16n8k16 .bf16): with g = lane / 4 and
// c = 2 * (lane % 4), A (16x16, row-major) regs = {A[g][c..c+1], A[g+8][c..c+1], A[g][c+8..], A[g+8][c+8..]},
// B (16x8, "col") regs = {B[c..c+1][g], B[c+8..c+9][g]}, C/D (16x8 f32) = {C[g][c], C[g][c+1], C[g+8][c],
// C[g+8][c+1]}; the lower column / k index sits in the low 16 bits of a register.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace gptoss::cuda {

__device__ __forceinline__ uint32_t pack_bf16(float a, float b) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(a, b);  // a in the low half (lower column index)
  return *reinterpret_cast<const uint32_t*>(&v);
}
// hi = bf16(a, b), lo = bf16(a - hi.a, b - hi.b)
__device__ __forceinline__ void pack_hilo(float a, float b, uint32_t& hi, uint32_t& lo) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
  const float2 hf = __bfloat1622float2(h);
  hi = *reinterpret_cast<const uint32_t*>(&h);
  lo = pack_bf16(a - hf.x, b - hf.y);
}

// The same pair in f16 (hi = f16(a, b), lo = the f16 of what hi missed): about 22 significant bits.
__device__ __forceinline__ void pack_hilo_f16(float a, float b, uint32_t& hi, uint32_t& lo) {
  const __half2 h = __floats2half2_rn(a, b);
  const float2 hf = __half22float2(h);
  const __half2 l = __floats2half2_rn(a - hf.x, b - hf.y);
  memcpy(&hi, &h, 4);
  memcpy(&lo, &l, 4);
}

// d[4] += a[4] (16x16 bf16, row-major fragment) * b[2] (16x8 bf16, column fragment)
__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// The same with f16 operands (the MXFP4 decode kernels: E2M1 codes are exact in f16).
__device__ __forceinline__ void mma_f16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// ldmatrix: lanes 0-7 (matrix 0) and 8-15 (matrix 1) give the addresses of 8 rows of 16 bytes each; every
// lane receives its fragment of both 8x8 bf16 matrices (trans: of their transposes).
__device__ __forceinline__ void ldmatrix_x2(uint32_t& r0, uint32_t& r1, const void* row) {
  const uint32_t a = uint32_t(__cvta_generic_to_shared(row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n" : "=r"(r0), "=r"(r1) : "r"(a));
}
__device__ __forceinline__ void ldmatrix_x2_trans(uint32_t& r0, uint32_t& r1, const void* row) {
  const uint32_t a = uint32_t(__cvta_generic_to_shared(row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n" : "=r"(r0), "=r"(r1) : "r"(a));
}
// 16-byte asynchronous copy global -> shared (bypassing L1), grouped by commit / wait.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
  const uint32_t a = uint32_t(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(a), "l"(gmem) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

}  // namespace gptoss::cuda
