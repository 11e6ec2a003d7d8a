// Internal: the per-ISA entry points behind matmul.h. Each has matmul_rows' contract.
#pragma once

#include <cstdint>

#include "core/matrix.h"

namespace gptoss::cpu {

using MatmulRowsFn = void (*)(const MatrixRef& W, const float* x, int64_t T, const float* bias, float* y,
                              int64_t r0, int64_t r1);

void matmul_rows_scalar(const MatrixRef& W, const float* x, int64_t T, const float* bias, float* y,
                        int64_t r0, int64_t r1);

// What each SIMD ISA file (matmul_avx2.cpp, matmul_avx512.cpp) provides over its one vector traits type: the
// exact family's rows (matmul_tile.h) and the fast family's many-token rows (gemm_tile.h, fast_kernels.h), both
// with the contract above.
struct IsaRows {
  MatmulRowsFn exact;
  MatmulRowsFn gemm;
};
extern const IsaRows kAvx2Rows;
extern const IsaRows kAvx512Rows;

}  // namespace gptoss::cpu
