// The matrix kernels on 8-lane ymm registers (AVX2 + FMA): the exact family (matmul_tile.h) and the fast family's
// many-token kernel (gemm_tile.h), both over the one VecAvx2 below.
//   bf16: 32 values = two 32-byte loads a, b; (v << 16) gives the even elements, (v & 0xFFFF0000) the odd.
//   MXFP4: vpshufb looks the nibbles up as int8 (2 x the E2M1 value), sign-extended and converted to f32,
//          then multiplied by 2^(s-128) (the block scale, halved for the doubled table; exact).
// Tiles are 4 rows x up to 3 tokens (12 accumulators of the 16 ymm). Each output keeps one FMA chain, so
// the token tile does not change the sums here: 3 was picked for speed (2 tokens before the template, 7-20%
// slower at T = 64 on one thread of the AVX2 VM; 4 spills).
#include <immintrin.h>

#include <cstring>

#include "backend/cpu/gemm_tile.h"
#include "backend/cpu/matmul_kernels.h"
#include "backend/cpu/matmul_tile.h"
#include "backend/cpu/ymm_hsum.h"

namespace gptoss::cpu {
namespace {

const Mxfp4ScaleTable kHalfScales(0.5f);  // undoes the doubled E2M1 table

struct VecAvx2 {
  using T = __m256;
  static constexpr int kLanes = 8;
  static constexpr int kTokenTile = 3;
  static constexpr bool kTwoChainsForOneToken = false;
  static constexpr int64_t kMxfp4PrefetchBlocks = 0;
  // Transposed storage through y: 64 outputs in registers streamed [cols, 64] blocks at a large stride and
  // ran at half the speed of contiguous 4-row passes (bench_matmul, bf16^T, on this AVX2 VM).
  static constexpr int kChunkVecs = 0;

  static T zero() { return _mm256_setzero_ps(); }
  static T set1(float v) { return _mm256_set1_ps(v); }
  static T load(const float* p) { return _mm256_loadu_ps(p); }
  static T add(T a, T b) { return _mm256_add_ps(a, b); }
  static T fma(T a, T b, T c) { return _mm256_fmadd_ps(a, b, c); }
  static void store(float* p, T v) { _mm256_storeu_ps(p, v); }
  static float hsum(T v) { return hsum_ymm(v); }
  // Lanes [0, n) of p (0 <= n <= 8), the rest zero / not written.
  static T load_part(const float* p, int n) {
    alignas(32) float buf[kLanes] = {};
    std::memcpy(buf, p, size_t(n) * sizeof(float));
    return _mm256_load_ps(buf);
  }
  static void store_part(float* p, T v, int n) {
    alignas(32) float buf[kLanes];
    _mm256_store_ps(buf, v);
    std::memcpy(p, buf, size_t(n) * sizeof(float));
  }
  static T load_bf16(const uint16_t* p) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
  static T load_bf16_part(const uint16_t* p, int n) {
    alignas(16) uint16_t buf[kLanes] = {};
    std::memcpy(buf, p, size_t(n) * sizeof(uint16_t));
    return load_bf16(buf);
  }

  // 32 bf16 -> w[0] = even cols 0..14, w[1] = even 16..30, w[2] = odd 1..15, w[3] = odd 17..31.
  static void bf16_segment(const uint16_t* p, T* w) {
    const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 16));
    const __m256i hi = _mm256_set1_epi32(int(0xFFFF0000u));
    w[0] = _mm256_castsi256_ps(_mm256_slli_epi32(a, 16));
    w[1] = _mm256_castsi256_ps(_mm256_slli_epi32(b, 16));
    w[2] = _mm256_castsi256_ps(_mm256_and_si256(a, hi));
    w[3] = _mm256_castsi256_ps(_mm256_and_si256(b, hi));
  }
  // One 16-byte block (32 E2M1 values) and its scale byte -> the same order as bf16_segment.
  static void mxfp4_segment(const uint8_t* block, uint8_t scale, T* w) {
    // 2 x E2M1 as int8: 0, 1, 2, 3, 4, 6, 8, 12, then the negatives.
    const __m128i lut = _mm_setr_epi8(0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12);
    const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(block));
    const __m128i nib = _mm_set1_epi8(0x0F);
    const __m128i lo = _mm_shuffle_epi8(lut, _mm_and_si128(q, nib));
    const __m128i hi = _mm_shuffle_epi8(lut, _mm_and_si128(_mm_srli_epi16(q, 4), nib));
    const __m256 s = _mm256_set1_ps(kHalfScales.v[scale]);
    w[0] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo)), s);
    w[1] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8))), s);
    w[2] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi)), s);
    w[3] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8))), s);
  }
};

}  // namespace

const IsaRows kAvx2Rows{matmultile::rows<VecAvx2>, gemmtile::rows<VecAvx2>};

}  // namespace gptoss::cpu
