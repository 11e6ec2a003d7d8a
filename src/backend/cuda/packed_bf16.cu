// Lossless packing of bf16 weight matrices for the decode products, which are bound by reading them: 12
// bits per weight plus a few escapes instead of 16 (the 20b's lm_head is 1.16 GB of its 3.7 GB per token).
//
// A bf16 is [sign | exponent (8) | mantissa (7)]; its low byte (exponent bit 0, mantissa) is stored as it is.
// Its high byte (sign, exponent bits 7..1) is stored as a 4-bit code: sign << 3 | (h - base), where h = the
// exponent's upper 7 bits and base = max(0, max over the row of h - 7). The codes cover exponents 2 base ..
// 2 base + 15, the row's largest is 2 base + 14 or + 15, so every weight whose exponent is at most 14 below the
// largest decodes exactly; the rest (zeros, and smaller values: 7.6e-5 of the weights of the random 20b
// checkpoint, whose weights are normal-like) are "escapes": coded as 0 (decoded as the value
// with bits base << 8) and listed per row as (column, weight), so the products add (weight - that) * x.
// The planes decode back to the identical bf16 matrix (launch_weight_to_bf16 + launch_bf12_patch_escapes).
//
// Layout (kernels.h, kBF12): lo [rows, cols] bytes; nib [rows, cols / 2]: the 32-bit word of 8-column chunk
// c holds in byte k the code of column 8c + k (bits 0-3) and of column 8c + 4 + k (bits 4-7), so that two
// masks give the codes of 4 columns in byte order; meta [rows + 1] = (index of the row's first escape) << 8
// | base; esc: {column (int bits), weight} in row, then column order.
#include "backend/cuda/common.cuh"

namespace gptoss::cuda {

namespace {

__device__ __forceinline__ uint32_t high7(uint32_t bits) { return (bits >> 8) & 0x7fu; }

// Warp per row: base[r] and the number of weights outside the window.
__global__ void bf16_pack_rows(const uint16_t* __restrict__ w, int64_t rows, int64_t cols, uint8_t* __restrict__ base,
                               uint32_t* __restrict__ cnt) {
  const int64_t r = int64_t(blockIdx.x) * (blockDim.x / kWarp) + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (r >= rows) return;
  const uint16_t* row = w + r * cols;
  uint32_t hmax = 0;
  for (int64_t c = lane; c < cols; c += kWarp) hmax = max(hmax, high7(row[c]));
  for (int o = 16; o > 0; o >>= 1) hmax = max(hmax, __shfl_xor_sync(0xffffffffu, hmax, o));
  const uint32_t b = hmax >= 7 ? hmax - 7 : 0;
  uint32_t n = 0;
  for (int64_t c = lane; c < cols; c += kWarp) n += high7(row[c]) < b;
  for (int o = 16; o > 0; o >>= 1) n += __shfl_xor_sync(0xffffffffu, n, o);
  if (lane == 0) base[r] = uint8_t(b), cnt[r] = n;
}

// Warp per row, lane per 8-column chunk: the two planes, and the escapes at the row's offset in column order
// (a warp-wide prefix of the lanes' counts per pass).
__global__ void bf16_pack(const uint16_t* __restrict__ w, int64_t rows, int64_t cols, const uint32_t* __restrict__ meta,
                          uint8_t* __restrict__ lo, uint8_t* __restrict__ nib, float2* __restrict__ esc) {
  const int64_t r = int64_t(blockIdx.x) * (blockDim.x / kWarp) + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (r >= rows) return;
  const uint32_t b = meta[r] & 0xffu;
  uint32_t next = meta[r] >> 8;  // the row's next escape slot
  const int64_t n8 = cols / 8;
  for (int64_t c0 = 0; c0 < n8; c0 += kWarp) {
    const int64_t c = c0 + lane;
    uint32_t lo2[2] = {0, 0}, word = 0, mask = 0;
    uint16_t v[8] = {};
    if (c < n8) {
      const uint4 q = *reinterpret_cast<const uint4*>(w + r * cols + 8 * c);
      const uint32_t u[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        v[j] = uint16_t(j % 2 ? u[j / 2] >> 16 : u[j / 2] & 0xffffu);
        const uint32_t h = high7(v[j]);
        uint32_t code = 0, low = 0;
        if (h >= b) {
          code = (uint32_t(v[j]) >> 15) << 3 | (h - b);
          low = v[j] & 0xffu;
        } else {
          mask |= 1u << j;
        }
        lo2[j / 4] |= low << (8 * (j % 4));
        word |= code << (8 * (j % 4) + 4 * (j / 4));
      }
      reinterpret_cast<uint2*>(lo + r * cols)[c] = make_uint2(lo2[0], lo2[1]);
      reinterpret_cast<uint32_t*>(nib + r * (cols / 2))[c] = word;
    }
    const uint32_t n = __popc(mask);
    uint32_t before = n;  // inclusive prefix over the lanes
    for (int o = 1; o < kWarp; o <<= 1) {
      const uint32_t t = __shfl_up_sync(0xffffffffu, before, o);
      if (lane >= o) before += t;
    }
    uint32_t at = next + before - n;
    for (int j = 0; j < 8; ++j)
      if (mask >> j & 1u) esc[at++] = make_float2(__int_as_float(int(8 * c + j)), __uint_as_float(uint32_t(v[j]) << 16));
    next += __shfl_sync(0xffffffffu, before, kWarp - 1);
  }
}

// Thread per row: the escapes' exact values over the decoded planes.
__global__ void bf12_patch_escapes(WView w, __nv_bfloat16* __restrict__ out) {
  const int64_t r = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= w.rows) return;
  for (uint32_t i = w.meta[r] >> 8; i < (w.meta[r + 1] >> 8); ++i) {
    const float2 e = w.esc[i];
    out[r * w.cols + __float_as_int(e.x)] = __float2bfloat16(e.y);  // exact: e.y is a bf16 value
  }
}

}  // namespace

void launch_bf16_pack_rows(const uint16_t* w, int64_t rows, int64_t cols, uint8_t* base, uint32_t* cnt, cudaStream_t s) {
  bf16_pack_rows<<<unsigned((rows + 7) / 8), 8 * kWarp, 0, s>>>(w, rows, cols, base, cnt);
}

void launch_bf16_pack(const uint16_t* w, int64_t rows, int64_t cols, const uint32_t* meta, uint8_t* lo, uint8_t* nib,
                      float2* esc, cudaStream_t s) {
  bf16_pack<<<unsigned((rows + 7) / 8), 8 * kWarp, 0, s>>>(w, rows, cols, meta, lo, nib, esc);
}

void launch_bf12_patch_escapes(const WView& w, __nv_bfloat16* out, cudaStream_t s) {
  bf12_patch_escapes<<<unsigned((w.rows + 255) / 256), 256, 0, s>>>(w, out);
}

}  // namespace gptoss::cuda
