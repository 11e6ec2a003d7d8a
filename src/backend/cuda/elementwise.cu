// Small memory-bound kernels: embedding lookup, RMSNorm, residual add, dtype conversion, bias. The device
// draws (argmax, sampling) are in draw.cu.
#include <algorithm>
#include <cfloat>
#include <cstdint>

#include "backend/cuda/common.cuh"

namespace gptoss::cuda {

namespace {

// x[t, :] = table[tokens[t], :]; block per token, 8 values per thread (cols % 8 == 0), so that a block of
// cols / 8 threads reads its row in one round of loads: the strided loop of one value per thread took one
// DRAM round trip per pass (bench/cuda_notes.md, round 11).
template <int WT>
__global__ void f32_embed(const void* __restrict__ table, int64_t cols, const int32_t* __restrict__ tokens,
                          float* __restrict__ x) {
  const int t = blockIdx.x;
  const int64_t row = tokens[t];
  float4* xo = reinterpret_cast<float4*>(x + int64_t(t) * cols);
  for (int64_t c8 = threadIdx.x; c8 < cols / 8; c8 += blockDim.x) {
    float v[8];
    if constexpr (WT == kF32)
      load8_kv(static_cast<const float*>(table) + row * cols + 8 * c8, v);
    else
      load8_kv(static_cast<const __nv_bfloat16*>(table) + row * cols + 8 * c8, v);
    xo[2 * c8] = make_float4(v[0], v[1], v[2], v[3]);
    xo[2 * c8 + 1] = make_float4(v[4], v[5], v[6], v[7]);
  }
}
template <int WT>
__global__ void f32_embed1(const void* __restrict__ table, int64_t cols, const int32_t* __restrict__ tokens,
                           float* __restrict__ x) {  // any cols
  const int t = blockIdx.x;
  const int64_t row = tokens[t];
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    float v;
    if constexpr (WT == kF32)
      v = reinterpret_cast<const float*>(table)[row * cols + c];
    else
      v = bf16_bits_to_f32(reinterpret_cast<const uint16_t*>(table)[row * cols + c]);
    x[int64_t(t) * cols + c] = v;
  }
}

// y[t] = w * x[t] / sqrt(mean(x[t]^2) + eps); block per row, f32 sum of squares.
__global__ void f32_rmsnorm(const float* __restrict__ x, const float* __restrict__ w, int n, float eps,
                            float* __restrict__ y) {
  __shared__ float red[32];
  const float* xr = x + int64_t(blockIdx.x) * n;
  float ss = 0.0f;
  for (int i = threadIdx.x; i < n; i += blockDim.x) ss += xr[i] * xr[i];
  const float inv = rsqrtf(block_reduce(ss, false, red) / float(n) + eps);
  float* yr = y + int64_t(blockIdx.x) * n;
  for (int i = threadIdx.x; i < n; i += blockDim.x) yr[i] = w[i] * (xr[i] * inv);
}

// Same for rows of n <= 4 * blockDim.x with n % 4 == 0: one float4 of x and w per thread, loaded
// together up front (decode: one round trip instead of a strided loop per pass).
__global__ void f32_rmsnorm_vec4(const float* __restrict__ x, const float* __restrict__ w, int n, float eps,
                                 float* __restrict__ y) {
  __shared__ float red[32];
  pdl_trigger();  // a programmatic dependent (the output head's matvec) may start fetching its weights now
  const int i = threadIdx.x;
  const bool on = 4 * i < n;
  const float4 xv = on ? reinterpret_cast<const float4*>(x + int64_t(blockIdx.x) * n)[i] : make_float4(0, 0, 0, 0);
  const float4 wv = on ? reinterpret_cast<const float4*>(w)[i] : make_float4(0, 0, 0, 0);
  const float ss = xv.x * xv.x + xv.y * xv.y + xv.z * xv.z + xv.w * xv.w;
  const float inv = rsqrtf(block_reduce(ss, false, red) / float(n) + eps);
  if (on)
    reinterpret_cast<float4*>(y + int64_t(blockIdx.x) * n)[i] =
        make_float4(wv.x * (xv.x * inv), wv.y * (xv.y * inv), wv.z * (xv.z * inv), wv.w * (xv.w * inv));
}

__global__ void f32_add(float* __restrict__ x, const float* __restrict__ y, size_t n) {
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) x[i] += y[i];
}

// y[i] = s[i] + s[n + i]: the hi and lo halves of a GEMM over the bf16 pair [hi; lo], n divisible by 4.
__global__ void f32_sum_halves4(const float4* __restrict__ s, size_t n4, float4* __restrict__ y) {
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n4) return;
  const float4 a = s[i], b = s[n4 + i];
  y[i] = make_float4(a.x + b.x, a.y + b.y, a.z + b.z, a.w + b.w);
}
__global__ void f32_sum_halves(const float* __restrict__ s, size_t n, float* __restrict__ y) {
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) y[i] = s[i] + s[n + i];
}

__global__ void f32_to_bf16x2(const float* __restrict__ x, size_t n, __nv_bfloat16* __restrict__ y) {
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) split_bf16x2(x[i], y + i, y + n + i);
}

__global__ void f32_add_bias(float* __restrict__ y, const float* __restrict__ bias, int n, size_t total) {
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < total) y[i] += bias[i % n];
}

unsigned blocks_for(size_t n, int threads) { return unsigned((n + size_t(threads) - 1) / size_t(threads)); }

}  // namespace

void launch_embed(Wt wt, const void* table, int64_t cols, const int32_t* tokens, int T, float* x, cudaStream_t s) {
  const bool vec = cols % 8 == 0 && reinterpret_cast<uintptr_t>(table) % 16 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0;
  if (!vec) {
    if (wt == kF32)
      f32_embed1<kF32><<<T, 256, 0, s>>>(table, cols, tokens, x);
    else
      f32_embed1<kBF16><<<T, 256, 0, s>>>(table, cols, tokens, x);
    return;
  }
  const int threads = int(std::min<int64_t>(1024, (cols / 8 + kWarp - 1) / kWarp * kWarp));
  if (wt == kF32)
    f32_embed<kF32><<<T, threads, 0, s>>>(table, cols, tokens, x);
  else
    f32_embed<kBF16><<<T, threads, 0, s>>>(table, cols, tokens, x);
}

void launch_rmsnorm(const float* x, const float* w, int T, int n, float eps, float* y, cudaStream_t s) {
  if (n % 4 == 0 && n / 4 <= 1024) {
    const int threads = (n / 4 + kWarp - 1) / kWarp * kWarp;
    f32_rmsnorm_vec4<<<T, threads, 0, s>>>(x, w, n, eps, y);
  } else {
    f32_rmsnorm<<<T, 256, 0, s>>>(x, w, n, eps, y);
  }
}

// y[i, :] = x[rows[i], :], rows of n floats; block per output row.
__global__ void f32_gather_rows(const float* __restrict__ x, const int32_t* __restrict__ rows, int n,
                                float* __restrict__ y) {
  const float* src = x + int64_t(rows[blockIdx.x]) * n;
  float* dst = y + int64_t(blockIdx.x) * n;
  for (int i = threadIdx.x; i < n; i += blockDim.x) dst[i] = src[i];
}

void launch_gather_rows(const float* x, const int32_t* rows, int R, int n, float* y, cudaStream_t s) {
  if (R > 0) f32_gather_rows<<<R, 256, 0, s>>>(x, rows, n, y);
}

void launch_add(float* x, const float* y, size_t n, cudaStream_t s) {
  f32_add<<<blocks_for(n, 256), 256, 0, s>>>(x, y, n);
}

void launch_sum_halves(const float* s, size_t n, float* y, cudaStream_t st) {
  if (n % 4 == 0 && reinterpret_cast<uintptr_t>(s) % 16 == 0 && reinterpret_cast<uintptr_t>(y) % 16 == 0)
    f32_sum_halves4<<<blocks_for(n / 4, 256), 256, 0, st>>>(reinterpret_cast<const float4*>(s), n / 4,
                                                            reinterpret_cast<float4*>(y));
  else
    f32_sum_halves<<<blocks_for(n, 256), 256, 0, st>>>(s, n, y);
}

void launch_f32_to_bf16x2(const float* x, size_t n, __nv_bfloat16* y, cudaStream_t s) {
  f32_to_bf16x2<<<blocks_for(n, 256), 256, 0, s>>>(x, n, y);
}

void launch_add_bias(float* y, const float* bias, int T, int n, cudaStream_t s) {
  const size_t total = size_t(T) * size_t(n);
  f32_add_bias<<<blocks_for(total, 256), 256, 0, s>>>(y, bias, n, total);
}

}  // namespace gptoss::cuda
