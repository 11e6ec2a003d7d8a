// MXFP4 x int16 rows with AVX512-VNNI: vpdpwssd on ymm (AVX512VL) does the int16 products, the sums of
// pairs and the accumulation into int32 in one instruction (per block pair: two chains of one vpmaddwd and
// one vpdpwssd, then one vpaddd). The file is built with the AVX-512 family's flags and VNNI's
// (src/CMakeLists.txt: this file only); it is used only where the CPU reports VNNI.
#include "backend/cpu/avx512_intrin.h"  // first: see there

#include "backend/cpu/fast_kernels.h"
#include "backend/cpu/mxfp4_q16_tile.h"

namespace gptoss::cpu {
namespace {

struct DotVnni {
  static __m256i dot4(const __m256i w[4], const int16_t* x) {
    const __m256i* v = reinterpret_cast<const __m256i*>(x);
    const __m256i a =
        _mm256_dpwssd_epi32(_mm256_madd_epi16(w[0], _mm256_loadu_si256(v)), w[1], _mm256_loadu_si256(v + 1));
    const __m256i b =
        _mm256_dpwssd_epi32(_mm256_madd_epi16(w[2], _mm256_loadu_si256(v + 2)), w[3], _mm256_loadu_si256(v + 3));
    return _mm256_add_epi32(a, b);
  }
};

}  // namespace

void mxfp4_q16_rows_avx512vnni(const MatrixRef& W, const Q16Act& x, int64_t T, const float* bias, float* y,
                              int64_t r0, int64_t r1) {
  q16tile::rows<DotVnni>(W, x, T, bias, y, r0, r1);
}

}  // namespace gptoss::cpu
