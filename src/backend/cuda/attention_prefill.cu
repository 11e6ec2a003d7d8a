// Prefill attention on the tensor cores (flash-attention style, docs/MODEL.md §4.3): for a chunk of T
// queries already rotated and appended to the cache, out = softmax-with-sink(q K^T / sqrt(d)) V over
// each query's visible keys (causal, optional sliding window; key of position j in slot j % cap).
//
// Block = (16 consecutive queries, kv head g), one warp per query head of g's group (G <= 8 warps), so a
// K/V tile staged in shared memory serves all G heads. Per 64-key tile each warp computes
// S[16, 64] = Q K^T and O[16, d] += P V with mma.sync m16n8k16 (bf16 in, f32 accumulate) and an online
// softmax in registers: the m16n8 accumulator layout of S is the A-operand layout of P, so P never
// leaves registers (FlashAttention-2's trick).
// Precision: operands are split into bf16 pairs (x = hi + lo, about 16 significant bits) and the
// products summed as hi*hi + lo*hi + hi*lo, so scores and outputs stay close to f32 (the CPU engine) and
// to the CUDA decode kernel; a bf16 cache is exact in bf16 already (lo = 0, those products skipped).
#include <cfloat>

#include "backend/cuda/common.cuh"
#include "backend/cuda/mma.cuh"

namespace gptoss::cuda {

namespace {

constexpr int kQ = 16;      // queries per block (the mma M dimension)
constexpr int kKeys = 64;   // keys per shared-memory tile
constexpr int kPad = 8;     // bf16 padding per smem row: row strides of 36 (d=64) words, conflict-free

// Shared memory: K[kKeys][D + kPad] and V transposed Vt[D][kKeys + kPad], bf16, hi then (f32 cache) lo.
template <typename KT, int D>
constexpr size_t prefill_smem_bytes() {
  constexpr int parts = sizeof(KT) == 2 ? 1 : 2;
  return size_t(parts) * (size_t(kKeys) * (D + kPad) + size_t(D) * (kKeys + kPad)) * sizeof(__nv_bfloat16);
}

template <typename KT, int D>
__global__ void __launch_bounds__(8 * kWarp)
    attention_prefill_mma(const float* __restrict__ q, const KT* __restrict__ kc, const KT* __restrict__ vc,
                          const int32_t* __restrict__ pos, int cap, int window, int T, int nh, int nkv,
                          const float* __restrict__ sinks, float* __restrict__ out) {
  constexpr bool kLo = sizeof(KT) != 2;  // f32 cache: keep the low halves of K and V
  constexpr int KS = D + kPad, VS = kKeys + kPad;
  extern __shared__ __align__(16) __nv_bfloat16 smem[];
  __nv_bfloat16* k_hi = smem;
  __nv_bfloat16* v_hi = k_hi + kKeys * KS;
  __nv_bfloat16* k_lo = v_hi + D * VS;  // only used when kLo
  __nv_bfloat16* v_lo = k_lo + kKeys * KS;

  const int G = nh / nkv, g = blockIdx.y;
  const int qt = gridDim.x - 1 - blockIdx.x;  // the longest key ranges first
  const int t0 = qt * kQ, nq = min(kQ, T - t0);
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int head = g * G + warp;
  const int r = lane / 4, c2 = (lane % 4) * 2;  // fragment row (and r + 8) and column pair

  // This warp's Q rows as A fragments (hi/lo), scaled by 1/sqrt(d). Rows past the chunk are zero.
  uint32_t qa_hi[D / 16][4], qa_lo[D / 16][4];
  {
    const float scale = rsqrtf(float(D));
    const float* q0 = q + (int64_t(t0 + r) * nh + head) * D;
    const float* q8 = q + (int64_t(t0 + r + 8) * nh + head) * D;
    const bool ok0 = r < nq, ok8 = r + 8 < nq;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {  // columns kk*16 + c2 (+8)
        const int c = kk * 16 + c2 + 8 * hf;
        const float2 a = ok0 ? *reinterpret_cast<const float2*>(q0 + c) : float2{0.0f, 0.0f};
        const float2 b = ok8 ? *reinterpret_cast<const float2*>(q8 + c) : float2{0.0f, 0.0f};
        pack_hilo(a.x * scale, a.y * scale, qa_hi[kk][2 * hf], qa_lo[kk][2 * hf]);
        pack_hilo(b.x * scale, b.y * scale, qa_hi[kk][2 * hf + 1], qa_lo[kk][2 * hf + 1]);
      }
    }
  }
  // Positions are consecutive within a chunk: query t is at pos[t].
  const int p_first = pos[t0], p_last = pos[t0 + nq - 1];
  const int pq0 = r < nq ? pos[t0 + r] : p_last, pq8 = r + 8 < nq ? pos[t0 + r + 8] : p_last;
  const int klo = window > 0 ? max(0, p_first - window + 1) : 0;

  float o[D / 8][4];
#pragma unroll
  for (int i = 0; i < D / 8; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
  float m0 = -INFINITY, m8 = -INFINITY, l0 = 0.0f, l8 = 0.0f;  // l: this lane's share of the row sums
  const int64_t row = int64_t(nkv) * D;

  for (int kb = klo; kb <= p_last; kb += kKeys) {
    __syncthreads();  // the previous tile is no longer read
    // Stage keys kb .. kb+63 (zeros past p_last) as bf16 hi/lo: 8 values per thread and step.
    for (int i = threadIdx.x; i < kKeys * (D / 8); i += blockDim.x) {
      const int jj = i / (D / 8), c = (i % (D / 8)) * 8;
      const int j = kb + jj;
      float kv[8], vv[8];
      if (j <= p_last) {
        const int64_t off = int64_t(j % cap) * row + int64_t(g) * D + c;
        load8_kv(kc + off, kv);
        load8_kv(vc + off, vv);
      } else {
#pragma unroll
        for (int e = 0; e < 8; ++e) kv[e] = vv[e] = 0.0f;
      }
#pragma unroll
      for (int e = 0; e < 8; e += 2) {
        uint32_t hi, lo;
        pack_hilo(kv[e], kv[e + 1], hi, lo);
        *reinterpret_cast<uint32_t*>(k_hi + jj * KS + c + e) = hi;
        if constexpr (kLo) *reinterpret_cast<uint32_t*>(k_lo + jj * KS + c + e) = lo;
      }
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        const __nv_bfloat16 h = __float2bfloat16(vv[e]);
        v_hi[(c + e) * VS + jj] = h;
        if constexpr (kLo) v_lo[(c + e) * VS + jj] = __float2bfloat16(vv[e] - __bfloat162float(h));
      }
    }
    __syncthreads();

    // S = Q K^T: 8 column tiles of 8 keys.
    float s[kKeys / 8][4];
#pragma unroll
    for (int nt = 0; nt < kKeys / 8; ++nt) {
      s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
      const __nv_bfloat16* kr = k_hi + (nt * 8 + r) * KS + c2;
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        const uint32_t b0 = *reinterpret_cast<const uint32_t*>(kr + kk * 16);
        const uint32_t b1 = *reinterpret_cast<const uint32_t*>(kr + kk * 16 + 8);
        mma_bf16(s[nt], qa_hi[kk], b0, b1);
        mma_bf16(s[nt], qa_lo[kk], b0, b1);
        if constexpr (kLo) {
          const __nv_bfloat16* kl = k_lo + (nt * 8 + r) * KS + c2;
          mma_bf16(s[nt], qa_hi[kk], *reinterpret_cast<const uint32_t*>(kl + kk * 16),
                   *reinterpret_cast<const uint32_t*>(kl + kk * 16 + 8));
        }
      }
    }
    // Mask (causal + window), row maxima over the quad of lanes that share a row.
    float t0max = -INFINITY, t8max = -INFINITY;
#pragma unroll
    for (int nt = 0; nt < kKeys / 8; ++nt) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int j = kb + nt * 8 + c2 + e;
        if (j > pq0 || (window > 0 && pq0 - j >= window)) s[nt][e] = -INFINITY;
        if (j > pq8 || (window > 0 && pq8 - j >= window)) s[nt][2 + e] = -INFINITY;
        t0max = fmaxf(t0max, s[nt][e]);
        t8max = fmaxf(t8max, s[nt][2 + e]);
      }
    }
#pragma unroll
    for (int x = 1; x <= 2; x <<= 1) {
      t0max = fmaxf(t0max, __shfl_xor_sync(0xffffffffu, t0max, x));
      t8max = fmaxf(t8max, __shfl_xor_sync(0xffffffffu, t8max, x));
    }
    const float n0 = fmaxf(m0, t0max), n8 = fmaxf(m8, t8max);
    const float u0 = n0 == -INFINITY ? 0.0f : n0, u8 = n8 == -INFINITY ? 0.0f : n8;  // rows with no key yet
    const float f0 = expf(m0 - u0), f8 = expf(m8 - u8);
    m0 = n0, m8 = n8;
    l0 *= f0, l8 *= f8;
#pragma unroll
    for (int i = 0; i < D / 8; ++i) o[i][0] *= f0, o[i][1] *= f0, o[i][2] *= f8, o[i][3] *= f8;
    // P as A fragments (keys 16i .. 16i+15 = column tiles 2i, 2i+1), then O += P V.
#pragma unroll
    for (int i = 0; i < kKeys / 16; ++i) {
      float p[2][4];
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        p[h][0] = expf(s[2 * i + h][0] - u0), p[h][1] = expf(s[2 * i + h][1] - u0);
        p[h][2] = expf(s[2 * i + h][2] - u8), p[h][3] = expf(s[2 * i + h][3] - u8);
        l0 += p[h][0] + p[h][1];
        l8 += p[h][2] + p[h][3];
      }
      uint32_t pa_hi[4], pa_lo[4];
      pack_hilo(p[0][0], p[0][1], pa_hi[0], pa_lo[0]);
      pack_hilo(p[0][2], p[0][3], pa_hi[1], pa_lo[1]);
      pack_hilo(p[1][0], p[1][1], pa_hi[2], pa_lo[2]);
      pack_hilo(p[1][2], p[1][3], pa_hi[3], pa_lo[3]);
#pragma unroll
      for (int dn = 0; dn < D / 8; ++dn) {
        const __nv_bfloat16* vr = v_hi + (dn * 8 + r) * VS + i * 16 + c2;
        const uint32_t b0 = *reinterpret_cast<const uint32_t*>(vr), b1 = *reinterpret_cast<const uint32_t*>(vr + 8);
        mma_bf16(o[dn], pa_hi, b0, b1);
        mma_bf16(o[dn], pa_lo, b0, b1);
        if constexpr (kLo) {
          const __nv_bfloat16* vl = v_lo + (dn * 8 + r) * VS + i * 16 + c2;
          mma_bf16(o[dn], pa_hi, *reinterpret_cast<const uint32_t*>(vl), *reinterpret_cast<const uint32_t*>(vl + 8));
        }
      }
    }
  }
  // Row sums over the quad, the sink in the denominator: out = O e^(m-M) / (l e^(m-M) + e^(sink-M)).
#pragma unroll
  for (int x = 1; x <= 2; x <<= 1) {
    l0 += __shfl_xor_sync(0xffffffffu, l0, x);
    l8 += __shfl_xor_sync(0xffffffffu, l8, x);
  }
  const float sink = sinks[head];
  const float M0 = fmaxf(m0, sink), M8 = fmaxf(m8, sink);
  const float a0 = expf(m0 - M0), a8 = expf(m8 - M8);
  const float s0 = a0 / (l0 * a0 + expf(sink - M0)), s8 = a8 / (l8 * a8 + expf(sink - M8));
#pragma unroll
  for (int dn = 0; dn < D / 8; ++dn) {
    const int c = dn * 8 + c2;
    if (r < nq)
      *reinterpret_cast<float2*>(out + (int64_t(t0 + r) * nh + head) * D + c) = float2{o[dn][0] * s0, o[dn][1] * s0};
    if (r + 8 < nq)
      *reinterpret_cast<float2*>(out + (int64_t(t0 + r + 8) * nh + head) * D + c) = float2{o[dn][2] * s8, o[dn][3] * s8};
  }
}

template <typename KT, int D>
cudaError_t launch_prefill(const float* q, const void* kc, const void* vc, const int32_t* pos, int cap, int window,
                           const float* sinks, int T, int nh, int nkv, float* out, cudaStream_t s) {
  constexpr size_t smem = prefill_smem_bytes<KT, D>();
  static const cudaError_t attr =
      cudaFuncSetAttribute(attention_prefill_mma<KT, D>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
  if (attr != cudaSuccess) return attr;
  const dim3 grid{unsigned((T + kQ - 1) / kQ), unsigned(nkv)};
  attention_prefill_mma<KT, D><<<grid, (nh / nkv) * kWarp, smem, s>>>(
      q, static_cast<const KT*>(kc), static_cast<const KT*>(vc), pos, cap, window, T, nh, nkv, sinks, out);
  return cudaSuccess;
}

template <typename KT>
cudaError_t launch_prefill_d(int d, const float* q, const void* kc, const void* vc, const int32_t* pos, int cap,
                             int window, const float* sinks, int T, int nh, int nkv, float* out, cudaStream_t s) {
  switch (d) {
    case 16: return launch_prefill<KT, 16>(q, kc, vc, pos, cap, window, sinks, T, nh, nkv, out, s);
    case 32: return launch_prefill<KT, 32>(q, kc, vc, pos, cap, window, sinks, T, nh, nkv, out, s);
    case 64: return launch_prefill<KT, 64>(q, kc, vc, pos, cap, window, sinks, T, nh, nkv, out, s);
    default: return launch_prefill<KT, 128>(q, kc, vc, pos, cap, window, sinks, T, nh, nkv, out, s);
  }
}

}  // namespace

bool attention_prefill_supported(int nh, int nkv, int d) {
  return nkv > 0 && nh % nkv == 0 && nh / nkv <= 8 && (d == 16 || d == 32 || d == 64 || d == 128);
}

cudaError_t launch_attention_prefill(bool kv_bf16, const float* q, const void* kc, const void* vc, const int32_t* pos,
                                     int cap, int window, const float* sinks, int T, int nh, int nkv, int d, float* out,
                                     cudaStream_t s) {
  return kv_bf16 ? launch_prefill_d<__nv_bfloat16>(d, q, kc, vc, pos, cap, window, sinks, T, nh, nkv, out, s)
                 : launch_prefill_d<float>(d, q, kc, vc, pos, cap, window, sinks, T, nh, nkv, out, s);
}

}  // namespace gptoss::cuda
