// Internal: the per-ISA entry points behind matmul.h. Each has matmul_rows' contract.
#pragma once

#include <cstdint>

#include "core/matrix.h"

namespace gptoss::cpu {

using MatmulRowsFn = void (*)(const MatrixRef& W, const float* x, int64_t T, const float* bias, float* y,
                              int64_t r0, int64_t r1);

void matmul_rows_scalar(const MatrixRef& W, const float* x, int64_t T, const float* bias, float* y,
                        int64_t r0, int64_t r1);

// What each SIMD ISA file (matmul_avx2.cpp, matmul_avx512.cpp) provides over its one vector traits type, both
// with the contract above:
struct IsaRows {
  MatmulRowsFn exact;  // the exact family (matmul_tile.h)
  // The fast family's many-token rows (gemm_tile.h): row-major W (f32, bf16 or MXFP4; cols % 16 == 0) times f32
  // x for many tokens; each group of 4 rows is decoded once to f32 and multiplied with every token (4 rows x 3
  // tokens of f32 FMAs per step), so the decode cost is shared by the tokens. Accumulation order differs from
  // the exact kernels.
  MatmulRowsFn gemm;
};
extern const IsaRows kAvx2Rows;
extern const IsaRows kAvx512Rows;

}  // namespace gptoss::cpu
