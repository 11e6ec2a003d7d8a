// MXFP4 x int16 rows on AVX2: vpmaddwd (int16 products, pairs summed to int32) on the even and the odd
// columns, then one vpaddd.
#include <immintrin.h>

#include "backend/cpu/fast_kernels.h"
#include "backend/cpu/mxfp4_q16_tile.h"

namespace gptoss::cpu {
namespace {

struct DotAvx2 {
  static __m256i dot(__m256i we, __m256i wo, __m256i xe, __m256i xo) {
    return _mm256_add_epi32(_mm256_madd_epi16(we, xe), _mm256_madd_epi16(wo, xo));
  }
};

}  // namespace

void mxfp4_q16_rows_avx2(const MatrixRef& W, const Q16Act& x, int64_t T, const float* bias, float* y, int64_t r0,
                        int64_t r1) {
  q16tile::rows<DotAvx2>(W, x, T, bias, y, r0, r1);
}

}  // namespace gptoss::cpu
