// Internal: the per-ISA entry points of the fast family (fast_matmul.h), each with matmul_rows' row-range
// contract (writes y[t, r] for r in [r0, r1), all t < T; y's row stride is W.rows).
#pragma once

#include <cstdint>

#include "backend/cpu/q16.h"
#include "core/matrix.h"

namespace gptoss::cpu {

// MXFP4 W (row-major) times int16 activations x: y[t, r] = sum_b 2^(s-127) * d[t, b] * sum_j w q + bias[r].
// Integer products per 32-column block, one float multiply-add per block.
using Mxfp4Q16RowsFn = void (*)(const MatrixRef& W, const Q16Act& x, int64_t T, const float* bias, float* y,
                               int64_t r0, int64_t r1);
void mxfp4_q16_rows_scalar(const MatrixRef& W, const Q16Act& x, int64_t T, const float* bias, float* y, int64_t r0,
                          int64_t r1);
void mxfp4_q16_rows_avx2(const MatrixRef& W, const Q16Act& x, int64_t T, const float* bias, float* y, int64_t r0,
                        int64_t r1);
void mxfp4_q16_rows_avx512vnni(const MatrixRef& W, const Q16Act& x, int64_t T, const float* bias, float* y,
                              int64_t r0, int64_t r1);

// The fast family's many-token rows are matmul_kernels.h's IsaRows::gemm.

}  // namespace gptoss::cpu
