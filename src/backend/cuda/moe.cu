// Mixture of experts (docs/MODEL.md §4.5): router top-k + softmax, and the experts. Decode reads only the
// selected experts' weights: a fused gate_up + clamped SwiGLU matvec (rows 2i and 2i+1 of gate_up are
// gate_i and up_i, read by the same warp) and a fused down matvec that also applies the routing weights
// and adds into the residual stream (deterministic: no atomics). Prefill groups tokens per expert on the
// host and runs cuBLAS (see cuda_backend.cpp); the small kernels it needs are here too.
#include <cfloat>

#include "backend/cuda/common.cuh"

namespace gptoss::cuda {

namespace {

constexpr int kWarpsPerBlock = 8;

// Warp per token (see warp_topk_softmax).
__global__ void f32_router_topk_softmax(const float* __restrict__ logits, int T, int E, int k,
                                        int32_t* __restrict__ idx, float* __restrict__ wts) {
  const int t = blockIdx.x * kWarpsPerBlock + threadIdx.x / kWarp;
  if (t >= T) return;
  warp_topk_softmax(logits + int64_t(t) * E, E, k, idx + int64_t(t) * k, wts + int64_t(t) * k);
}

// z[a, i] for assignment a = t*k + j (expert idx[a]); warp per i. W: [2I, H] per expert.
template <int WT>
__global__ void __launch_bounds__(kWarpsPerBlock * kWarp)
    f32_xw_moe_gate_up_swiglu(WView w, const float* __restrict__ h, const int32_t* __restrict__ idx, int k,
                              const float* __restrict__ bias, float limit, float* __restrict__ z) {
  __shared__ float lut[16];
  if (threadIdx.x < 16) lut[threadIdx.x] = kFp4Lut[threadIdx.x];
  __syncthreads();
  const int64_t I = w.rows / 2, H = w.cols;
  const int64_t i = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
  if (i >= I) return;
  const int a = blockIdx.y, lane = threadIdx.x % kWarp;
  const int e = idx[a];
  const float* x = h + int64_t(a / k) * H;
  float g = 0.0f, u = 0.0f;
  const int64_t n8 = H / 8;
  for (int64_t c0 = lane; c0 < n8; c0 += kFetchBatch * kWarp) {
    Raw8<WT> rg[kFetchBatch] = {}, ru[kFetchBatch] = {};
#pragma unroll
    for (int q = 0; q < kFetchBatch; ++q) {
      if (c0 + q * kWarp < n8) {
        rg[q] = fetch8<WT>(w, e, 2 * i, c0 + q * kWarp);
        ru[q] = fetch8<WT>(w, e, 2 * i + 1, c0 + q * kWarp);
      }
    }
#pragma unroll
    for (int q = 0; q < kFetchBatch; ++q) {
      const int64_t c = c0 + q * kWarp;
      if (c >= n8) break;
      float wg[8], wu[8];
      decode8<WT>(rg[q], lut, wg);
      decode8<WT>(ru[q], lut, wu);
      const float4 xa = reinterpret_cast<const float4*>(x)[2 * c], xb = reinterpret_cast<const float4*>(x)[2 * c + 1];
      const float xv[8] = {xa.x, xa.y, xa.z, xa.w, xb.x, xb.y, xb.z, xb.w};
#pragma unroll
      for (int j = 0; j < 8; ++j) g += wg[j] * xv[j], u += wu[j] * xv[j];
    }
  }
  g = warp_sum(g), u = warp_sum(u);
  if (lane == 0) {
    const float* b = bias + int64_t(e) * 2 * I;
    z[int64_t(a) * I + i] = swiglu_clamped(g + b[2 * i], u + b[2 * i + 1], limit);
  }
}

// x[t, r] += sum_j wts[t, j] (W_d[e_j][r] . z[t*k + j] + bias[e_j, r]); warp per row r. W: [H, I].
template <int WT>
__global__ void __launch_bounds__(kWarpsPerBlock * kWarp)
    f32_xw_moe_down_combine(WView w, const float* __restrict__ z, const int32_t* __restrict__ idx,
                            const float* __restrict__ wts, int k, const float* __restrict__ bias,
                            float* __restrict__ x) {
  __shared__ float lut[16];
  if (threadIdx.x < 16) lut[threadIdx.x] = kFp4Lut[threadIdx.x];
  __syncthreads();
  const int64_t H = w.rows, I = w.cols;
  const int64_t r = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
  if (r >= H) return;
  const int t = blockIdx.y, lane = threadIdx.x % kWarp;
  float total = 0.0f;
  for (int j = 0; j < k; ++j) {
    const int a = t * k + j, e = idx[a];
    const float* zr = z + int64_t(a) * I;
    float acc = 0.0f;
    const int64_t n8 = I / 8;
    for (int64_t c0 = lane; c0 < n8; c0 += kFetchBatch * kWarp) {
      Raw8<WT> raw[kFetchBatch] = {};
#pragma unroll
      for (int q = 0; q < kFetchBatch; ++q)
        if (c0 + q * kWarp < n8) raw[q] = fetch8<WT>(w, e, r, c0 + q * kWarp);
#pragma unroll
      for (int q = 0; q < kFetchBatch; ++q) {
        const int64_t c = c0 + q * kWarp;
        if (c >= n8) break;
        float wv[8];
        decode8<WT>(raw[q], lut, wv);
        acc += dot8(wv, zr, c);
      }
    }
    acc = warp_sum(acc);
    total += wts[a] * (acc + bias[int64_t(e) * H + r]);
  }
  if (lane == 0) x[int64_t(t) * H + r] += total;
}

// Transposed dense experts ([in, out] per expert): thread per output, reads coalesced along outputs.
// W stored [H, 2I] per expert.
template <typename WTy>
__global__ void f32_tw_moe_gate_up_swiglu(WView w, const float* __restrict__ h, const int32_t* __restrict__ idx, int k,
                                          const float* __restrict__ bias, float limit, float* __restrict__ z) {
  const int64_t I = w.rows / 2, H = w.cols;
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int a = blockIdx.y;
  if (i >= I) return;
  const int e = idx[a];
  const WTy* we = reinterpret_cast<const WTy*>(w.data + e * w.stride);
  const float* x = h + int64_t(a / k) * H;
  float g = 0.0f, u = 0.0f;
  for (int64_t c = 0; c < H; ++c) g += to_f32(we[c * 2 * I + 2 * i]) * x[c], u += to_f32(we[c * 2 * I + 2 * i + 1]) * x[c];
  const float* b = bias + int64_t(e) * 2 * I;
  z[int64_t(a) * I + i] = swiglu_clamped(g + b[2 * i], u + b[2 * i + 1], limit);
}

// W stored [I, H] per expert.
template <typename WTy>
__global__ void f32_tw_moe_down_combine(WView w, const float* __restrict__ z, const int32_t* __restrict__ idx,
                                        const float* __restrict__ wts, int k, const float* __restrict__ bias,
                                        float* __restrict__ x) {
  const int64_t H = w.rows, I = w.cols;
  const int64_t r = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int t = blockIdx.y;
  if (r >= H) return;
  float total = 0.0f;
  for (int j = 0; j < k; ++j) {
    const int a = t * k + j, e = idx[a];
    const WTy* we = reinterpret_cast<const WTy*>(w.data + e * w.stride);
    float acc = 0.0f;
    for (int64_t c = 0; c < I; ++c) acc += to_f32(we[c * H + r]) * z[int64_t(a) * I + c];
    total += wts[a] * (acc + bias[int64_t(e) * H + r]);
  }
  x[int64_t(t) * H + r] += total;
}

__global__ void gather_bf16x2(const float* __restrict__ h, const int32_t* __restrict__ slots, int n, int k, int H,
                              __nv_bfloat16* __restrict__ out) {
  const int i = blockIdx.x;
  const float* src = h + int64_t(slots[i] / k) * H;
  for (int c = threadIdx.x; c < H; c += blockDim.x)
    split_bf16x2(src[c], out + int64_t(i) * H + c, out + (int64_t(n) + i) * H + c);
}

__global__ void f32_swiglu_bias(const float* __restrict__ gu, const float* __restrict__ bias, int n, int I,
                                float limit, __nv_bfloat16* __restrict__ z) {
  const int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= int64_t(n) * I) return;
  const int64_t row = j / I, i = j % I;
  const float g = gu[row * 2 * I + 2 * i] + bias[2 * i], u = gu[row * 2 * I + 2 * i + 1] + bias[2 * i + 1];
  split_bf16x2(swiglu_clamped(g, u, limit), z + j, z + int64_t(n) * I + j);
}

__global__ void f32_scatter_bias(const float* __restrict__ y, const float* __restrict__ bias,
                                 const int32_t* __restrict__ slots, int H, float* __restrict__ ybuf) {
  const int i = blockIdx.x;
  float* dst = ybuf + int64_t(slots[i]) * H;
  for (int c = threadIdx.x; c < H; c += blockDim.x) dst[c] = y[int64_t(i) * H + c] + bias[c];
}

__global__ void f32_moe_combine(const float* __restrict__ ybuf, const float* __restrict__ wts, int k, int H,
                                float* __restrict__ x) {
  const int t = blockIdx.x;
  for (int c = threadIdx.x; c < H; c += blockDim.x) {
    float s = 0.0f;
    for (int j = 0; j < k; ++j) s += wts[t * k + j] * ybuf[(int64_t(t) * k + j) * H + c];
    x[int64_t(t) * H + c] += s;
  }
}

}  // namespace

void launch_router_topk(const float* logits, int T, int E, int k, int32_t* idx, float* wts, cudaStream_t s) {
  f32_router_topk_softmax<<<unsigned((T + kWarpsPerBlock - 1) / kWarpsPerBlock), kWarpsPerBlock * kWarp, 0, s>>>(
      logits, T, E, k, idx, wts);
}

void launch_moe_gate_up_swiglu(Wt wt, bool transposed, const WView& w, const float* h, const int32_t* idx, int T,
                               int k, const float* bias, float limit, float* z, cudaStream_t s) {
  const int64_t I = w.rows / 2;
  if (transposed) {
    const dim3 grid{unsigned((I + 127) / 128), unsigned(T * k)};
    if (wt == kF32)
      f32_tw_moe_gate_up_swiglu<float><<<grid, 128, 0, s>>>(w, h, idx, k, bias, limit, z);
    else
      f32_tw_moe_gate_up_swiglu<__nv_bfloat16><<<grid, 128, 0, s>>>(w, h, idx, k, bias, limit, z);
    return;
  }
  const dim3 grid{unsigned((I + kWarpsPerBlock - 1) / kWarpsPerBlock), unsigned(T * k)};
  const int threads = kWarpsPerBlock * kWarp;
  switch (wt) {
    case kF32: f32_xw_moe_gate_up_swiglu<kF32><<<grid, threads, 0, s>>>(w, h, idx, k, bias, limit, z); break;
    case kBF16: f32_xw_moe_gate_up_swiglu<kBF16><<<grid, threads, 0, s>>>(w, h, idx, k, bias, limit, z); break;
    case kMXFP4: f32_xw_moe_gate_up_swiglu<kMXFP4><<<grid, threads, 0, s>>>(w, h, idx, k, bias, limit, z); break;
    case kBF12: break;  // experts are never packed (CudaBackend::upload packs single matrices)
  }
}

void launch_moe_down_combine(Wt wt, bool transposed, const WView& w, const float* z, const int32_t* idx,
                             const float* wts, int T, int k, const float* bias, float* x, cudaStream_t s) {
  if (transposed) {
    const dim3 grid{unsigned((w.rows + 127) / 128), unsigned(T)};
    if (wt == kF32)
      f32_tw_moe_down_combine<float><<<grid, 128, 0, s>>>(w, z, idx, wts, k, bias, x);
    else
      f32_tw_moe_down_combine<__nv_bfloat16><<<grid, 128, 0, s>>>(w, z, idx, wts, k, bias, x);
    return;
  }
  const dim3 grid{unsigned((w.rows + kWarpsPerBlock - 1) / kWarpsPerBlock), unsigned(T)};
  const int threads = kWarpsPerBlock * kWarp;
  switch (wt) {
    case kF32: f32_xw_moe_down_combine<kF32><<<grid, threads, 0, s>>>(w, z, idx, wts, k, bias, x); break;
    case kBF16: f32_xw_moe_down_combine<kBF16><<<grid, threads, 0, s>>>(w, z, idx, wts, k, bias, x); break;
    case kMXFP4: f32_xw_moe_down_combine<kMXFP4><<<grid, threads, 0, s>>>(w, z, idx, wts, k, bias, x); break;
    case kBF12: break;  // experts are never packed (CudaBackend::upload packs single matrices)
  }
}

void launch_gather_bf16x2(const float* h, const int32_t* slots, int n, int k, int H, __nv_bfloat16* out,
                          cudaStream_t s) {
  gather_bf16x2<<<unsigned(n), 256, 0, s>>>(h, slots, n, k, H, out);
}

void launch_swiglu_bias(const float* gu, const float* bias, int n, int I, float limit, __nv_bfloat16* z,
                        cudaStream_t s) {
  const int64_t total = int64_t(n) * I;
  f32_swiglu_bias<<<unsigned((total + 255) / 256), 256, 0, s>>>(gu, bias, n, I, limit, z);
}

void launch_scatter_bias(const float* y, const float* bias, const int32_t* slots, int n, int H, float* ybuf,
                         cudaStream_t s) {
  f32_scatter_bias<<<unsigned(n), 256, 0, s>>>(y, bias, slots, H, ybuf);
}

void launch_moe_combine(const float* ybuf, const float* wts, int T, int k, int H, float* x, cudaStream_t s) {
  f32_moe_combine<<<unsigned(T), 256, 0, s>>>(ybuf, wts, k, H, x);
}

}  // namespace gptoss::cuda
