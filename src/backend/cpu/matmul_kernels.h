// Internal: the per-ISA entry points behind matmul.h. Each has matmul_rows' contract.
#pragma once

#include <cstdint>

#include "core/matrix.h"

namespace gptoss::cpu {

using MatmulRowsFn = void (*)(const MatrixRef& W, const float* x, int64_t T, const float* bias, float* y,
                              int64_t r0, int64_t r1);

void matmul_rows_scalar(const MatrixRef& W, const float* x, int64_t T, const float* bias, float* y,
                        int64_t r0, int64_t r1);
void matmul_rows_avx2(const MatrixRef& W, const float* x, int64_t T, const float* bias, float* y, int64_t r0,
                      int64_t r1);
void matmul_rows_avx512(const MatrixRef& W, const float* x, int64_t T, const float* bias, float* y,
                        int64_t r0, int64_t r1);

}  // namespace gptoss::cpu
