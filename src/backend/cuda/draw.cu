// The device draws of the next token from a logits row: greedy decoding's argmax (whose last block can also
// write the next chained step's input) and sampling at a given uniform u (Sampler::sample_at on the device).
#include <cfloat>
#include <cstdint>

#include "backend/cuda/common.cuh"

namespace gptoss::cuda {

namespace {

// Argmax helpers: (value, index) pairs; ties keep the first index.
__device__ __forceinline__ void argmax_pair(float& best, int& bi, float v, int j) {
  if (v > best || (v == best && j < bi)) best = v, bi = j;
}
__device__ void block_argmax(float best, int bi, float* sv, int* si) {
  for (int o = 16; o > 0; o >>= 1)
    argmax_pair(best, bi, __shfl_xor_sync(0xffffffffu, best, o), __shfl_xor_sync(0xffffffffu, bi, o));
  if (threadIdx.x % kWarp == 0) sv[threadIdx.x / kWarp] = best, si[threadIdx.x / kWarp] = bi;
  __syncthreads();
  if (threadIdx.x == 0) {
    best = sv[0], bi = si[0];
    for (int w = 1; w < int(blockDim.x / kWarp); ++w) argmax_pair(best, bi, sv[w], si[w]);
    sv[0] = best, si[0] = bi;
  }
  __syncthreads();
}
// Greedy decoding's draw in one launch: each block's partial over a grid-stride share, then the last block to
// finish (a ticket, left 0 for the next launch) reduces the partials in block order. A second launch for that
// reduction was one more kernel boundary on every token's critical path.
__global__ void f32_argmax(const float* __restrict__ x, int n, int32_t* __restrict__ part, int32_t* __restrict__ out,
                           unsigned* __restrict__ ticket, int32_t* __restrict__ step, int pos) {
  __shared__ float sv[32];
  __shared__ int si[32];
  __shared__ bool last;
  float best = -INFINITY;
  int bi = 0x7fffffff;
  const int stride = int(gridDim.x * blockDim.x), i0 = int(blockIdx.x * blockDim.x + threadIdx.x);
  if (n % 4 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0) {
    // float4s, two per thread requested together: one L2 round trip per pair instead of one per float
    // (201,088 logits over 32,768 threads: 1.5 float4s each).
    const float4* x4 = reinterpret_cast<const float4*>(x);
    for (int i = i0; i < n / 4; i += 2 * stride) {
      const bool has_b = i + stride < n / 4;
      const float4 a = x4[i], b = has_b ? x4[i + stride] : a;
      argmax_pair(best, bi, a.x, 4 * i), argmax_pair(best, bi, a.y, 4 * i + 1);
      argmax_pair(best, bi, a.z, 4 * i + 2), argmax_pair(best, bi, a.w, 4 * i + 3);
      if (has_b) {
        const int j = 4 * (i + stride);
        argmax_pair(best, bi, b.x, j), argmax_pair(best, bi, b.y, j + 1);
        argmax_pair(best, bi, b.z, j + 2), argmax_pair(best, bi, b.w, j + 3);
      }
    }
  } else {
    for (int i = i0; i < n; i += stride) argmax_pair(best, bi, x[i], i);
  }
  block_argmax(best, bi, sv, si);
  if (threadIdx.x == 0) {
    part[2 * blockIdx.x] = __float_as_int(sv[0]), part[2 * blockIdx.x + 1] = si[0];
    __threadfence();
    last = atomicAdd(ticket, 1u) == gridDim.x - 1;
  }
  __syncthreads();
  if (!last) return;
  __threadfence();
  best = -INFINITY, bi = 0x7fffffff;
  for (int i = threadIdx.x; i < int(gridDim.x); i += blockDim.x)
    argmax_pair(best, bi, __int_as_float(__ldcg(part + 2 * i)), __ldcg(part + 2 * i + 1));
  block_argmax(best, bi, sv, si);
  if (threadIdx.x == 0) {
    const int id = si[0] == 0x7fffffff ? 0 : si[0];
    out[0] = id;
    if (step) step[0] = id, step[1] = pos;  // the next one-token step's input (chained greedy decoding)
    *ticket = 0u;
  }
}
// Greedy draws of many rows in one launch (a batched step's decode rows): a block per row, its id to
// out[2 * row] (draw_rows' (id, ticket) pairs). Ties keep the first index, as f32_argmax.
constexpr int kRowsThreads = 1024;
__global__ void __launch_bounds__(kRowsThreads) f32_argmax_rows(const float* __restrict__ x, int n,
                                                                  int32_t* __restrict__ out) {
  __shared__ float sv[32];
  __shared__ int si[32];
  const float* row = x + int64_t(blockIdx.x) * n;
  float best = -INFINITY;
  int bi = 0x7fffffff;
  if (n % 4 == 0 && reinterpret_cast<uintptr_t>(row) % 16 == 0) {
    const float4* x4 = reinterpret_cast<const float4*>(row);
    for (int i = threadIdx.x; i < n / 4; i += blockDim.x) {
      const float4 a = x4[i];
      argmax_pair(best, bi, a.x, 4 * i), argmax_pair(best, bi, a.y, 4 * i + 1);
      argmax_pair(best, bi, a.z, 4 * i + 2), argmax_pair(best, bi, a.w, 4 * i + 3);
    }
  } else {
    for (int i = threadIdx.x; i < n; i += blockDim.x) argmax_pair(best, bi, row[i], i);
  }
  block_argmax(best, bi, sv, si);
  if (threadIdx.x == 0) out[2 * blockIdx.x] = si[0] == 0x7fffffff ? 0 : si[0];
}

// Sampling (Sampler::sample_at on the device): kArgmaxBlocks blocks own contiguous chunks of x.
// 1: pmax[b] = max of chunk b. 2: m = max of pmax; psum[b] = sum of e^((x - m) / T) over chunk b.
// 3 (one block): the chunk where the running sum crosses u * total, then the thread sub-range, then the
// element (weights recomputed with the same expression; rounding leftovers fall on the last element
// with weight in the chosen range).
constexpr int kSampleThreads = 128;
// The first i whose part makes the running sum of parts[0, n) reach r, with r left as the rest within part
// i; where rounding leaves r above the total, the last part with weight (r = its weight), or -1.
__device__ int crossing(const float* parts, int n, double& r) {
  int last = -1;
  for (int i = 0; i < n; ++i) {
    if (parts[i] > 0.0f) last = i;
    if (r <= double(parts[i])) return i;
    r -= double(parts[i]);
  }
  if (last >= 0) r = double(parts[last]);
  return last;
}
__global__ void f32_sample_max(const float* __restrict__ x, int n, int chunk, float* __restrict__ pmax) {
  __shared__ float red[32];
  const int lo = blockIdx.x * chunk, hi = min(n, lo + chunk);
  float m = -INFINITY;
  for (int i = lo + threadIdx.x; i < hi; i += blockDim.x) m = fmaxf(m, x[i]);
  m = block_reduce(m, true, red);
  if (threadIdx.x == 0) pmax[blockIdx.x] = m;
}
__device__ __forceinline__ float global_max(const float* pmax, float* red) {
  float m = -INFINITY;
  for (int i = threadIdx.x; i < kArgmaxBlocks; i += blockDim.x) m = fmaxf(m, pmax[i]);
  return block_reduce(m, true, red);
}
__global__ void f32_sample_sum(const float* __restrict__ x, int n, int chunk, float inv_t,
                               const float* __restrict__ pmax, float* __restrict__ psum) {
  __shared__ float red[32];
  const float m = global_max(pmax, red);
  const int lo = blockIdx.x * chunk, hi = min(n, lo + chunk);
  float s = 0.0f;
  for (int i = lo + threadIdx.x; i < hi; i += blockDim.x) s += expf((x[i] - m) * inv_t);
  s = block_reduce(s, false, red);
  if (threadIdx.x == 0) psum[blockIdx.x] = s;
}
__global__ void f32_sample_pick(const float* __restrict__ x, int n, int chunk, float inv_t, double u,
                                const float* __restrict__ pmax, const float* __restrict__ psum,
                                int32_t* __restrict__ out) {
  __shared__ float red[32];
  __shared__ float sub[kSampleThreads];
  __shared__ int blk;
  __shared__ double rest;
  const float m = global_max(pmax, red);
  if (threadIdx.x == 0) {  // the chunk where the running sum crosses u * total
    double total = 0;
    for (int b = 0; b < kArgmaxBlocks; ++b) total += double(psum[b]);
    double r = u * total;
    blk = max(0, crossing(psum, kArgmaxBlocks, r));
    rest = r;
  }
  __syncthreads();
  // Thread t owns a contiguous sub-range of the chunk.
  const int lo = blk * chunk, hi = min(n, lo + chunk);
  const int per = (chunk + kSampleThreads - 1) / kSampleThreads;
  const int a = lo + int(threadIdx.x) * per, z = min(hi, a + per);
  float s = 0.0f;
  for (int i = a; i < z; ++i) s += expf((x[i] - m) * inv_t);
  sub[threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.x == 0) {
    double r = rest;
    const int t = crossing(sub, kSampleThreads, r);
    int pick = -1, last = lo;
    for (int i = lo + max(t, 0) * per, tz = t >= 0 ? min(hi, lo + t * per + per) : lo; i < tz; ++i) {
      const float w = expf((x[i] - m) * inv_t);
      if (w > 0.0f) last = i;
      r -= double(w);
      if (r <= 0) {
        pick = i;
        break;
      }
    }
    out[0] = pick >= 0 ? pick : last;
  }
}

}  // namespace

void launch_sample(const float* x, int n, float temperature, double u, int32_t* part, int32_t* out, cudaStream_t s) {
  const int chunk = (n + kArgmaxBlocks - 1) / kArgmaxBlocks;
  float* pmax = reinterpret_cast<float*>(part);
  float* psum = pmax + kArgmaxBlocks;
  const float inv_t = 1.0f / temperature;
  f32_sample_max<<<kArgmaxBlocks, 256, 0, s>>>(x, n, chunk, pmax);
  f32_sample_sum<<<kArgmaxBlocks, 256, 0, s>>>(x, n, chunk, inv_t, pmax, psum);
  f32_sample_pick<<<1, kSampleThreads, 0, s>>>(x, n, chunk, inv_t, u, pmax, psum, out);
}

void launch_argmax_rows(const float* x, int R, int n, int32_t* out, cudaStream_t s) {
  f32_argmax_rows<<<unsigned(R), kRowsThreads, 0, s>>>(x, n, out);
}

void launch_argmax(const float* x, int n, int32_t* part, int32_t* out, cudaStream_t s, int32_t* step, int pos) {
  f32_argmax<<<kArgmaxBlocks, 256, 0, s>>>(x, n, part, out, reinterpret_cast<unsigned*>(out + 1), step, pos);
}

}  // namespace gptoss::cuda
