// Small memory-bound kernels: embedding lookup, RMSNorm, residual add, dtype conversion, bias, argmax.
#include <cfloat>

#include "backend/cuda/common.cuh"

namespace gptoss::cuda {

namespace {

// x[t, :] = table[tokens[t], :]; block per token.
template <int WT>
__global__ void f32_embed(const void* __restrict__ table, int64_t cols, const int32_t* __restrict__ tokens,
                          float* __restrict__ x) {
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
  __shared__ float partial[32];
  const float* xr = x + int64_t(blockIdx.x) * n;
  float ss = 0.0f;
  for (int i = threadIdx.x; i < n; i += blockDim.x) ss += xr[i] * xr[i];
  ss = warp_sum(ss);
  if (threadIdx.x % kWarp == 0) partial[threadIdx.x / kWarp] = ss;
  __syncthreads();
  if (threadIdx.x < kWarp) {
    float v = threadIdx.x < blockDim.x / kWarp ? partial[threadIdx.x] : 0.0f;
    v = warp_sum(v);
    if (threadIdx.x == 0) partial[0] = v;
  }
  __syncthreads();
  const float inv = rsqrtf(partial[0] / float(n) + eps);
  float* yr = y + int64_t(blockIdx.x) * n;
  for (int i = threadIdx.x; i < n; i += blockDim.x) yr[i] = w[i] * (xr[i] * inv);
}

__global__ void f32_add(float* __restrict__ x, const float* __restrict__ y, size_t n) {
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) x[i] += y[i];
}

__global__ void f32_to_bf16x2(const float* __restrict__ x, size_t n, __nv_bfloat16* __restrict__ y) {
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) split_bf16x2(x[i], y + i, y + n + i);
}

__global__ void f32_add_bias(float* __restrict__ y, const float* __restrict__ bias, int n, size_t total) {
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < total) y[i] += bias[i % n];
}

// One block of 1024 threads; (value, index) reduction keeping the first index on ties.
__global__ void f32_argmax(const float* __restrict__ x, int n, int32_t* __restrict__ out) {
  __shared__ float sv[32];
  __shared__ int si[32];
  float best = -FLT_MAX;
  int bi = 0x7fffffff;
  for (int i = threadIdx.x; i < n; i += blockDim.x)
    if (x[i] > best) best = x[i], bi = i;
  for (int o = 16; o > 0; o >>= 1) {
    const float v = __shfl_xor_sync(0xffffffffu, best, o);
    const int j = __shfl_xor_sync(0xffffffffu, bi, o);
    if (v > best || (v == best && j < bi)) best = v, bi = j;
  }
  if (threadIdx.x % kWarp == 0) sv[threadIdx.x / kWarp] = best, si[threadIdx.x / kWarp] = bi;
  __syncthreads();
  if (threadIdx.x == 0) {
    best = sv[0], bi = si[0];
    for (int w = 1; w < int(blockDim.x / kWarp); ++w)
      if (sv[w] > best || (sv[w] == best && si[w] < bi)) best = sv[w], bi = si[w];
    out[0] = bi;
  }
}

unsigned blocks_for(size_t n, int threads) { return unsigned((n + size_t(threads) - 1) / size_t(threads)); }

}  // namespace

void launch_embed(Wt wt, const void* table, int64_t cols, const int32_t* tokens, int T, float* x, cudaStream_t s) {
  if (wt == kF32)
    f32_embed<kF32><<<T, 256, 0, s>>>(table, cols, tokens, x);
  else
    f32_embed<kBF16><<<T, 256, 0, s>>>(table, cols, tokens, x);
}

void launch_rmsnorm(const float* x, const float* w, int T, int n, float eps, float* y, cudaStream_t s) {
  f32_rmsnorm<<<T, 256, 0, s>>>(x, w, n, eps, y);
}

void launch_add(float* x, const float* y, size_t n, cudaStream_t s) {
  f32_add<<<blocks_for(n, 256), 256, 0, s>>>(x, y, n);
}

void launch_f32_to_bf16x2(const float* x, size_t n, __nv_bfloat16* y, cudaStream_t s) {
  f32_to_bf16x2<<<blocks_for(n, 256), 256, 0, s>>>(x, n, y);
}

void launch_add_bias(float* y, const float* bias, int T, int n, cudaStream_t s) {
  const size_t total = size_t(T) * size_t(n);
  f32_add_bias<<<blocks_for(total, 256), 256, 0, s>>>(y, bias, n, total);
}

void launch_argmax(const float* x, int n, int32_t* out, cudaStream_t s) { f32_argmax<<<1, 1024, 0, s>>>(x, n, out); }

}  // namespace gptoss::cuda
