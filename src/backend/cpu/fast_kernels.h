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

// The many-token rows (matmul_kernels.h's IsaRows::gemm): row-major W (f32, bf16 or MXFP4; cols % 16 == 0)
// times f32 x for many tokens: each group of 4 rows is decoded once to f32 and then multiplied with every token
// (4 rows x 3 tokens of f32 FMAs per step), so the decode cost is shared by the tokens. Accumulation order
// differs from the exact kernels.

}  // namespace gptoss::cpu
