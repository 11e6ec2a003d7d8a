// The fast family of matrix products (--cpu-math fast, the default): results within about 1e-4 relative of
// the exact family (matmul.h), not bit-identical to it.
//   MXFP4, fewer than 12 tokens (decode, batched decode, small experts' shares of a prefill): activations
//     quantized to int16 in blocks of 32 (q16.h), integer products of the MXFP4 codes (2 x E2M1 is an exact
//     integer) with them, one float scale per block.
//   Row-major f32 / bf16 / MXFP4, many tokens (prefill): rows decoded once to f32 and shared by all the
//     tokens (gemm_tile.h), f32 accumulation in a different order than the exact kernels.
//   Anything else (bf16 decode, transposed dense weights): the exact kernels, already at the memory bound.
// The ISA follows matmul.h's choice (set_matmul_isa): avx512 (VNNI where present), avx2 or scalar.
#pragma once

#include <cstdint>

#include "backend/cpu/fast_kernels.h"
#include "backend/cpu/matmul_kernels.h"
#include "backend/cpu/q16.h"
#include "core/matrix.h"
#include "core/threadpool.h"

namespace gptoss::cpu {

// Tokens from which row-major products use the many-token kernel: dense weights from 4 (below, the exact
// kernels' 2-token tiles are as fast), MXFP4 from 12 (below, the int16 kernel with its 4-token tiles is faster;
// the two trade places between 12 and 16 on AVX2, bench_matmul --math fast-q16|fast-gemm, bench/cpu_notes.md).
inline constexpr int64_t kFastGemmMinTokens = 4;
inline constexpr int64_t kFastGemmMinTokensMxfp4 = 12;

// Which kernel the fast family runs for MXFP4 weights: chosen by T (Auto, the default), or one of them for
// every T (benchmarks comparing the two at the same T; process-wide).
enum class FastMxfp4Kernel { Auto, Q16, Gemm };
void set_fast_mxfp4_kernel(FastMxfp4Kernel k);

// matmul()'s contract (y[t, r] = sum_c W[r, c] x[t, c] + bias[r]) with the fast kernels.
void matmul_fast(const MatrixRef& W, const float* x, int64_t T, const float* bias, float* y, ThreadPool& pool);

// One product whose parts the caller runs as jobs of its own (matmul_fast splits it over the pool; the MoE runs
// the rows of all its experts in one pool dispatch): run(t0, t1, r0, r1) writes y[t, r] for t in [t0, t1),
// r in [r0, r1), on any thread, with the kernel matmul_fast picks for W and T (fast) or matmul's (exact).
// prepare() runs on one thread (it quantizes x for the int16 kernel); x, bias and y stay the caller's and must
// outlive the run() calls.
class RowProduct {
 public:
  void prepare(const MatrixRef& W, const float* x, int64_t T, const float* bias, float* y, bool fast);
  void run(int64_t t0, int64_t t1, int64_t r0, int64_t r1) const;
  void rows(int64_t r0, int64_t r1) const { run(0, t_, r0, r1); }

 private:
  MatrixRef w_{};
  const float* x_ = nullptr;
  const float* bias_ = nullptr;
  float* y_ = nullptr;
  int64_t t_ = 0;
  MatmulRowsFn fn_ = nullptr;     // f32 x: exact or many-token rows
  Mxfp4Q16RowsFn q16_ = nullptr;  // int16 x: q_
  Q16Buffer qbuf_;
  Q16Act q_{};
};

// The kernel matmul_fast runs for W and T on the current ISA, e.g. "mxfp4-q16/avx2", "gemm/avx512",
// "exact/avx2" (tests and benchmarks).
const char* fast_kernel_name(const MatrixRef& W, int64_t T);

// Whether this CPU has AVX512-VNNI (the int16 dot product used by the avx512 family's MXFP4 kernel).
bool cpu_has_avx512_vnni();

}  // namespace gptoss::cpu
