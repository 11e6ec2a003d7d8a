// The fast family's many-token kernel (gemm_tile.h) on 8-lane ymm registers.
#include <immintrin.h>

#include "backend/cpu/fast_kernels.h"
#include "backend/cpu/gemm_tile.h"
#include "backend/cpu/ymm_hsum.h"

namespace gptoss::cpu {
namespace {

struct VecAvx2 {
  using T = __m256;
  static constexpr int kLanes = 8;
  static T zero() { return _mm256_setzero_ps(); }
  static T load(const float* p) { return _mm256_loadu_ps(p); }
  static T fma(T a, T b, T c) { return _mm256_fmadd_ps(a, b, c); }
  static float hsum(T v) { return hsum_ymm(v); }
};

}  // namespace

void gemm_rows_avx2(const MatrixRef& W, const float* x, int64_t T, const float* bias, float* y, int64_t r0,
                    int64_t r1) {
  gemmtile::rows<VecAvx2>(W, x, T, bias, y, r0, r1);
}

}  // namespace gptoss::cpu
