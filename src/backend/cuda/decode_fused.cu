// Decode-step fusions (T <= kFusedMaxT tokens): RMSNorm folded into the kernels that consume its output,
// so one layer's attention input is one launch and the MoE router is one launch.
//  - f32_norm_matvec3: q, k, v = rmsnorm(x) W^T + b for up to three matrices stacked by rows (one grid
//    over 4096 + 512 + 512 rows for gpt-oss instead of three launches, the small k/v ones latency-bound).
//  - f32_norm_router_topk: h = rmsnorm(x), router logits (block per expert), and in the last block to
//    finish, top-k + softmax (a grid-wide "last block" handoff through a counter, reset for the next
//    launch so captured graphs replay it).
// Each block recomputes the norm of x (H floats from L2) into shared memory: y = w * (x * inv_rms), the
// same expression as launch_rmsnorm.
#include <algorithm>
#include <type_traits>

#include "backend/cuda/common.cuh"
#include "backend/cuda/mma.cuh"

namespace gptoss::cuda {

namespace {

constexpr int kRows = 8;  // warps per block, one output row each

// Float4s of the norm weights per thread in stage_normed: H <= 4 * kNormPer * blockDim.
constexpr int kNormPer = 4;

// xs[t, :] = nw * (x[t, :] * rsqrt(mean(x[t, :]^2) + eps)) for t < T, by the whole block. H % 4 == 0.
// x is copied with cp.async and nw loaded into registers, all in flight at once: one L2 round trip
// where the plain loop took one per iteration (made together with the tensor-core gate_up kernel's staging;
// bench/cuda_notes.md, round 5).
__device__ void stage_normed(const float* __restrict__ x, const float* __restrict__ nw, float eps, int T, int H,
                             float* xs, float* red) {
  const int tid = threadIdx.x, nthr = blockDim.x, lane = tid % kWarp, warp = tid / kWarp;
  const int n4 = H / 4;
  float4* xs4 = reinterpret_cast<float4*>(xs);
  const float4* nw4 = reinterpret_cast<const float4*>(nw);
  for (int i = tid; i < T * n4; i += nthr) cp_async16(xs4 + i, reinterpret_cast<const float4*>(x) + i);
  cp_async_commit();
  float4 w[kNormPer];
#pragma unroll
  for (int u = 0; u < kNormPer; ++u) {
    const int i = tid + u * nthr;
    w[u] = i < n4 ? __ldg(nw4 + i) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  }
  cp_async_wait<0>();
  __syncthreads();
  for (int t = 0; t < T; ++t) {
    float ss = 0.0f;
    for (int i = tid; i < n4; i += nthr) {
      const float4 v = xs4[t * n4 + i];
      ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
    }
    ss = warp_sum(ss);
    if (lane == 0) red[t * kWarp + warp] = ss;
  }
  __syncthreads();
  for (int t = 0; t < T; ++t) {
    float ss = 0.0f;
    for (int ww = 0; ww < nthr / kWarp; ++ww) ss += red[t * kWarp + ww];
    const float inv = rsqrtf(ss / float(H) + eps);
#pragma unroll
    for (int u = 0; u < kNormPer; ++u) {
      const int i = tid + u * nthr;
      if (i >= n4) break;
      const float4 v = xs4[t * n4 + i];
      xs4[t * n4 + i] = make_float4(w[u].x * (v.x * inv), w[u].y * (v.y * inv), w[u].z * (v.z * inv), w[u].w * (v.w * inv));
    }
  }
  __syncthreads();
}

struct Mat3 {
  WView w[3];
  const float* bias[3];
  float* y[3];
  int64_t end[3];  // cumulative row counts
  int n;
};

// Warp per stacked row; the row's first batch of weight chunks is requested before x is staged.
// NT: most tokens per launch (1 or kFusedMaxT), as f32_xw_matvec. kPersist: the grid may be smaller than the
// rows need (the resident blocks); each warp then takes rows gr, gr + gridDim * kRows, ..., so x is staged
// and normalised once per block instead of again by a second wave of blocks (gpt-oss: 5120 rows = 640
// blocks for 396 resident slots on an H100).
template <int WT, int NT, int kMinBlocks, bool kPersist>
__global__ void __launch_bounds__(kRows * kWarp, kMinBlocks)
    f32_norm_matvec3(Mat3 m, const float* __restrict__ x, const float* __restrict__ nw, float eps, int T, int H) {
  extern __shared__ __align__(16) float xs[];  // [T, H]
  __shared__ float red[kFusedMaxT * kWarp];
  const int lane = threadIdx.x % kWarp;
  const int64_t total = m.end[m.n - 1], step = int64_t(gridDim.x) * kRows;
  int64_t gr = int64_t(blockIdx.x) * kRows + threadIdx.x / kWarp;
  int mi = 0;  // which matrix row gr falls in, and its row r there
  int64_t r = 0;
  auto locate = [&] {
    mi = gr < m.end[0] ? 0 : gr < m.end[1] ? 1 : 2;
    r = gr - (mi == 0 ? 0 : m.end[mi - 1]);
  };
  locate();
  const bool active = gr < total;
  // Selected by value, not indexed: an index into the kernel's parameters would copy them to local memory.
  auto wv = [&] { return mi == 0 ? m.w[0] : mi == 1 ? m.w[1] : m.w[2]; };
  auto bias = [&] { return mi == 0 ? m.bias[0] : mi == 1 ? m.bias[1] : m.bias[2]; };
  __shared__ float lut[16];  // E2M1 table for MXFP4 weights
  if (threadIdx.x < 16) lut[threadIdx.x] = kFp4Lut[threadIdx.x];  // visible after stage_normed's barriers
  Raw8<WT> raw[kFetchBatch] = {};
  if (active) fetch_batch<WT>(wv(), r, lane, H / 8, raw);
  float b = active && bias() ? __ldg(bias() + r) : 0.0f;  // requested now, not after the products
  // One token: launched as a programmatic dependent of the previous layer's MoE down kernel, so the loads
  // above overlap its tail; x is its output.
  pdl_wait();
  stage_normed(x, nw, eps, T, H, xs, red);
  if (!active) return;
  while (true) {
    float acc[NT] = {};
    row_dot<WT>(wv(), r, lane, raw, lut, xs, H, T, acc);
    float* y = mi == 0 ? m.y[0] : mi == 1 ? m.y[1] : m.y[2];
#pragma unroll
    for (int t = 0; t < NT; ++t) {
      const float s = warp_sum(acc[t]);
      if (lane == 0 && t < T) y[int64_t(t) * wv().rows + r] = s + b;
    }
    if (!kPersist || (gr += step) >= total) return;
    locate();
    fetch_batch<WT>(wv(), r, lane, H / 8, raw);
    b = bias() ? __ldg(bias() + r) : 0.0f;
  }
}

// Block per expert e: logits[t, e] = h[t] . W[e] + b[e] with h = rmsnorm(x) (block 0 also writes h);
// the last block to finish runs the top-k, warp per token.
template <int WT>
__global__ void __launch_bounds__(kRows * kWarp)
    f32_norm_router_topk(WView w, const float* __restrict__ bias, const float* __restrict__ x,
                         const float* __restrict__ nw, float eps, int T, int H, int k, float* __restrict__ h,
                         float* __restrict__ logits, int32_t* __restrict__ idx, float* __restrict__ wts,
                         unsigned* __restrict__ counter, bool topk) {
  extern __shared__ __align__(16) float xs[];  // [T, H]
  __shared__ float red[kFusedMaxT * kWarp];
  __shared__ float lut[16];
  __shared__ bool last;
  if (threadIdx.x < 16) lut[threadIdx.x] = kFp4Lut[threadIdx.x];  // visible after stage_normed's barriers
  const int E = int(w.rows), e = blockIdx.x, tid = threadIdx.x, lane = tid % kWarp, warp = tid / kWarp;
  const int64_t n8 = H / 8;
  // Each thread's weight chunks (H / 8 of them over the block) requested before the norm.
  constexpr int kPer = 4;  // chunks per thread: H <= 8 * 256 * kPer = 8192
  Raw8<WT> raw[kPer] = {};
#pragma unroll
  for (int u = 0; u < kPer; ++u)
    if (tid + u * int(blockDim.x) < n8) raw[u] = fetch8<WT>(w, 0, e, tid + u * int(blockDim.x));
  const float b = bias ? __ldg(bias + e) : 0.0f;  // requested now, not after the products
  stage_normed(x, nw, eps, T, H, xs, red);
  if (e == 0)
    for (int i = tid; i < T * H; i += blockDim.x) h[i] = xs[i];
  float acc[kFusedMaxT] = {};
#pragma unroll
  for (int u = 0; u < kPer; ++u) {
    const int64_t c = tid + u * int(blockDim.x);
    if (c >= n8) break;
    fma_chunk<WT>(raw[u], lut, xs, H, T, c, acc);
  }
  __syncthreads();  // red is reused
#pragma unroll
  for (int t = 0; t < kFusedMaxT; ++t) {
    const float s = warp_sum(acc[t]);
    if (lane == 0 && t < T) red[t * kWarp + warp] = s;
  }
  __syncthreads();
  if (tid < T) {
    float s = 0.0f;
    for (int ww = 0; ww < int(blockDim.x) / kWarp; ++ww) s += red[tid * kWarp + ww];
    logits[int64_t(tid) * E + e] = s + b;
  }
  if (!topk) return;  // the next kernel picks the experts itself
  // Publish the logits, then take a ticket; the block with the last ticket sees every block's logits.
  __threadfence();
  __syncthreads();
  if (tid == 0) last = atomicAdd(counter, 1u) == unsigned(E - 1);
  __syncthreads();
  if (!last) return;
  __threadfence();
  if (warp < T) warp_topk_softmax(logits + int64_t(warp) * E, E, k, idx + int64_t(warp) * k, wts + int64_t(warp) * k);
  if (tid == 0) *counter = 0u;
}

template <typename F>
void by_type(Wt wt, F&& f) {
  switch (wt) {
    case kF32: f(std::integral_constant<int, kF32>{}); break;
    case kBF16: f(std::integral_constant<int, kBF16>{}); break;
    case kMXFP4: f(std::integral_constant<int, kMXFP4>{}); break;
    case kBF12: break;  // launch_norm_matvec3 instantiates it itself; the router kernel takes none
  }
}

}  // namespace

bool launch_norm_matvec3(Wt wt, const WView* w, const float* const* bias, float* const* y, int n, const float* x,
                         const float* nw, float eps, int T, cudaStream_t s) {
  if (n < 1 || n > 3 || T < 1 || T > kFusedMaxT) return false;
  const int64_t H = w[0].cols;
  if (H % 8 != 0 || H / 4 > kNormPer * kRows * kWarp || size_t(T) * size_t(H) * sizeof(float) > 48 * 1024) return false;
  Mat3 m{};
  m.n = n;
  int64_t rows = 0;
  for (int i = 0; i < 3; ++i) {
    if (i < n) {
      if (w[i].cols != H) return false;
      m.w[i] = w[i], m.bias[i] = bias[i], m.y[i] = y[i];
      rows += w[i].rows;
    }
    m.end[i] = rows;
  }
  const unsigned blocks = unsigned((rows + kRows - 1) / kRows);
  const size_t smem = size_t(T) * size_t(H) * sizeof(float);
  // One token: one accumulator, 3 blocks per SM (as launch_matvec).
  auto launch = [&](auto W) {
    constexpr int WT = decltype(W)::value;
    // One token: a programmatic dependent of the kernel before it (the MoE down kernel of the previous
    // layer): its weights stream while that kernel's last blocks run (bench/cuda_notes.md, round 7).
    // The grid is at most one wave (3 blocks per SM, the launch bound), each warp looping over rows: x is staged
    // and normalised once per block, not again by a second wave (bench/cuda_notes.md, round 9).
    if (T == 1) {
      const unsigned grid = std::min(blocks, unsigned(3 * device_sms()));
      launch_dependent(f32_norm_matvec3<WT, 1, 3, true>, dim3{grid}, dim3{unsigned(kRows * kWarp)}, smem, s, m, x, nw,
                       eps, T, int(H));
    } else {
      f32_norm_matvec3<WT, kFusedMaxT, 1, false><<<blocks, kRows * kWarp, smem, s>>>(m, x, nw, eps, T, int(H));
    }
  };
  if (wt == kBF12)  // packed bf16 (the row products apply its escapes)
    launch(std::integral_constant<int, kBF12>{});
  else
    by_type(wt, launch);
  return true;
}

bool launch_norm_router_topk(Wt wt, const WView& w, const float* bias, const float* x, const float* nw, float eps,
                             int T, int k, float* h, float* logits, int32_t* idx, float* wts, unsigned* counter,
                             cudaStream_t s, bool topk) {
  const int64_t H = w.cols;
  if (wt == kBF12) return false;  // its products are per chunk, without the escapes of packed bf16
  if (T < 1 || T > kFusedMaxT || H % 8 != 0 || H / 8 > 4 * kRows * kWarp || H / 4 > kNormPer * kRows * kWarp || w.rows > kMaxExperts ||
      k > kMaxTopK || size_t(T) * size_t(H) * sizeof(float) > 48 * 1024)
    return false;
  const size_t smem = size_t(T) * size_t(H) * sizeof(float);
  by_type(wt, [&](auto W) {
    f32_norm_router_topk<decltype(W)::value><<<unsigned(w.rows), kRows * kWarp, smem, s>>>(
        w, bias, x, nw, eps, T, int(H), k, h, logits, idx, wts, counter, topk);
  });
  return true;
}

}  // namespace gptoss::cuda
