// The matrix kernels on 16-lane zmm registers (AVX-512 F, BW, VL, DQ): the exact family (matmul_tile.h) and the
// fast family's many-token kernel (gemm_tile.h), both over the one VecAvx512 below.
//   bf16: 32 values = one 64-byte load; (v << 16) gives the even elements as f32, (v & 0xFFFF0000) the odd.
//   MXFP4: one 16-byte block zero-extended to 16 dwords; vpermps looks up the low nibble (bits 0..3) in a
//          16-entry table of E2M1 values pre-multiplied by the block's 2^(s-127) (exact: a power of two),
//          giving the even elements; the same after >> 4 gives the odd ones.
// Tiles are 4 rows x up to 4 tokens; a lone token keeps two FMA chains per row (one per half segment) to
// hide FMA latency. The order of the sums is this ISA's own (16 lanes, those chains), as before the template.
#include "backend/cpu/avx512_intrin.h"  // first: see there

#include "backend/cpu/gemm_tile.h"
#include "backend/cpu/matmul_kernels.h"
#include "backend/cpu/matmul_tile.h"
#include "core/mxfp4.h"

namespace gptoss::cpu {
namespace {

const Mxfp4ScaleTable kScales(1.0f);

struct VecAvx512 {
  using T = __m512;
  static constexpr int kLanes = 16;
  static constexpr int kTokenTile = 4;
  static constexpr bool kTwoChainsForOneToken = true;
  static constexpr int64_t kMxfp4PrefetchBlocks = 512;  // 8 KiB ahead: several rows of the next 4-row tiles
  // Transposed storage: 256 outputs in 16 zmm while c runs over all columns (an earlier version that
  // accumulated in y through memory ran 8x slower on AMD Zen).
  static constexpr int kChunkVecs = 16;

  static __mmask16 first(int n) { return __mmask16((1u << n) - 1); }  // lanes [0, n), 0 <= n <= 16

  static T zero() { return _mm512_setzero_ps(); }
  static T set1(float v) { return _mm512_set1_ps(v); }
  static T load(const float* p) { return _mm512_loadu_ps(p); }
  static T add(T a, T b) { return _mm512_add_ps(a, b); }
  static T fma(T a, T b, T c) { return _mm512_fmadd_ps(a, b, c); }
  static void store(float* p, T v) { _mm512_storeu_ps(p, v); }
  static float hsum(T v) { return _mm512_reduce_add_ps(v); }
  static T load_part(const float* p, int n) { return _mm512_maskz_loadu_ps(first(n), p); }
  static void store_part(float* p, T v, int n) { _mm512_mask_storeu_ps(p, first(n), v); }
  static T load_bf16(const uint16_t* p) {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
  static T load_bf16_part(const uint16_t* p, int n) {
    const __m256i h = _mm256_maskz_loadu_epi16(first(n), p);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }

  // 32 bf16 -> w[0] = even cols 0..30, w[1] = odd cols 1..31.
  static void bf16_segment(const uint16_t* p, T* w) {
    const __m512i v = _mm512_loadu_si512(p);
    w[0] = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
    w[1] = _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32(int(0xFFFF0000u))));
  }
  // One 16-byte block (32 E2M1 values) and its scale byte -> the same order as bf16_segment.
  static void mxfp4_segment(const uint8_t* block, uint8_t scale, T* w) {
    const __m512 table = _mm512_mul_ps(_mm512_loadu_ps(kFp4Values), _mm512_set1_ps(kScales.v[scale]));
    const __m512i q = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(block)));
    w[0] = _mm512_permutexvar_ps(q, table);
    w[1] = _mm512_permutexvar_ps(_mm512_srli_epi32(q, 4), table);
  }
};

}  // namespace

const IsaRows kAvx512Rows{matmultile::rows<VecAvx512>, gemmtile::rows<VecAvx512>};

}  // namespace gptoss::cpu
