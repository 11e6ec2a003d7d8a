// Dense matrix-vector products for decode (T <= 4 per warp pass) and weight decoding to bf16 for the
// cuBLAS prefill path. Memory bound: each weight byte is read once per step, 16-byte loads (4 for MXFP4)
// coalesced across the warp, f32 accumulation.
#include "backend/cuda/common.cuh"
#include "backend/cuda/mma.cuh"

namespace gptoss::cuda {

namespace {

constexpr int kRowsPerBlock = 8;  // warps per block, one output row each
constexpr int kTokensPerPass = 4;

// y[t, r] = W[r, :] . x[t, :] + bias[r]; warp per row r, tokens [NT*blockIdx.y, +NT); kMinBlocks resident
// blocks per SM (register cap).
template <int WT, int NT, int kMinBlocks>
__global__ void __launch_bounds__(kRowsPerBlock * kWarp, kMinBlocks)
    f32_xw_matvec(WView w, const float* __restrict__ x, int T, const float* __restrict__ bias, float* __restrict__ y,
                  bool accumulate) {
  __shared__ float lut[16];
  if (threadIdx.x < 16) lut[threadIdx.x] = kFp4Lut[threadIdx.x];
  __syncthreads();
  const int64_t r = int64_t(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarp;
  if (r >= w.rows) return;
  const int lane = threadIdx.x % kWarp;
  const int t0 = blockIdx.y * NT;
  const int nt = min(NT, T - t0);
  float acc[NT] = {};
  Raw8<WT> raw[kFetchBatch] = {};
  fetch_batch<WT>(w, r, lane, w.cols / 8, raw);
  // The epilogue's operands (bias, the y being added to) requested now: lane t holds token t's (see
  // f32_xw_matvec_x1).
  const float b = bias ? __ldg(bias + r) : 0.0f;
  const float y0 = accumulate && lane < nt ? y[int64_t(t0 + lane) * w.rows + r] : 0.0f;
  row_dot<WT>(w, r, lane, raw, lut, x + t0 * w.cols, w.cols, nt, acc);
#pragma unroll
  for (int t = 0; t < NT; ++t) {
    const float s = warp_sum(acc[t]);
    const float yt = __shfl_sync(0xffffffffu, y0, t);
    if (lane == 0 && t < nt) y[int64_t(t0 + t) * w.rows + r] = s + b + yt;
  }
}

// One token: the row's first weights are requested, then x (cols floats) is copied to shared memory with
// cp.async (one L2 round trip), then the products read x from there: faster than reading x through L1 in the
// product loop (bench/cuda_notes.md, round 5).
template <int WT>
__global__ void __launch_bounds__(kRowsPerBlock * kWarp, 3)
    f32_xw_matvec_x1(WView w, const float* __restrict__ x, const float* __restrict__ bias, float* __restrict__ y,
                     bool accumulate) {
  extern __shared__ __align__(16) float xs[];  // [cols]
  __shared__ float lut[16];
  if (threadIdx.x < 16) lut[threadIdx.x] = kFp4Lut[threadIdx.x];  // visible after the barrier below
  const int64_t r = int64_t(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarp;
  const bool active = r < w.rows;
  const int lane = threadIdx.x % kWarp;
  Raw8<WT> raw[kFetchBatch] = {};
  if (active) fetch_batch<WT>(w, r, lane, w.cols / 8, raw);
  // The epilogue's operands are requested now, not after the products: loaded there, they put one more
  // DRAM round trip at the end of the kernel's last warps.
  const float b = active && bias ? __ldg(bias + r) : 0.0f;
  pdl_wait();  // launched as a programmatic dependent (the head): x and y are the previous kernels' outputs
  const float y0 = active && accumulate ? y[r] : 0.0f;
  for (int i = threadIdx.x; i < int(w.cols / 4); i += blockDim.x)
    cp_async16(reinterpret_cast<float4*>(xs) + i, reinterpret_cast<const float4*>(x) + i);
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();
  if (!active) return;
  float acc[1] = {};
  row_dot<WT>(w, r, lane, raw, lut, xs, w.cols, 1, acc);
  const float s = warp_sum(acc[0]);
  if (lane == 0) y[r] = s + b + y0;
}

// Transposed dense storage W[c, r] ([in, out]): thread per output r, reads coalesced along r.
template <typename WTy>
__global__ void f32_tw_matvec(const WTy* __restrict__ W, int64_t rows, int64_t cols, const float* __restrict__ x,
                              const float* __restrict__ bias, float* __restrict__ y) {
  const int64_t r = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int t = blockIdx.y;
  if (r >= rows) return;
  float acc = 0.0f;
  for (int64_t c = 0; c < cols; ++c) acc += to_f32(W[c * rows + r]) * x[t * cols + c];
  y[int64_t(t) * rows + r] = acc + (bias ? bias[r] : 0.0f);
}

// out[r, c] (bf16 row-major) from expert e of any stored type; thread per 8 outputs.
template <int WT, bool kTransposed>
__global__ void weight_to_bf16(WView w, int e, __nv_bfloat16* __restrict__ out) {
  __shared__ float lut[16];
  if (threadIdx.x < 16) lut[threadIdx.x] = kFp4Lut[threadIdx.x];
  __syncthreads();
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;  // index of 8 outputs
  const int64_t n8 = w.cols / 8;
  if (i >= w.rows * n8) return;
  const int64_t r = i / n8, c8 = i % n8;
  float v[8];
  if constexpr (kTransposed) {
    // Stored [cols, rows]; element (r, c) at c * rows + r.
    for (int j = 0; j < 8; ++j) {
      const int64_t off = (c8 * 8 + j) * w.rows + r;
      if constexpr (WT == kF32)
        v[j] = reinterpret_cast<const float*>(w.data + e * w.stride)[off];
      else
        v[j] = bf16_bits_to_f32(reinterpret_cast<const uint16_t*>(w.data + e * w.stride)[off]);
    }
  } else {
    load8<WT>(w, e, r, c8, lut, v);
  }
  __align__(16) __nv_bfloat16 o[8];
#pragma unroll
  for (int j = 0; j < 8; ++j) o[j] = __float2bfloat16(v[j]);
  reinterpret_cast<uint4*>(out)[i] = *reinterpret_cast<const uint4*>(o);
}

}  // namespace

// One token (every batch-1 decode step) gets its own instantiation: one accumulator instead of four and
// 3 resident blocks per SM; a fourth block per SM and bigger fetch batches measured slower (bench/cuda_notes.md,
// round 5).
template <int WT>
void launch_matvec_t(const WView& w, const float* x, int T, const float* bias, float* y, cudaStream_t s,
                     bool accumulate) {
  const unsigned rb = unsigned((w.rows + kRowsPerBlock - 1) / kRowsPerBlock);
  const int threads = kRowsPerBlock * kWarp;
  if (T == 1 && w.cols * 4 <= 48 * 1024 && reinterpret_cast<uintptr_t>(x) % 16 == 0) {
    // A grid of many waves (the output head: 25,136 blocks) is launched as a programmatic dependent of the
    // kernel before it (the final RMSNorm, which triggers at entry): its first wave requests weights while that
    // kernel runs (bench/cuda_notes.md, round 11). Not for one-wave grids (o_proj after attention measured
    // slower, round 7): there the waiting blocks hold the SM slots the running kernel needs.
    const unsigned slots = unsigned(3 * device_sms());  // 3 resident blocks per SM (the launch bound)
    if (rb >= 8 * slots)
      launch_dependent(f32_xw_matvec_x1<WT>, dim3{rb}, dim3{unsigned(threads)}, size_t(w.cols) * 4, s, w, x, bias, y,
                       accumulate);
    else
      f32_xw_matvec_x1<WT><<<rb, threads, size_t(w.cols) * 4, s>>>(w, x, bias, y, accumulate);
  } else if (T == 1)
    f32_xw_matvec<WT, 1, 3><<<rb, threads, 0, s>>>(w, x, T, bias, y, accumulate);
  else
    f32_xw_matvec<WT, kTokensPerPass, 1>
        <<<dim3{rb, unsigned((T + kTokensPerPass - 1) / kTokensPerPass)}, threads, 0, s>>>(w, x, T, bias, y, accumulate);
}

void launch_matvec(Wt wt, const WView& w, const float* x, int T, const float* bias, float* y, cudaStream_t s,
                   bool accumulate) {
  switch (wt) {
    case kF32: launch_matvec_t<kF32>(w, x, T, bias, y, s, accumulate); break;
    case kBF16: launch_matvec_t<kBF16>(w, x, T, bias, y, s, accumulate); break;
    case kMXFP4: launch_matvec_t<kMXFP4>(w, x, T, bias, y, s, accumulate); break;
    case kBF12: launch_matvec_t<kBF12>(w, x, T, bias, y, s, accumulate); break;
  }
}

void launch_matvec_transposed(Wt wt, const WView& w, const float* x, int T, const float* bias, float* y,
                              cudaStream_t s) {
  const dim3 grid{unsigned((w.rows + 127) / 128), unsigned(T)};
  if (wt == kF32)
    f32_tw_matvec<float><<<grid, 128, 0, s>>>(reinterpret_cast<const float*>(w.data), w.rows, w.cols, x, bias, y);
  else
    f32_tw_matvec<__nv_bfloat16>
        <<<grid, 128, 0, s>>>(reinterpret_cast<const __nv_bfloat16*>(w.data), w.rows, w.cols, x, bias, y);
}

void launch_weight_to_bf16(Wt wt, bool transposed, const WView& w, int e, __nv_bfloat16* out, cudaStream_t s) {
  const int64_t n = w.rows * (w.cols / 8);
  const unsigned blocks = unsigned((n + 255) / 256);
  if (transposed) {
    if (wt == kF32)
      weight_to_bf16<kF32, true><<<blocks, 256, 0, s>>>(w, e, out);
    else
      weight_to_bf16<kBF16, true><<<blocks, 256, 0, s>>>(w, e, out);
    return;
  }
  switch (wt) {
    case kF32: weight_to_bf16<kF32, false><<<blocks, 256, 0, s>>>(w, e, out); break;
    case kBF16: weight_to_bf16<kBF16, false><<<blocks, 256, 0, s>>>(w, e, out); break;
    case kMXFP4: weight_to_bf16<kMXFP4, false><<<blocks, 256, 0, s>>>(w, e, out); break;
    case kBF12: weight_to_bf16<kBF12, false><<<blocks, 256, 0, s>>>(w, e, out); break;  // escapes: a second launch
  }
}

}  // namespace gptoss::cuda
