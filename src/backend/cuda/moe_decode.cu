// MXFP4 expert kernels for decode (T <= 8 tokens): only the selected experts' weights are read, once
// (latency/occupancy bound rather than bandwidth bound: bench/cuda_notes.md). Each lane owns
// whole 32-value blocks (one 16-byte load of codes plus one scale byte per block and row), several
// rows' blocks are fetched before any is decoded (96-192 bytes in flight per lane), the activation vector sits in shared memory in a swizzled layout
// (float4 j of block b at b*8 + (j ^ (b & 7)): the 8 lanes of a quarter-warp, which own consecutive
// blocks, hit 8 different bank groups), and the E2M1 codes are decoded with integer ops instead of
// a table lookup: code s.e1.e0.m placed at bits 15 / 11..9 of an fp16 is exactly value * 2^-14
// (subnormal for e = 0 included), so the 2^14 is folded into the block's scale.
#include <cuda_fp16.h>

#include "backend/cuda/common.cuh"
#include "backend/cuda/mma.cuh"

namespace gptoss::cuda {

namespace {

constexpr int kWarps = 8;          // warps per block
constexpr int kBlocksPerLane = 3;  // 32-value blocks per lane per pass: 3 * 32 lanes * 32 = 3072 >= 2880
// Template arguments: gate_up (gate, up) row pairs per warp sharing each x load; down experts
// whose rows a warp fetches together; minimum resident blocks per SM (register cap).
constexpr int kMoeMaxSmem = 160 * 1024;  // x (H floats) or z (k*I floats) per block

// 8 E2M1 codes of one 32-bit word (nibble k = value k) -> v[k] = value * 2^-14.
__device__ __forceinline__ void fp4x8_scaled(uint32_t w, float v[8]) {
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const uint32_t t = w >> (4 * k);  // nibbles k and k + 4 at bits 0..3 and 16..19
    const uint32_t h = ((t & 0x00070007u) << 9) | ((t & 0x00080008u) << 12);
    __half2 hh;
    static_assert(sizeof(hh) == 4);
    memcpy(&hh, &h, 4);
    const float2 f = __half22float2(hh);
    v[k] = f.x, v[k + 4] = f.y;
  }
}

// 2^(s-127) * 2^14: the block scale times the decode's missing factor.
__device__ __forceinline__ float block_scale(uint32_t s) { return e8m0_to_f32(s) * 16384.0f; }

// sum over the block's 32 values of code * x, for the float4s of x at xs (swizzled by sw).
__device__ __forceinline__ float dot_block(const uint4& q, const float4* __restrict__ xb, int sw) {
  const uint32_t words[4] = {q.x, q.y, q.z, q.w};
  float acc = 0.0f;
#pragma unroll
  for (int wi = 0; wi < 4; ++wi) {
    float v[8];
    fp4x8_scaled(words[wi], v);
    const float4 a = xb[(2 * wi) ^ sw], b = xb[(2 * wi + 1) ^ sw];
    acc += v[0] * a.x + v[1] * a.y + v[2] * a.z + v[3] * a.w + v[4] * b.x + v[5] * b.y + v[6] * b.z + v[7] * b.w;
  }
  return acc;
}

// Shared-memory slot of float4 i of x or z, swizzled as described at the top.
__device__ __forceinline__ int swizzled(int i) { return (i / 8) * 8 + ((i % 8) ^ ((i / 8) & 7)); }

// n floats (n % 32 == 0) from global to shared, swizzled; 8 loads per thread
// are issued before their stores (the loop would otherwise wait one L2 round trip per float4).
__device__ __forceinline__ void stage_swizzled(const float* __restrict__ src, int n, float4* __restrict__ dst) {
  const float4* s4 = reinterpret_cast<const float4*>(src);
  constexpr int kBatch = 8;
  for (int i0 = threadIdx.x; i0 < n / 4; i0 += kBatch * blockDim.x) {
    float4 v[kBatch];
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      const int i = i0 + u * int(blockDim.x);
      if (i < n / 4) v[u] = s4[i];
    }
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      const int i = i0 + u * int(blockDim.x);
      if (i < n / 4) dst[swizzled(i)] = v[u];
    }
  }
}

// The same copy with cp.async (16 bytes each, through L2 into shared memory, no registers): every
// thread's copies are in flight at once, and several calls share one wait (one L2 round trip in all).
// The caller commits, waits and synchronises.
__device__ __forceinline__ void stage_swizzled_async(const float* __restrict__ src, int n, float4* __restrict__ dst) {
  const float4* s4 = reinterpret_cast<const float4*>(src);
  for (int i = threadIdx.x; i < n / 4; i += blockDim.x) cp_async16(dst + swizzled(i), s4 + i);
}

// z[a, i] = swiglu(gate_i + bg, up_i + bu) for assignment a (token a / k, expert idx[a]).
// W: [2I, H] per expert, rows 2i / 2i+1 = gate_i / up_i; warp per kPairsPerWarp consecutive pairs.
template <int kPairsPerWarp, int kMinBlocks>
__global__ void __launch_bounds__(kWarps * kWarp, kMinBlocks)
    f32_mxfp4w_moe_gate_up_swiglu(WView w, const float* __restrict__ h, const int32_t* __restrict__ idx, int k,
                                  const float* __restrict__ bias, float limit, float* __restrict__ z) {
  extern __shared__ float4 xs[];
  const int a = blockIdx.y, lane = threadIdx.x % kWarp;
  const int H = int(w.cols), nb = H / 32;
  const int64_t I = w.rows / 2;
  const int e = idx[a];
  constexpr int R = 2 * kPairsPerWarp;
  const int64_t p0 = (int64_t(blockIdx.x) * kWarps + threadIdx.x / kWarp) * kPairsPerWarp;
  const int64_t r0 = 2 * p0;
  const int nrows = p0 >= I ? 0 : int(2 * I - r0 < R ? 2 * I - r0 : R);
  const uint4* wq = reinterpret_cast<const uint4*>(w.data + e * w.stride) + r0 * nb;
  const uint8_t* ws = w.scales + e * w.scales_stride + r0 * nb;
  uint4 q[R][kBlocksPerLane];
  uint32_t s[R][kBlocksPerLane];
  auto fetch = [&](int b0) {
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int i = 0; i < kBlocksPerLane; ++i) {
        const int b = b0 + lane + kWarp * i;
        if (b < nb && r < nrows) {
          q[r][i] = __ldg(wq + int64_t(r) * nb + b);
          s[r][i] = __ldg(ws + int64_t(r) * nb + b);
        } else {
          q[r][i] = make_uint4(0, 0, 0, 0), s[r][i] = 127;
        }
      }
  };
  // The first pass's weights are requested before x is staged: the two latencies overlap.
  fetch(0);
  stage_swizzled(h + int64_t(a / k) * H, H, xs);
  __syncthreads();
  if (nrows == 0) return;
  float acc[R] = {};
  for (int b0 = 0; b0 < nb; b0 += kBlocksPerLane * kWarp) {
    if (b0 > 0) fetch(b0);
#pragma unroll
    for (int i = 0; i < kBlocksPerLane; ++i) {
      const int b = b0 + lane + kWarp * i;
      if (b >= nb) break;
      const float4* xb = xs + b * 8;
      const int sw = b & 7;
      // x is read once per float4 and applied to all R rows.
#pragma unroll
      for (int wi = 0; wi < 4; ++wi) {
        const float4 xa = xb[(2 * wi) ^ sw], xc = xb[(2 * wi + 1) ^ sw];
#pragma unroll
        for (int r = 0; r < R; ++r) {
          const uint32_t word = wi == 0 ? q[r][i].x : wi == 1 ? q[r][i].y : wi == 2 ? q[r][i].z : q[r][i].w;
          float v[8];
          fp4x8_scaled(word, v);
          const float part = v[0] * xa.x + v[1] * xa.y + v[2] * xa.z + v[3] * xa.w + v[4] * xc.x + v[5] * xc.y +
                             v[6] * xc.z + v[7] * xc.w;
          acc[r] += part * block_scale(s[r][i]);
        }
      }
    }
  }
#pragma unroll
  for (int r = 0; r < R; ++r) acc[r] = warp_sum(acc[r]);
  if (lane == 0) {
    const float* bb = bias + int64_t(e) * 2 * I;
#pragma unroll
    for (int pp = 0; pp < kPairsPerWarp; ++pp) {
      const int64_t i = p0 + pp;
      if (i < I) z[int64_t(a) * I + i] = swiglu_clamped(acc[2 * pp] + bb[2 * i], acc[2 * pp + 1] + bb[2 * i + 1], limit);
    }
  }
}

// x[t, r] += sum_j wts[t, j] (W_d[e_j][r] . z[t*k + j] + bias[e_j, r]); warp per row r, the rows of up
// to kExpertsInFlight experts fetched together. W: [H, I] per expert; z of token t staged in shared
// memory ([k, I], each expert's I floats swizzled).
template <int kExpertsInFlight, int kMinBlocks>
__global__ void __launch_bounds__(kWarps * kWarp, kMinBlocks)
    f32_mxfp4w_moe_down_combine(WView w, const float* __restrict__ z, const int32_t* __restrict__ idx,
                                const float* __restrict__ wts, int k, const float* __restrict__ bias,
                                float* __restrict__ x) {
  pdl_trigger();  // the next layer's q/k/v kernel may start requesting its weights as this grid's blocks retire
  extern __shared__ float4 zs[];
  const int t = blockIdx.y, lane = threadIdx.x % kWarp;
  const int64_t H = w.rows;
  const int I = int(w.cols), nb = I / 32;
  const int64_t r = int64_t(blockIdx.x) * kWarps + threadIdx.x / kWarp;
  const bool active = r < H;
  uint4 q[kExpertsInFlight][kBlocksPerLane];
  uint32_t s[kExpertsInFlight][kBlocksPerLane];
  auto fetch = [&](int j0, int b0) {
#pragma unroll
    for (int jj = 0; jj < kExpertsInFlight; ++jj) {
      const int j = j0 + jj;
      const int e = j < k ? idx[t * k + j] : 0;
      const uint4* wq = reinterpret_cast<const uint4*>(w.data + e * w.stride) + r * nb;
      const uint8_t* ws = w.scales + e * w.scales_stride + r * nb;
#pragma unroll
      for (int i = 0; i < kBlocksPerLane; ++i) {
        const int b = b0 + lane + kWarp * i;
        if (active && b < nb && j < k) {
          q[jj][i] = __ldg(wq + b);
          s[jj][i] = __ldg(ws + b);
        } else {
          q[jj][i] = make_uint4(0, 0, 0, 0), s[jj][i] = 127;
        }
      }
    }
  };
  // z first, asynchronously (it does not depend on the routing), then the first experts' weights; one
  // wait for all of z. The synchronous copy (stage_swizzled once per expert: k = 4 L2 round trips in a row)
  // was measurably slower (bench/cuda_notes.md, round 5).
  for (int j = 0; j < k; ++j) stage_swizzled_async(z + (int64_t(t) * k + j) * I, I, zs + int64_t(j) * (I / 4));
  cp_async_commit();
  fetch(0, 0);
  // The epilogue's operands, requested now rather than after the products (where they cost one more DRAM
  // round trip at the end of the last warps): lane j < k holds expert j's routing weight and bias of row r.
  float wj = 0.0f, bj = 0.0f;
  if (active && lane < k) {
    const int a = t * k + lane;
    wj = wts[a];
    bj = bias[int64_t(idx[a]) * H + r];
  }
  const float x0 = active ? x[int64_t(t) * H + r] : 0.0f;
  cp_async_wait<0>();
  __syncthreads();
  if (!active) return;
  float total = 0.0f;
  for (int j0 = 0; j0 < k; j0 += kExpertsInFlight) {
    float acc[kExpertsInFlight] = {};
    for (int b0 = 0; b0 < nb; b0 += kBlocksPerLane * kWarp) {
      if (j0 > 0 || b0 > 0) fetch(j0, b0);
#pragma unroll
      for (int jj = 0; jj < kExpertsInFlight; ++jj) {
        if (j0 + jj >= k) break;
        const float4* zj = zs + int64_t(j0 + jj) * (I / 4);
#pragma unroll
        for (int i = 0; i < kBlocksPerLane; ++i) {
          const int b = b0 + lane + kWarp * i;
          if (b >= nb) break;
          acc[jj] += dot_block(q[jj][i], zj + b * 8, b & 7) * block_scale(s[jj][i]);
        }
      }
    }
#pragma unroll
    for (int jj = 0; jj < kExpertsInFlight; ++jj) {
      const int j = j0 + jj;
      const float d = warp_sum(acc[jj]);
      const float wt = __shfl_sync(0xffffffffu, wj, j % kWarp), b = __shfl_sync(0xffffffffu, bj, j % kWarp);
      if (j < k) total += wt * (d + b);
    }
  }
  if (lane == 0) x[int64_t(t) * H + r] = x0 + total;
}

}  // namespace

// Kernel shape, fixed at compile time: 1 (gate, up) row pair per warp in gate_up, 2 experts in flight in
// down, at most 80 registers so 3 blocks of 8 warps fit per SM: more resident warps hide more latency than
// the former 2 pairs / 4 experts / 128 registers (bench/cuda_notes.md, round 2, item 11). All 4 experts in
// flight with this register cap (it spills) and one block of 22 warps per SM measured slower (round 6).
constexpr int kGateUpPairs = 1, kDownExperts = 2, kMinBlocksPerSm = 3;

// Shared memory above 48 KB per block needs an opt-in; done once at backend start (not during a capture).
cudaError_t init_moe_decode_kernels() {
  for (const void* f :
       {reinterpret_cast<const void*>(f32_mxfp4w_moe_gate_up_swiglu<kGateUpPairs, kMinBlocksPerSm>),
        reinterpret_cast<const void*>(f32_mxfp4w_moe_down_combine<kDownExperts, kMinBlocksPerSm>)}) {
    const cudaError_t e = cudaFuncSetAttribute(f, cudaFuncAttributeMaxDynamicSharedMemorySize, kMoeMaxSmem);
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}
bool launch_moe_mxfp4_decode(const WView& gate_up, const WView& down, const float* h, int32_t* idx,
                             float* wts, int T, int k, const float* gate_up_bias, const float* down_bias,
                             float limit, float* z, float* x, cudaStream_t s, const uint8_t* gate_up_rowmax,
                             const float* logits, int E) {
  const int64_t I = gate_up.rows / 2, H = gate_up.cols;
  const size_t gu_smem = size_t(H) * sizeof(float), dn_smem = size_t(k) * size_t(I) * sizeof(float);
  if (H % 32 != 0 || I % 32 != 0 || gu_smem > size_t(kMoeMaxSmem) || dn_smem > size_t(kMoeMaxSmem)) return false;
  if (logits) {  // the experts picked by the gate_up kernel from the logits: the tensor-core kernel or nothing
    if (!launch_moe_gate_up_tc(gate_up, gate_up_rowmax, h, idx, T, k, gate_up_bias, limit, z, s, logits, E, wts))
      return false;
    const dim3 g2{unsigned((H + kWarps - 1) / kWarps), unsigned(T)};
    f32_mxfp4w_moe_down_combine<kDownExperts, kMinBlocksPerSm>
        <<<g2, kWarps * kWarp, dn_smem, s>>>(down, z, idx, wts, k, down_bias, x);
    return true;
  }
  const int pairs_per_block = kWarps * kGateUpPairs;
  const dim3 g1{unsigned((I + pairs_per_block - 1) / pairs_per_block), unsigned(T * k)};
  const dim3 g2{unsigned((H + kWarps - 1) / kWarps), unsigned(T)};
  if (!launch_moe_gate_up_tc(gate_up, gate_up_rowmax, h, idx, T, k, gate_up_bias, limit, z, s))
    f32_mxfp4w_moe_gate_up_swiglu<kGateUpPairs, kMinBlocksPerSm>
        <<<g1, kWarps * kWarp, gu_smem, s>>>(gate_up, h, idx, k, gate_up_bias, limit, z);
  f32_mxfp4w_moe_down_combine<kDownExperts, kMinBlocksPerSm>
      <<<g2, kWarps * kWarp, dn_smem, s>>>(down, z, idx, wts, k, down_bias, x);
  return true;
}

}  // namespace gptoss::cuda
