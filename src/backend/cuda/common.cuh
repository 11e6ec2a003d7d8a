// Device-side helpers shared by the CUDA kernels: weight views, 8-value loads from every stored
// weight format (decoded to f32 in registers), bf16 helpers, warp reductions.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <utility>

#include "backend/cuda/kernels.h"

namespace gptoss::cuda {

// Programmatic dependent launch (Hopper): a kernel launched with launch_dependent may start while the
// previous kernel in the stream still runs (once all of that kernel's blocks have called pdl_trigger or
// exited, and an SM has room). It must call pdl_wait before touching anything that kernel writes; what it
// does before (weights, biases: data no kernel of the step writes) overlaps the previous kernel's tail.
// Both are no-ops for a kernel launched the ordinary way.
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
template <typename... KArgs, typename... Args>
cudaError_t launch_dependent(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t s,
                             Args&&... args) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = s;
  cudaLaunchAttribute attr{};
  attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr.val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = &attr;
  cfg.numAttrs = 1;
  return cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...);
}

// The current device's SM count, read once (host; launches that size their grid by the resident blocks).
inline int device_sms() {
  static const int n = [] {
    int dev = 0, sms = 0;
    cudaGetDevice(&dev);
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
    return sms > 0 ? sms : 1;
  }();
  return n;
}

__device__ __forceinline__ float bf16_bits_to_f32(uint32_t h) { return __uint_as_float(h << 16); }
// A stored f32 or bf16 value as f32 (weights of the transposed dense kernels, KV-cache entries read one at a time).
template <typename T>
__device__ __forceinline__ float to_f32(T v) {
  if constexpr (sizeof(T) == 2)
    return __bfloat162float(v);
  else
    return v;
}

// 2^(s-127), exactly as ldexpf(1, s-127): s=0 is the subnormal 2^-127, s=255 is +inf.
__device__ __forceinline__ float e8m0_to_f32(uint32_t s) {
  return s == 0 ? __uint_as_float(0x00400000u) : __uint_as_float(s << 23);
}

// E2M1 code -> value; callers keep a copy of this table in shared memory, where 16 distinct
// entries lie in 16 distinct banks (no conflicts).
static __device__ __constant__ float kFp4Lut[16] = {0.0f,  0.5f,  1.0f,  1.5f,  2.0f,  3.0f,  4.0f,  6.0f,
                                                    -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

// Values [8*c8, 8*c8+8) of row r of expert e, in two steps so that kernels can issue a batch of
// fetches before decoding any (more loads in flight): fetch8 reads the stored bytes (16 for bf16, two
// 16-byte loads for f32, 4 bytes + the block's scale for MXFP4), decode8 turns them into f32.
// cols % 8 == 0 (dense) or % 32 (MXFP4).
template <int WT>
struct Raw8;
template <>
struct Raw8<kF32> {
  float4 a, b;
};
template <>
struct Raw8<kBF16> {
  uint4 q;
};
template <>
struct Raw8<kMXFP4> {
  uint32_t q, s;
};
// kBF12: the 8 low bytes, the 8 codes (byte k: weight k in bits 0-3, weight 4 + k in bits 4-7) and the row's
// base replicated in every byte (the same register for a whole batch: fetch_batch loads it once per row).
template <>
struct Raw8<kBF12> {
  uint2 lo;
  uint32_t nib, base4;
};

template <int WT>
__device__ __forceinline__ Raw8<WT> fetch8(const WView& w, int e, int64_t r, int64_t c8) {
  Raw8<WT> raw;
  if constexpr (WT == kF32) {
    const float4* p = reinterpret_cast<const float4*>(w.data + e * w.stride) + (r * w.cols) / 4 + 2 * c8;
    raw.a = __ldg(p), raw.b = __ldg(p + 1);
  } else if constexpr (WT == kBF16) {
    raw.q = __ldg(reinterpret_cast<const uint4*>(w.data + e * w.stride) + (r * w.cols) / 8 + c8);
  } else if constexpr (WT == kBF12) {  // single matrices: e == 0
    raw.lo = __ldg(reinterpret_cast<const uint2*>(w.data) + (r * w.cols) / 8 + c8);
    raw.nib = __ldg(reinterpret_cast<const uint32_t*>(w.nib) + (r * w.cols) / 8 + c8);
    raw.base4 = (__ldg(w.meta + r) & 0xffu) * 0x01010101u;
  } else {
    const int64_t nb = w.cols / 32;  // 8 values = 4 bytes of a 16-byte block; block b = c8 / 4
    raw.q = __ldg(reinterpret_cast<const uint32_t*>(w.data + e * w.stride) + r * nb * 4 + c8);
    raw.s = __ldg(w.scales + e * w.scales_stride + r * nb + c8 / 4);
  }
  return raw;
}

template <int WT>
__device__ __forceinline__ void decode8(const Raw8<WT>& raw, const float* lut, float v[8]) {
  if constexpr (WT == kF32) {
    v[0] = raw.a.x, v[1] = raw.a.y, v[2] = raw.a.z, v[3] = raw.a.w;
    v[4] = raw.b.x, v[5] = raw.b.y, v[6] = raw.b.z, v[7] = raw.b.w;
  } else if constexpr (WT == kBF16) {
    const uint32_t u[4] = {raw.q.x, raw.q.y, raw.q.z, raw.q.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      v[2 * i] = __uint_as_float(u[i] << 16);
      v[2 * i + 1] = __uint_as_float(u[i] & 0xffff0000u);
    }
  } else if constexpr (WT == kBF12) {
    // The bf16 high byte of each weight: sign << 7 | (base + offset) (base + 7 <= 127: no carry into the
    // sign), then (low, high) byte pairs -> bf16 pairs -> f32. 3 + 4 + 8 instructions per 8 weights.
    const uint32_t a = raw.nib & 0x0f0f0f0fu, b = (raw.nib >> 4) & 0x0f0f0f0fu;
    const uint32_t ha = ((a & 0x07070707u) + raw.base4) | ((a & 0x08080808u) << 4);
    const uint32_t hb = ((b & 0x07070707u) + raw.base4) | ((b & 0x08080808u) << 4);
    const uint32_t u[4] = {__byte_perm(raw.lo.x, ha, 0x5140), __byte_perm(raw.lo.x, ha, 0x7362),
                           __byte_perm(raw.lo.y, hb, 0x5140), __byte_perm(raw.lo.y, hb, 0x7362)};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      v[2 * i] = __uint_as_float(u[i] << 16);
      v[2 * i + 1] = __uint_as_float(u[i] & 0xffff0000u);
    }
  } else {
    const float s = e8m0_to_f32(raw.s);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const uint32_t byte = (raw.q >> (8 * i)) & 0xffu;
      v[2 * i] = lut[byte & 0xf] * s;
      v[2 * i + 1] = lut[byte >> 4] * s;
    }
  }
}

template <int WT>
__device__ __forceinline__ void load8(const WView& w, int e, int64_t r, int64_t c8, const float* lut, float v[8]) {
  decode8<WT>(fetch8<WT>(w, e, r, c8), lut, v);
}

// sum_i v[i] * x[8c + i] for the 8 floats of x at chunk c (two 16-byte loads).
__device__ __forceinline__ float dot8(const float v[8], const float* x, int64_t c) {
  const float4* xp = reinterpret_cast<const float4*>(x) + 2 * c;
  const float4 a = xp[0], b = xp[1];
  return v[0] * a.x + v[1] * a.y + v[2] * a.z + v[3] * a.w + v[4] * b.x + v[5] * b.y + v[6] * b.z + v[7] * b.w;
}

// acc[t] += (the 8 weights of chunk c, fetched as raw) . x[t] chunk c, for t < T (rows of x `stride` apart).
template <int WT, int NT>
__device__ __forceinline__ void fma_chunk(const Raw8<WT>& raw, const float* lut, const float* x, int64_t stride, int T,
                                          int64_t c, float (&acc)[NT]) {
  float v[8];
  decode8<WT>(raw, lut, v);
#pragma unroll
  for (int t = 0; t < NT; ++t)
    if (t < T) acc[t] += dot8(v, x + t * stride, c);
}

// 8 consecutive values at a 16-byte aligned p (bf16: one 16-byte load; f32: two) as f32: KV-cache and
// embedding rows.
template <typename KT>
__device__ __forceinline__ void load8_kv(const KT* p, float v[8]) {
  if constexpr (sizeof(KT) == 2) {
    const uint4 q = *reinterpret_cast<const uint4*>(p);
    const uint32_t u[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) v[2 * i] = __uint_as_float(u[i] << 16), v[2 * i + 1] = __uint_as_float(u[i] & 0xffff0000u);
  } else {
    const float4 a = reinterpret_cast<const float4*>(p)[0], b = reinterpret_cast<const float4*>(p)[1];
    v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
  }
}

// Chunks per batch: a warp issues kFetchBatch fetches per row before decoding (memory parallelism).
inline constexpr int kFetchBatch = 8;

// The lane's batch of row r: chunks c0, c0 + 32, ... (kFetchBatch of them, those below n8).
template <int WT>
__device__ __forceinline__ void fetch_batch(const WView& w, int64_t r, int64_t c0, int64_t n8,
                                            Raw8<WT> (&raw)[kFetchBatch]) {
  if constexpr (WT == kBF12) {  // the row's base once, not per chunk
    const uint32_t base4 = (__ldg(w.meta + r) & 0xffu) * 0x01010101u;
    const uint2* lo = reinterpret_cast<const uint2*>(w.data) + (r * w.cols) / 8;
    const uint32_t* nib = reinterpret_cast<const uint32_t*>(w.nib) + (r * w.cols) / 8;
#pragma unroll
    for (int u = 0; u < kFetchBatch; ++u)
      if (c0 + u * kWarp < n8) raw[u] = {__ldg(lo + c0 + u * kWarp), __ldg(nib + c0 + u * kWarp), base4};
  } else {
#pragma unroll
    for (int u = 0; u < kFetchBatch; ++u)
      if (c0 + u * kWarp < n8) raw[u] = fetch8<WT>(w, 0, r, c0 + u * kWarp);
  }
}

// kBF12: acc[t] += the escapes' share of row r: each escaped weight was decoded as the row's base value
// (bits base << 8), so (weight - that) * x[col] restores the exact product up to f32 rounding. Lane i takes
// escapes i, i + 32, ... of the row. `first`: the lane's first escape, loaded by the caller while the
// products ran (rows without escapes load nothing).
template <int NT>
__device__ __forceinline__ void bf12_escapes(const WView& w, int64_t r, int lane, float2 first, const float* x,
                                             int64_t stride, int T, float (&acc)[NT]) {
  const uint32_t m0 = __ldg(w.meta + r), m1 = __ldg(w.meta + r + 1);
  const int e0 = int(m0 >> 8), n = int(m1 >> 8) - e0;
  const float enc = __uint_as_float((m0 & 0xffu) << 24);
  for (int i = lane; i < n; i += kWarp) {
    const float2 ent = i == lane ? first : __ldg(w.esc + e0 + i);
    const int col = __float_as_int(ent.x);
    const float d = ent.y - enc;
#pragma unroll
    for (int t = 0; t < NT; ++t)
      if (t < T) acc[t] += d * x[t * stride + col];
  }
}

// acc[t] += W[r, :] . x[t, :] (t < T, rows of x `stride` apart) over the lane's chunks (lane, lane + 32, ...),
// a batch at a time. raw holds the first batch, fetched by the caller (before staging x, so that the two
// latencies overlap).
template <int WT, int NT>
__device__ __forceinline__ void row_dot(const WView& w, int64_t r, int lane, Raw8<WT> (&raw)[kFetchBatch],
                                        const float* lut, const float* x, int64_t stride, int T, float (&acc)[NT]) {
  const int64_t n8 = w.cols / 8;
  float2 esc = {};  // kBF12: the lane's first escape of the row, requested before the products
  if constexpr (WT == kBF12) {
    const uint32_t m0 = __ldg(w.meta + r), m1 = __ldg(w.meta + r + 1);
    if (int(m0 >> 8) + lane < int(m1 >> 8)) esc = __ldg(w.esc + (m0 >> 8) + lane);
  }
  for (int64_t c0 = lane; c0 < n8; c0 += kFetchBatch * kWarp) {
    if (c0 != lane) fetch_batch<WT>(w, r, c0, n8, raw);
#pragma unroll
    for (int u = 0; u < kFetchBatch; ++u) {
      const int64_t c = c0 + u * kWarp;
      if (c >= n8) break;
      fma_chunk<WT>(raw[u], lut, x, stride, T, c, acc);
    }
  }
  if constexpr (WT == kBF12) bf12_escapes(w, r, lane, esc, x, stride, T, acc);
}

// v = hi + lo with hi, lo bf16 (about 16 significant bits): GEMMs on both halves keep prefill
// activations close to f32 while the tensor cores run bf16.
__device__ __forceinline__ void split_bf16x2(float v, __nv_bfloat16* hi, __nv_bfloat16* lo) {
  const __nv_bfloat16 h = __float2bfloat16(v);
  *hi = h;
  *lo = __float2bfloat16(v - __bfloat162float(h));
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Router top-k of one token, by one warp: idx[0, k) = the k largest of logits[0, E) (descending, first
// index on ties), wts = softmax over those k. E <= kMaxExperts, k <= kMaxTopK. Logits are read with
// __ldcg (L2): the fused router kernel reads values other blocks wrote in the same launch.
inline constexpr int kMaxExperts = 256;  // 8 logits per lane
inline constexpr int kMaxTopK = 8;
// idx[j] = sel_i[j], wts[j] = softmax over the k selected logits sel_v (descending): the one expression of the
// routing weights for every kernel that picks experts.
__device__ __forceinline__ void store_topk_softmax(const float* sel_v, const int* sel_i, int k, int32_t* idx,
                                                   float* wts) {
  float sum = 0.0f;
  for (int j = 0; j < k; ++j) sum += expf(sel_v[j] - sel_v[0]);
  for (int j = 0; j < k; ++j) {
    idx[j] = sel_i[j];
    wts[j] = expf(sel_v[j] - sel_v[0]) / sum;
  }
}
__device__ __forceinline__ void warp_topk_softmax(const float* logits, int E, int k, int32_t* idx, float* wts) {
  const int lane = threadIdx.x % kWarp;
  float v[kMaxExperts / kWarp];
#pragma unroll
  for (int i = 0; i < kMaxExperts / kWarp; ++i) {
    const int e = lane + kWarp * i;
    v[i] = e < E ? __ldcg(logits + e) : -INFINITY;
  }
  float sel_v[kMaxTopK];
  int sel_i[kMaxTopK];
#pragma unroll
  for (int j = 0; j < kMaxTopK; ++j) {
    if (j >= k) break;
    float best = -INFINITY;
    int bi = 0x7fffffff;
#pragma unroll
    for (int i = 0; i < kMaxExperts / kWarp; ++i) {
      const int e = lane + kWarp * i;
      if (e < E && (v[i] > best || bi == 0x7fffffff)) best = v[i], bi = e;
    }
    for (int o = 16; o > 0; o >>= 1) {
      const float ov = __shfl_xor_sync(0xffffffffu, best, o);
      const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
      if (ov > best || (ov == best && oi < bi)) best = ov, bi = oi;
    }
    sel_v[j] = best, sel_i[j] = bi;
#pragma unroll
    for (int i = 0; i < kMaxExperts / kWarp; ++i)
      if (lane + kWarp * i == bi) v[i] = -INFINITY;
  }
  if (lane == 0) store_topk_softmax(sel_v, sel_i, k, idx, wts);
}

// Sum (is_max false) or maximum of v over the block, returned to every thread; red: 32 floats of shared
// memory, reusable by the next call (the leading barrier waits for the earlier call's reads).
__device__ __forceinline__ float block_reduce(float v, bool is_max, float* red) {
  v = is_max ? warp_max(v) : warp_sum(v);
  __syncthreads();
  if (threadIdx.x % kWarp == 0) red[threadIdx.x / kWarp] = v;
  __syncthreads();
  float r = red[0];
  for (int w = 1; w < int(blockDim.x / kWarp); ++w) r = is_max ? fmaxf(r, red[w]) : r + red[w];
  return r;
}

// YaRN RoPE (half-split) of the pair (a, b) = (x[j], x[j + d/2]) at position p, with inv_freq = inv_freq[j]:
// the angle is one f32 multiply, as in transformers (docs/MODEL.md §4.4). Every RoPE kernel calls this.
__device__ __forceinline__ float2 rope_pair(float a, float b, int p, float inv_freq, float mscale) {
  const float angle = float(p) * inv_freq;
  const float c = cosf(angle) * mscale, sn = sinf(angle) * mscale;
  return make_float2(a * c - b * sn, b * c + a * sn);
}

// The clamped SwiGLU of gpt-oss (docs/MODEL.md §4.5): (clamp(up) + 1) * g * sigmoid(1.702 g), g = min(gate, limit).
__device__ __forceinline__ float swiglu_clamped(float gate, float up, float limit) {
  gate = fminf(gate, limit);
  up = fminf(fmaxf(up, -limit), limit);
  return (up + 1.0f) * (gate / (1.0f + expf(-1.702f * gate)));
}

}  // namespace gptoss::cuda
