// MXFP4 x int16 rows with AVX512-VNNI: vpdpwssd on ymm (AVX512VL) does the int16 products, the sums of
// pairs and the accumulation into int32 in one instruction (one vpmaddwd + one vpdpwssd per block: even and
// odd columns). The file is built with the AVX-512 family's flags and VNNI's (src/CMakeLists.txt: this file
// only); it is used only where the CPU reports VNNI.
#include "backend/cpu/avx512_intrin.h"  // first: see there

#include "backend/cpu/fast_kernels.h"
#include "backend/cpu/mxfp4_q16_tile.h"

namespace gptoss::cpu {
namespace {

struct DotVnni {
  static __m256i dot(__m256i we, __m256i wo, __m256i xe, __m256i xo) {
    return _mm256_dpwssd_epi32(_mm256_madd_epi16(we, xe), wo, xo);
  }
};

}  // namespace

void mxfp4_q16_rows_avx512vnni(const MatrixRef& W, const Q16Act& x, int64_t T, const float* bias, float* y,
                              int64_t r0, int64_t r1) {
  q16tile::rows<DotVnni>(W, x, T, bias, y, r0, r1);
}

}  // namespace gptoss::cpu
