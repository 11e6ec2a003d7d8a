// The fast family's many-token kernel (gemm_tile.h) on 16-lane zmm registers.
#include "backend/cpu/avx512_intrin.h"  // first: see there

#include "backend/cpu/fast_kernels.h"
#include "backend/cpu/gemm_tile.h"

namespace gptoss::cpu {
namespace {

struct VecAvx512 {
  using T = __m512;
  static constexpr int kLanes = 16;
  static T zero() { return _mm512_setzero_ps(); }
  static T load(const float* p) { return _mm512_loadu_ps(p); }
  static T fma(T a, T b, T c) { return _mm512_fmadd_ps(a, b, c); }
  static float hsum(T v) { return _mm512_reduce_add_ps(v); }
};

}  // namespace

void gemm_rows_avx512(const MatrixRef& W, const float* x, int64_t T, const float* bias, float* y, int64_t r0,
                      int64_t r1) {
  gemmtile::rows<VecAvx512>(W, x, T, bias, y, r0, r1);
}

}  // namespace gptoss::cpu
