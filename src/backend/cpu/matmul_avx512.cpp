// Placeholder until the avx512 kernels land: forwards to the reference kernels.
#include "backend/cpu/matmul_kernels.h"

namespace gptoss::cpu {

void matmul_rows_avx512(const MatrixRef& W, const float* x, int64_t T, const float* bias, float* y, int64_t r0,
                      int64_t r1) {
  matmul_rows_scalar(W, x, T, bias, y, r0, r1);
}

}  // namespace gptoss::cpu
