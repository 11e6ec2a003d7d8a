// Attention of one layer: YaRN RoPE, KV-cache append, and attention with sinks and an optional
// sliding window (docs/MODEL.md §4.3–4.4). Prefill chunks (T > 8) run attention_prefill.cu and decode steps
// with a bf16 cache attention_decode.cu (tensor cores); this file's split kernel serves the rest (decode
// with an f32 cache, head shapes those kernels do not take): block
// (query t, kv head g, key split s) computes, for the G = nh/nkv query heads sharing kv head g, an
// online softmax over its share of t's visible keys in tiles of 32 keys per warp; a second kernel
// merges the splits with the sink logit (the merge math of both: attention_merge.cuh). Keys of
// position j live in cache slot j % cap (sliding layers keep a ring). Positions come from device memory
// so a captured decode graph stays valid.
#include <cfloat>

#include "backend/cuda/attention_merge.cuh"
#include "backend/cuda/common.cuh"

namespace gptoss::cuda {

namespace {

constexpr int kMaxGroup = 8;    // query heads per kv head (gpt-oss: 64/8)
constexpr int kMaxDim = 128;    // head_dim
constexpr int kAttnWarps = 4;

// RoPE of q and k and the cache append in one launch: per token, threads [0, nh*half) rotate q pairs,
// [nh*half, (nh+nkv)*half) rotate k pairs and store them in the cache, the rest store v pairs.
template <typename KT>
__global__ void f32_rope_kv_append(float* __restrict__ q, float* __restrict__ k, const float* __restrict__ v,
                                   KT* __restrict__ kc, KT* __restrict__ vc, const int32_t* __restrict__ pos,
                                   const float* __restrict__ inv_freq, float mscale, int cap, int T, int nh, int nkv,
                                   int d) {
  const int half = d / 2;
  const int64_t per_t = int64_t(nh + 2 * nkv) * half;
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= per_t * T) return;
  const int t = int(i / per_t);
  const int head = int((i % per_t) / half), j = int(i % half);
  const int64_t slot = int64_t(pos[t] % cap) * nkv * d;
  auto store = [&](KT* c, int64_t off, float val) {
    if constexpr (sizeof(KT) == 2)
      c[off] = __float2bfloat16(val);
    else
      c[off] = val;
  };
  if (head >= nh + nkv) {  // v pair (j, j + half) of kv head h
    const int h = head - nh - nkv;
    const float* vr = v + (int64_t(t) * nkv + h) * d;
    store(vc, slot + int64_t(h) * d + j, vr[j]);
    store(vc, slot + int64_t(h) * d + j + half, vr[j + half]);
    return;
  }
  float* x = head < nh ? q + (int64_t(t) * nh + head) * d : k + (int64_t(t) * nkv + (head - nh)) * d;
  const float2 r = rope_pair(x[j], x[j + half], pos[t], inv_freq[j], mscale);
  const float ra = r.x, rb = r.y;
  x[j] = ra;
  x[j + half] = rb;
  if (head >= nh) {
    const int h = head - nh;
    store(kc, slot + int64_t(h) * d + j, ra);
    store(kc, slot + int64_t(h) * d + j + half, rb);
  }
}

// part[((t*nh + h)*nsplit + s)*(d+2) + ...] = {acc[d] (unnormalised sum of p*v), m (max score), l (sum p)}.
template <typename KT, int DPL>  // DPL: value dims per lane (d <= 32 * DPL)
__global__ void __launch_bounds__(kAttnWarps * kWarp)
    f32_attention_split(const float* __restrict__ q, const KT* __restrict__ kc, const KT* __restrict__ vc,
                        const int32_t* __restrict__ pos, int cap, int window, int nh, int nkv, int d, int nsplit,
                        float* __restrict__ part, const float* __restrict__ sinks, float* __restrict__ out) {
  __shared__ float q_s[kMaxGroup][kMaxDim];
  __shared__ float p_s[kAttnWarps][kMaxGroup][kWarp];
  __shared__ float m_s[kAttnWarps][kMaxGroup], l_s[kAttnWarps][kMaxGroup];
  __shared__ float acc_s[kAttnWarps][kMaxGroup][kMaxDim];
  const int t = blockIdx.x, g = blockIdx.y, sp = blockIdx.z;
  const int G = nh / nkv, lane = threadIdx.x % kWarp, w = threadIdx.x / kWarp;
  const float scale = rsqrtf(float(d));
  for (int i = threadIdx.x; i < G * d; i += blockDim.x)
    q_s[i / d][i % d] = q[(int64_t(t) * nh + g * G + i / d) * d + i % d] * scale;
  __syncthreads();

  const int p = pos[t];
  const int lo = window > 0 ? max(0, p - window + 1) : 0;
  const int n = p - lo + 1, chunk = (n + nsplit - 1) / nsplit;
  const int k0 = lo + sp * chunk, k1 = min(p + 1, k0 + chunk);
  const int64_t row = int64_t(nkv) * d;

  float m[kMaxGroup], l[kMaxGroup], acc[kMaxGroup][DPL];
#pragma unroll
  for (int h = 0; h < kMaxGroup; ++h) {
    m[h] = -FLT_MAX, l[h] = 0.0f;
#pragma unroll
    for (int i = 0; i < DPL; ++i) acc[h][i] = 0.0f;
  }
  for (int tile = k0 + w * kWarp; tile < k1; tile += kAttnWarps * kWarp) {
    const int j = tile + lane;
    const bool valid = j < k1;
    const int nv = min(kWarp, k1 - tile);
    // Value rows in groups of 8 keys, double-buffered: group 0 is requested with the keys, group g+1
    // while group g is used (one round trip of latency per tile instead of one per group).
    float vv[2][8][DPL];
    auto fetch_v = [&](float (&dst)[8][DPL], int j0) {
#pragma unroll
      for (int qq = 0; qq < 8; ++qq) {
        const KT* vr = vc + int64_t((tile + min(j0 + qq, nv - 1)) % cap) * row + int64_t(g) * d;
#pragma unroll
        for (int i = 0; i < DPL; ++i) dst[qq][i] = lane + kWarp * i < d ? to_f32(vr[lane + kWarp * i]) : 0.0f;
      }
    };
    float s[kMaxGroup] = {};
    if (valid) {
      // The key row, 4 chunks of 8 values fetched before they are used.
      const KT* kr = kc + int64_t(j % cap) * row + int64_t(g) * d;
      for (int c0 = 0; c0 < d; c0 += 32) {
        float kv[4][8];
#pragma unroll
        for (int q = 0; q < 4; ++q)
          if (c0 + 8 * q < d) load8_kv(kr + c0 + 8 * q, kv[q]);
        if (c0 == 0) fetch_v(vv[0], 0);
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          if (c0 + 8 * q < d) {
#pragma unroll
            for (int h = 0; h < kMaxGroup; ++h) {
              if (h < G) {
#pragma unroll
                for (int e = 0; e < 8; ++e) s[h] += q_s[h][c0 + 8 * q + e] * kv[q][e];
              }
            }
          }
        }
      }
    } else {
      fetch_v(vv[0], 0);
    }
#pragma unroll
    for (int h = 0; h < kMaxGroup; ++h) {
      if (h < G) {
        const float mt = warp_max(valid ? s[h] : -FLT_MAX);
        const float mn = fmaxf(m[h], mt);
        const float corr = expf(m[h] - mn);
        const float pv = valid ? expf(s[h] - mn) : 0.0f;
        l[h] = l[h] * corr + warp_sum(pv);
        m[h] = mn;
#pragma unroll
        for (int i = 0; i < DPL; ++i) acc[h][i] *= corr;
        p_s[w][h][lane] = pv;
      }
    }
    __syncwarp();
#pragma unroll
    for (int grp = 0; grp < kWarp / 8; ++grp) {
      const int j0 = 8 * grp;
      if (j0 >= nv) break;
      if (grp + 1 < kWarp / 8 && j0 + 8 < nv) fetch_v(vv[(grp + 1) & 1], j0 + 8);
#pragma unroll
      for (int q = 0; q < 8; ++q) {
        if (j0 + q < nv) {
#pragma unroll
          for (int h = 0; h < kMaxGroup; ++h) {
            if (h < G) {
              const float p = p_s[w][h][j0 + q];
#pragma unroll
              for (int i = 0; i < DPL; ++i) acc[h][i] += p * vv[grp & 1][q][i];
            }
          }
        }
      }
    }
    __syncwarp();
  }
  // Merge the warps' partial softmaxes (a warp that saw no key has m = -FLT_MAX, l = 0, acc = 0).
#pragma unroll
  for (int h = 0; h < kMaxGroup; ++h) {
    if (h < G) {
      if (lane == 0) m_s[w][h] = m[h], l_s[w][h] = l[h];
#pragma unroll
      for (int i = 0; i < DPL; ++i)
        if (lane + kWarp * i < d) acc_s[w][h][lane + kWarp * i] = acc[h][i];
    }
  }
  __syncthreads();
  const WarpParts<kAttnWarps, kMaxGroup> parts{&m_s[0][0], &l_s[0][0], &acc_s[0][0][0], kMaxDim};
  if (nsplit == 1) {  // no merge kernel: apply the sink here
    for (int i = threadIdx.x; i < G * d; i += blockDim.x) {
      const int h = i / d, e = i % d;
      out[(int64_t(t) * nh + g * G + h) * d + e] = parts.output(h, e, sinks[g * G + h]);
    }
    return;
  }
  for (int i = threadIdx.x; i < G * (d + 2); i += blockDim.x) {
    const int h = i / (d + 2), e = i % (d + 2);
    part[((int64_t(t) * nh + g * G + h) * nsplit + sp) * (d + 2) + e] = parts.record(h, e, d);
  }
}

// The splits' records merged with the sink (attention_merge.cuh). Block per (t, h): the split weights
// e^(m_s - M) are computed once, in parallel, into shared memory (f_s, nsplit floats); then thread per
// output dim sums over the splits.
__global__ void f32_attention_merge(const float* __restrict__ part, const float* __restrict__ sinks, int nh, int d,
                                    int nsplit, float* __restrict__ out) {
  extern __shared__ float f_s[];
  __shared__ float red[32];
  const int th = blockIdx.x;  // t * nh + h
  const float* pp = part + int64_t(th) * nsplit * (d + 2);
  const float sink = sinks[th % nh];
  float m = -FLT_MAX;
  for (int s = threadIdx.x; s < nsplit; s += blockDim.x)
    m = softmax_part_max(m, pp[s * (d + 2) + d], pp[s * (d + 2) + d + 1]);
  const float M = fmaxf(sink, block_reduce(m, true, red));
  float den = 0.0f;
  for (int s = threadIdx.x; s < nsplit; s += blockDim.x) {
    const float l = pp[s * (d + 2) + d + 1];
    const float f = softmax_part_weight(pp[s * (d + 2) + d], l, M);
    f_s[s] = f;
    den += f * l;
  }
  den = block_reduce(den, false, red) + expf(sink - M);  // also orders the f_s writes before the reads
  for (int e = threadIdx.x; e < d; e += blockDim.x) {
    float a = 0.0f;
#pragma unroll 8
    for (int s = 0; s < nsplit; ++s) a += f_s[s] * pp[s * (d + 2) + e];
    out[int64_t(th) * d + e] = a / den;
  }
}

}  // namespace

void launch_rope_kv_append(bool kv_bf16, float* q, float* k, const float* v, void* kc, void* vc, const int32_t* pos,
                           const float* inv_freq, float mscale, int cap, int T, int nh, int nkv, int d,
                           cudaStream_t s) {
  const int64_t n = int64_t(T) * (nh + 2 * nkv) * (d / 2);
  const unsigned blocks = unsigned((n + 255) / 256);
  if (kv_bf16)
    f32_rope_kv_append<__nv_bfloat16><<<blocks, 256, 0, s>>>(q, k, v, static_cast<__nv_bfloat16*>(kc),
                                                             static_cast<__nv_bfloat16*>(vc), pos, inv_freq, mscale,
                                                             cap, T, nh, nkv, d);
  else
    f32_rope_kv_append<float><<<blocks, 256, 0, s>>>(q, k, v, static_cast<float*>(kc), static_cast<float*>(vc), pos,
                                                     inv_freq, mscale, cap, T, nh, nkv, d);
}

void launch_attention(bool kv_bf16, const float* q, const void* kc, const void* vc, const int32_t* pos, int cap,
                      int window, const float* sinks, int T, int nh, int nkv, int d, int nsplit, float* part,
                      float* out, cudaStream_t s) {
  const dim3 grid{unsigned(T), unsigned(nkv), unsigned(nsplit)};
  const int threads = kAttnWarps * kWarp;
  if (kv_bf16) {
    const auto* kb = static_cast<const __nv_bfloat16*>(kc);
    const auto* vb = static_cast<const __nv_bfloat16*>(vc);
    if (d <= 64)
      f32_attention_split<__nv_bfloat16, 2><<<grid, threads, 0, s>>>(q, kb, vb, pos, cap, window, nh, nkv, d, nsplit,
                                                                    part, sinks, out);
    else
      f32_attention_split<__nv_bfloat16, 4><<<grid, threads, 0, s>>>(q, kb, vb, pos, cap, window, nh, nkv, d, nsplit,
                                                                    part, sinks, out);
  } else {
    const auto* kf = static_cast<const float*>(kc);
    const auto* vf = static_cast<const float*>(vc);
    if (d <= 64)
      f32_attention_split<float, 2><<<grid, threads, 0, s>>>(q, kf, vf, pos, cap, window, nh, nkv, d, nsplit, part,
                                                            sinks, out);
    else
      f32_attention_split<float, 4><<<grid, threads, 0, s>>>(q, kf, vf, pos, cap, window, nh, nkv, d, nsplit, part,
                                                            sinks, out);
  }
  if (nsplit > 1)
    f32_attention_merge<<<unsigned(T * nh), 128, size_t(nsplit) * sizeof(float), s>>>(part, sinks, nh, d, nsplit, out);
}

}  // namespace gptoss::cuda
