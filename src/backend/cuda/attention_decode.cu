// Decode attention on the tensor cores, for a bf16 KV cache (docs/MODEL.md §4.3): a few query tokens, each
// against all of its visible keys, split over blocks (split-K); the splits are merged with the sink by the
// last block of each (token, kv head) to finish (a ticket per pair; at most attention_decode_max_splits
// splits, whose weights fit the block's shared memory); one split writes the output directly.
// For one token (T == 1) the kernel also applies RoPE: to q as it loads it, and to the new key, which the
// block whose split ends at the token's position stores in the cache and patches into its last tile (no
// other block reads that slot). Both fusions remove a launch that was all latency: the RoPE/append kernel
// and the merge kernel (bench/cuda_notes.md, round 6).
//
// Block = (key split, kv head g, token t), kWarps warps. The G <= 8 query heads of g are the rows of one
// m16n8k16 tile (rows G..15 are zero), so one K/V tile read serves all of them. Each warp walks its own
// 16-key tiles (keys k0 + 16 * (warp + kWarps i)), copied global -> shared with cp.async, double-buffered
// (16-byte copies, coalesced), read back with ldmatrix (V transposed by ldmatrix.trans), S = Q K^T and
// O += P V on the tensor cores with an online softmax in registers; the warps' partial softmaxes are
// combined in shared memory at the end.
// Precision: the cache is bf16 already (exact operands); q and P are split into bf16 hi/lo pairs
// (hi*K + lo*K), so the result matches the CUDA-core kernel and the CPU to f32 rounding.
#include <algorithm>
#include <cfloat>

#include "backend/cuda/attention_merge.cuh"
#include "backend/cuda/common.cuh"
#include "backend/cuda/mma.cuh"

namespace gptoss::cuda {

namespace {

// 8 warps: at short context each warp walks fewer 16-key tiles in sequence (a 512-key split: 4 instead of 8).
// More keys in flight per SM than 4 warps; 16 warps (one 144 KB block per SM) was slower (bench/cuda_notes.md,
// round 9).
constexpr int kWarps = 8;
constexpr int kPad = 8;    // bf16 per smem row: 16-byte aligned rows, conflict-free ldmatrix
constexpr int kMaxGroupDecode = 8;  // query heads per kv head: the rows of one m16n8k16 tile's upper half

// Per warp: kStages x (K, V) x kKeys rows of D + kPad bf16.
template <int D, int kKeys, int kStages>
constexpr size_t decode_smem_bytes() {
  return size_t(kWarps) * kStages * 2 * kKeys * (D + kPad) * sizeof(__nv_bfloat16);
}

// Floats of shared memory the in-kernel merge needs: the split weights [G][nsplit] and each head's denominator.
__host__ __device__ constexpr int merge_floats(int G, int nsplit) { return G * nsplit + kMaxGroupDecode; }

template <int D, int kKeys, int kStages, bool kRope>
__global__ void __launch_bounds__(kWarps * kWarp)
    attention_decode_mma(const float* __restrict__ q, __nv_bfloat16* __restrict__ kc, __nv_bfloat16* __restrict__ vc,
                         const int32_t* __restrict__ pos, int cap, int window,
                         int nh, int nkv, int nsplit, float* __restrict__ part, const float* __restrict__ sinks,
                         float* __restrict__ out, DecodeFusion fuse) {
  constexpr int RS = D + kPad;
  extern __shared__ __align__(16) __nv_bfloat16 sm[];
  const int sp = blockIdx.x, g = blockIdx.y, t = blockIdx.z;
  const int G = nh / nkv, warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int r = lane / 4, c2 = (lane % 4) * 2;
  __nv_bfloat16* wbuf = sm + size_t(warp) * kStages * 2 * kKeys * RS;  // [stage][K, V][kKeys][RS]
  auto kbuf = [&](int st) { return wbuf + size_t(st) * 2 * kKeys * RS; };
  auto vbuf = [&](int st) { return wbuf + size_t(st) * 2 * kKeys * RS + kKeys * RS; };

  // This lane's q values, requested before the position: their load is not one more round trip after it.
  float2 qv[D / 8];
  {
    const float* qr = q + (int64_t(t) * nh + g * G + r) * D;
#pragma unroll
    for (int u = 0; u < D / 8; ++u)
      qv[u] = r < G ? *reinterpret_cast<const float2*>(qr + 8 * u + c2) : float2{0.0f, 0.0f};
  }
  const int p = pos[t];
  const int lo = window > 0 ? max(0, p - window + 1) : 0;
  const int n = p - lo + 1, chunk = (n + nsplit - 1) / nsplit;
  const int k0 = lo + sp * chunk, k1 = min(p + 1, k0 + chunk);
  const int64_t row = int64_t(nkv) * D;
  // The sinks of g's heads, requested now: read only at the end (the output or the merge), where their load
  // would be one more round trip after the last tile. Published in sink_s with the warps' partials below.
  __shared__ float sink_s[kMaxGroupDecode];
  const float my_sink = threadIdx.x < G ? sinks[g * G + threadIdx.x] : 0.0f;

  // The first tiles are requested as soon as the position is known; the new key, q's rotation and its
  // bf16 split below overlap their flight (the tile holding slot p is patched after it lands).
  // Keys kb .. kb + kKeys - 1 into stage st (rows past k1 repeat key k1-1; they are masked).
  auto issue = [&](int kb, int st) {
    __nv_bfloat16 *kd = kbuf(st), *vd = vbuf(st);
    for (int i = lane; i < kKeys * (D / 8); i += kWarp) {
      const int jj = i / (D / 8), c = (i % (D / 8)) * 8;
      const int j = min(kb + jj, k1 - 1);
      const int64_t off = int64_t(j % cap) * row + int64_t(g) * D + c;
      cp_async16(kd + jj * RS + c, kc + off);
      cp_async16(vd + jj * RS + c, vc + off);
    }
    cp_async_commit();
  };

  float o[D / 8][4];
#pragma unroll
  for (int i = 0; i < D / 8; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
  float m = -INFINITY, l = 0.0f;  // row r; l: this lane's share
  // kStages - 1 tiles in flight ahead of the one in use. A tile past k1 is an empty commit group, so that
  // cp_async_wait<kStages - 1> always means "the tile of this iteration has landed".
  constexpr int kStep = kWarps * kKeys;
  int st = 0;
  int kb = k0 + warp * kKeys;
#pragma unroll
  for (int i = 0; i < kStages - 1; ++i) {
    if (kb + i * kStep < k1)
      issue(kb + i * kStep, i);
    else
      cp_async_commit();
  }
  // The new key and value (kRope): the block whose split ends at p stores them, rotated and rounded to bf16,
  // in the cache, and its warp that owns p's tile keeps them to patch that tile (its cp.async copy of slot p
  // may read the old contents). Lane j holds the pairs (j, j + D/2) + 32 i.
  constexpr int kPairs = (D / 2 + kWarp - 1) / kWarp;
  const bool own = kRope && p >= k0 && p < k1;
  const bool own_warp = own && ((p - k0) / kKeys) % kWarps == warp;
  __nv_bfloat16 nk[kPairs][2], nv[kPairs][2];
  if (own_warp) {
    const int64_t base = int64_t(p % cap) * row + int64_t(g) * D;
#pragma unroll
    for (int i = 0; i < kPairs; ++i) {
      const int j = lane + kWarp * i;
      if (j >= D / 2) break;
      const float* kr = fuse.k + int64_t(g) * D;
      const float* vr = fuse.v + int64_t(g) * D;
      const float2 rk = rope_pair(kr[j], kr[j + D / 2], p, fuse.inv_freq[j], fuse.mscale);
      nk[i][0] = __float2bfloat16(rk.x), nk[i][1] = __float2bfloat16(rk.y);
      nv[i][0] = __float2bfloat16(vr[j]), nv[i][1] = __float2bfloat16(vr[j + D / 2]);
      kc[base + j] = nk[i][0], kc[base + j + D / 2] = nk[i][1];  // the cache's slot p: written once per step
      vc[base + j] = nv[i][0], vc[base + j + D / 2] = nv[i][1];
    }
  }

  // Q rows (heads of g) as A fragments; rows r + 8 are padding (zero). Lane (r, c2) holds elements
  // 8u + c2, +1 of row r (u = 2 kk + hf); RoPE pairs element e with e + D/2, i.e. slot u with u + D/16.
  uint32_t qa_hi[D / 16][4], qa_lo[D / 16][4];
  {
    const float scale = rsqrtf(float(D));
    if constexpr (kRope) {
#pragma unroll
      for (int u = 0; u < D / 16; ++u) {
        float* lo_pair = &qv[u].x;
        float* hi_pair = &qv[u + D / 16].x;
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const float2 rq = rope_pair(lo_pair[e], hi_pair[e], p, fuse.inv_freq[8 * u + c2 + e], fuse.mscale);
          lo_pair[e] = rq.x;
          hi_pair[e] = rq.y;
        }
      }
    }
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
        const float2 a = qv[2 * kk + hf];
        pack_hilo(a.x * scale, a.y * scale, qa_hi[kk][2 * hf], qa_lo[kk][2 * hf]);
        qa_hi[kk][2 * hf + 1] = qa_lo[kk][2 * hf + 1] = 0u;
      }
    }
  }
  for (; kb < k1; kb += kStep) {
    if (kb + (kStages - 1) * kStep < k1)
      issue(kb + (kStages - 1) * kStep, (st + kStages - 1) % kStages);  // the slot of the tile used last
    else
      cp_async_commit();
    cp_async_wait<kStages - 1>();
    __syncwarp();  // every lane's copies of this stage are done
    if (own_warp && p >= kb && p < kb + kKeys) {  // key p and the padding rows after it (copies of key p)
      for (int jj = p - kb; jj < kKeys; ++jj) {
#pragma unroll
        for (int i = 0; i < kPairs; ++i) {
          const int j = lane + kWarp * i;
          if (j >= D / 2) break;
          kbuf(st)[jj * RS + j] = nk[i][0], kbuf(st)[jj * RS + j + D / 2] = nk[i][1];
          vbuf(st)[jj * RS + j] = nv[i][0], vbuf(st)[jj * RS + j + D / 2] = nv[i][1];
        }
      }
      __syncwarp();
    }
    const __nv_bfloat16 *K = kbuf(st), *V = vbuf(st);
    const int mrow = (lane & 7) + ((lane >> 3) & 1) * 8;  // ldmatrix row of lanes 0-15
    float s[kKeys / 8][4];
#pragma unroll
    for (int nt = 0; nt < kKeys / 8; ++nt) {
      s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        uint32_t b0, b1;
        ldmatrix_x2(b0, b1, K + (nt * 8 + (lane & 7)) * RS + kk * 16 + ((lane >> 3) & 1) * 8);
        mma_bf16(s[nt], qa_hi[kk], b0, b1);
        mma_bf16(s[nt], qa_lo[kk], b0, b1);
      }
    }
    float tmax = -INFINITY;
#pragma unroll
    for (int nt = 0; nt < kKeys / 8; ++nt) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        if (kb + nt * 8 + c2 + e >= k1) s[nt][e] = -INFINITY;
        tmax = fmaxf(tmax, s[nt][e]);
      }
    }
    tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 1));
    tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 2));
    const float mn = fmaxf(m, tmax);  // finite: the tile's first key is valid
    const float f = expf(m - mn);
    m = mn;
    l *= f;
#pragma unroll
    for (int i = 0; i < D / 8; ++i) o[i][0] *= f, o[i][1] *= f;
#pragma unroll
    for (int i = 0; i < kKeys / 16; ++i) {
      const float p00 = expf(s[2 * i][0] - mn), p01 = expf(s[2 * i][1] - mn);
      const float p10 = expf(s[2 * i + 1][0] - mn), p11 = expf(s[2 * i + 1][1] - mn);
      l += p00 + p01 + p10 + p11;
      uint32_t pa_hi[4], pa_lo[4];
      pack_hilo(p00, p01, pa_hi[0], pa_lo[0]);
      pack_hilo(p10, p11, pa_hi[2], pa_lo[2]);
      pa_hi[1] = pa_lo[1] = pa_hi[3] = pa_lo[3] = 0u;  // padding rows
#pragma unroll
      for (int dn = 0; dn < D / 8; ++dn) {
        uint32_t b0, b1;
        ldmatrix_x2_trans(b0, b1, V + (i * 16 + mrow) * RS + dn * 8);
        mma_bf16(o[dn], pa_hi, b0, b1);
        mma_bf16(o[dn], pa_lo, b0, b1);
      }
    }
    __syncwarp();  // this stage is read; the next iteration's copies may overwrite it
    st = (st + 1) % kStages;
  }
  l += __shfl_xor_sync(0xffffffffu, l, 1);
  l += __shfl_xor_sync(0xffffffffu, l, 2);

  // Combine the warps: m_s / l_s [warp][8], o_s [warp][8][D] (rows < G), over the staging memory.
  __syncthreads();
  float* fs = reinterpret_cast<float*>(sm);
  float *m_s = fs, *l_s = fs + kWarps * 8, *o_s = fs + 2 * kWarps * 8;
  if (lane % 4 == 0) m_s[warp * 8 + r] = m, l_s[warp * 8 + r] = l;
  if (threadIdx.x < G) sink_s[threadIdx.x] = my_sink;
#pragma unroll
  for (int dn = 0; dn < D / 8; ++dn) {
    o_s[(warp * 8 + r) * D + dn * 8 + c2] = o[dn][0];
    o_s[(warp * 8 + r) * D + dn * 8 + c2 + 1] = o[dn][1];
  }
  __syncthreads();
  const WarpParts<kWarps, kMaxGroupDecode> parts{m_s, l_s, o_s, D};
  if (nsplit == 1) {  // the final output, with the sink
    for (int i = threadIdx.x; i < G * D; i += blockDim.x) {
      const int h = i / D, e = i % D;
      out[(int64_t(t) * nh + g * G + h) * D + e] = parts.output(h, e, sink_s[h]);
    }
    return;
  }
  for (int i = threadIdx.x; i < G * (D + 2); i += blockDim.x) {
    const int h = i / (D + 2), e = i % (D + 2);
    part[((int64_t(t) * nh + g * G + h) * nsplit + sp) * (D + 2) + e] = parts.record(h, e, D);
  }
  // Publish this split, take a ticket; the last of the nsplit blocks of (t, g) sees every split and merges
  // them with the sink (attention_merge.cuh), as f32_attention_merge does, a warp per head.
  __shared__ bool last;
  __threadfence();
  __syncthreads();
  unsigned* ticket = fuse.tickets + int64_t(t) * nkv + g;
  if (threadIdx.x == 0) last = atomicAdd(ticket, 1u) == unsigned(nsplit - 1);
  __syncthreads();  // also: every thread is done with o_s, whose memory the merge reuses
  if (!last) return;
  __threadfence();
  float* f_s = fs;                             // [G][nsplit] split weights
  float* den_s = fs + G * nsplit;              // [G]
  const float* pt = part + (int64_t(t) * nh + g * G) * nsplit * (D + 2);
  for (int h = warp; h < G; h += kWarps) {
    const float* ph = pt + int64_t(h) * nsplit * (D + 2);
    const float sink = sink_s[h];
    float mx = -FLT_MAX;
    for (int s2 = lane; s2 < nsplit; s2 += kWarp)
      mx = softmax_part_max(mx, __ldcg(ph + s2 * (D + 2) + D), __ldcg(ph + s2 * (D + 2) + D + 1));
    const float M = fmaxf(sink, warp_max(mx));
    float den = 0.0f;
    for (int s2 = lane; s2 < nsplit; s2 += kWarp) {
      const float ls = __ldcg(ph + s2 * (D + 2) + D + 1);
      const float f = softmax_part_weight(__ldcg(ph + s2 * (D + 2) + D), ls, M);
      f_s[h * nsplit + s2] = f;
      den += f * ls;
    }
    den = warp_sum(den);
    if (lane == 0) den_s[h] = den + expf(sink - M);
  }
  __syncthreads();
  for (int i = threadIdx.x; i < G * D; i += blockDim.x) {
    const int h = i / D, e = i % D;
    const float* ph = pt + int64_t(h) * nsplit * (D + 2) + e;
    float a = 0.0f;
    for (int s2 = 0; s2 < nsplit; ++s2) a += f_s[h * nsplit + s2] * __ldcg(ph + s2 * (D + 2));
    out[(int64_t(t) * nh + g * G + h) * D + e] = a / den_s[h];
  }
  if (threadIdx.x == 0) *ticket = 0u;  // ready for the next launch (graph replays included)
}

template <int D, int kKeys, int kStages, bool kRope>
cudaError_t launch_dk(const float* q, void* kc, void* vc, const int32_t* pos, int cap, int window,
                      const float* sinks, int T, int nh, int nkv, int nsplit, float* part, float* out,
                      const DecodeFusion& fuse, cudaStream_t s) {
  constexpr size_t smem = decode_smem_bytes<D, kKeys, kStages>();
  static_assert(smem >= (2 * kWarps * 8 + kWarps * 8 * D) * sizeof(float), "the warps' combine reuses the staging");
  static_assert(smem <= 227 * 1024, "the staging exceeds a block's largest dynamic shared memory");
  static const cudaError_t attr = cudaFuncSetAttribute(attention_decode_mma<D, kKeys, kStages, kRope>,
                                                       cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
  if (attr != cudaSuccess) return attr;
  if (nsplit > 1 && (!fuse.tickets || size_t(merge_floats(nh / nkv, nsplit)) * sizeof(float) > smem))
    return cudaErrorInvalidValue;
  attention_decode_mma<D, kKeys, kStages, kRope>
      <<<dim3{unsigned(nsplit), unsigned(nkv), unsigned(T)}, kWarps * kWarp, smem, s>>>(
          q, static_cast<__nv_bfloat16*>(kc), static_cast<__nv_bfloat16*>(vc), pos, cap, window, nh, nkv, nsplit,
          part, sinks, out, fuse);
  return cudaSuccess;
}

// 16-key tiles: half the staging of 32-key ones (37 KB instead of 74 KB per block of 4 warps), twice the
// resident blocks, which helps at long context (bench/cuda_notes.md, round 4).
constexpr int kKeysPerTile = 16;
// Two stages (one tile in flight ahead of the one in use): 4 stages measured slower (bench/cuda_notes.md,
// round 6).
constexpr int kStages = 2;
template <int D>
cudaError_t launch_d(const float* q, void* kc, void* vc, const int32_t* pos, int cap, int window,
                     const float* sinks, int T, int nh, int nkv, int nsplit, float* part, float* out,
                     const DecodeFusion& fuse, cudaStream_t s) {
  if (fuse.k)
    return launch_dk<D, kKeysPerTile, kStages, true>(q, kc, vc, pos, cap, window, sinks, T, nh, nkv, nsplit, part, out,
                                                     fuse, s);
  return launch_dk<D, kKeysPerTile, kStages, false>(q, kc, vc, pos, cap, window, sinks, T, nh, nkv, nsplit, part, out,
                                                    fuse, s);
}

}  // namespace

int attention_decode_max_splits(int nh, int nkv, int d) {
  // The in-kernel merge keeps G * nsplit + 8 floats in the staging memory.
  const size_t floats = (d <= 16   ? decode_smem_bytes<16, kKeysPerTile, kStages>()
                         : d <= 32 ? decode_smem_bytes<32, kKeysPerTile, kStages>()
                         : d <= 64 ? decode_smem_bytes<64, kKeysPerTile, kStages>()
                                   : decode_smem_bytes<128, kKeysPerTile, kStages>()) /
                        sizeof(float);
  return int((floats - kMaxGroupDecode) / size_t(std::max(1, nh / std::max(1, nkv))));
}

bool attention_decode_supported(int nh, int nkv, int d) {
  return nkv > 0 && nh % nkv == 0 && nh / nkv <= 8 && (d == 16 || d == 32 || d == 64 || d == 128);
}

cudaError_t launch_attention_decode(const float* q, void* kc, void* vc, const int32_t* pos, int cap, int window,
                                    const float* sinks, int T, int nh, int nkv, int d, int nsplit, float* part,
                                    float* out, const DecodeFusion& fuse, cudaStream_t s) {
  if (fuse.k && T != 1) return cudaErrorInvalidValue;  // RoPE in the kernel: one token only
  switch (d) {
    case 16: return launch_d<16>(q, kc, vc, pos, cap, window, sinks, T, nh, nkv, nsplit, part, out, fuse, s);
    case 32: return launch_d<32>(q, kc, vc, pos, cap, window, sinks, T, nh, nkv, nsplit, part, out, fuse, s);
    case 64: return launch_d<64>(q, kc, vc, pos, cap, window, sinks, T, nh, nkv, nsplit, part, out, fuse, s);
    default: return launch_d<128>(q, kc, vc, pos, cap, window, sinks, T, nh, nkv, nsplit, part, out, fuse, s);
  }
}

}  // namespace gptoss::cuda
