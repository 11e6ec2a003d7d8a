// MXFP4 x int16 rows on AVX2: vpmaddwd (int16 products, pairs summed to int32) on each of a block pair's four
// vectors, then three vpaddd.
#include <immintrin.h>

#include "backend/cpu/fast_kernels.h"
#include "backend/cpu/mxfp4_q16_tile.h"

namespace gptoss::cpu {
namespace {

struct DotAvx2 {
  static __m256i dot4(const __m256i w[4], const int16_t* x) {
    const __m256i* v = reinterpret_cast<const __m256i*>(x);
    const __m256i a = _mm256_add_epi32(_mm256_madd_epi16(w[0], _mm256_loadu_si256(v)),
                                       _mm256_madd_epi16(w[1], _mm256_loadu_si256(v + 1)));
    const __m256i b = _mm256_add_epi32(_mm256_madd_epi16(w[2], _mm256_loadu_si256(v + 2)),
                                       _mm256_madd_epi16(w[3], _mm256_loadu_si256(v + 3)));
    return _mm256_add_epi32(a, b);
  }
};

}  // namespace

void mxfp4_q16_rows_avx2(const MatrixRef& W, const Q16Act& x, int64_t T, const float* bias, float* y, int64_t r0,
                        int64_t r1) {
  q16tile::rows<DotAvx2>(W, x, T, bias, y, r0, r1);
}

}  // namespace gptoss::cpu
