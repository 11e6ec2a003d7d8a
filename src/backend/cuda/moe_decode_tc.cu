// The decode MoE's gate_up product (MXFP4 experts, T <= 8 tokens) on the tensor cores. The CUDA-core
// kernel (moe_decode.cu) spends about 5 instructions per weight (E2M1 decode, f16 -> f32 conversion,
// FMA); here a weight costs about 3 (decode to f16 and one packed multiply by its block's scale), and
// mma.sync m16n8k16 does the products with f32 accumulation. Fewer instructions per weight free SM issue
// slots; the kernel's own time stays bound by memory latency, like every 20-35 MB weight kernel of the step
// (bench/cuda_notes.md, round 5).
//
// Numbers: a weight is code * 2^(s - 127) with s its 32-value block's scale byte. The block scales of one
// row differ, but one mma sums over 4 blocks, so each block is scaled relative to its row's largest
// scale smax (precomputed, launch_mxfp4_row_max): w' = code * 2^(s - smax), exact in f16 for
// smax - s <= 23 (smaller blocks weigh < 2^-23 of the row's largest and are flushed); the row's sum is
// multiplied by 2^(smax - 127) in f32. x is split into f16 hi + lo (about 22 significant bits) and
// both are columns of the same mma (n = 0: hi, n = 1: lo), so results match the f32 kernels to ~1e-6.
//
// Layout (m16n8k16, see mma.cuh): a warp owns 16 rows (A rows g and g + 8 per lane, g = lane / 4); lane
// quarter q = lane % 4 reads 16-byte block b = b0 + q of both rows, so a row's 4 lanes read 64
// contiguous bytes per step. The mma's k index is permuted: lane q's logical k (2q, 2q+1 | 2q+8, 2q+9)
// are values (2p, 2p+4 | 2p+1, 2p+5) of word wi of its own block (the pairs fp4x8_half2 yields), and the
// x operand in shared memory is stored in the same order.
#include <cuda_fp16.h>

#include "backend/cuda/common.cuh"
#include "backend/cuda/mma.cuh"
#include "backend/cuda/mxfp4_mma.cuh"

namespace gptoss::cuda {

namespace {

constexpr int kTcWarps = 4;  // warps per block, 16 rows each
// 4-block steps fetched per batch (256 bytes of a row). Bigger batches measured slower (bench/cuda_notes.md,
// round 6).
constexpr int kSteps = 4;

// The router's top-k of one token from its E <= 32 logits, by every warp that needs it (no barrier): each
// lane ranks its logit among all (larger first, the lower index first on ties, as warp_topk_softmax orders
// them) and the lane of rank j is the j-th expert. With out_idx, lane 0 also writes the k experts and their
// softmax weights exactly as warp_topk_softmax does.
__device__ __forceinline__ int warp_topk_pick(const float* logits, int E, int k, int j, int32_t* out_idx,
                                              float* out_wts) {
  const int lane = threadIdx.x % kWarp;
  const float v = lane < E ? logits[lane] : -INFINITY;
  int rank = 0;
#pragma unroll
  for (int i = 0; i < kWarp; ++i) {
    const float u = __shfl_sync(0xffffffffu, v, i);
    rank += i < E && (u > v || (u == v && i < lane));
  }
  const unsigned pick = __ballot_sync(0xffffffffu, lane < E && rank == j);
  if (out_idx) {  // the k selected in order: values shuffled to every lane, lane 0 writes
    float sel[kMaxTopK];
    int sel_i[kMaxTopK];
#pragma unroll
    for (int jj = 0; jj < kMaxTopK; ++jj) {
      if (jj >= k) break;
      const unsigned m = __ballot_sync(0xffffffffu, lane < E && rank == jj);
      sel_i[jj] = m ? __ffs(m) - 1 : 0;
      sel[jj] = __shfl_sync(0xffffffffu, v, sel_i[jj]);
    }
    if (lane == 0) store_topk_softmax(sel, sel_i, k, out_idx, out_wts);
  }
  return pick ? __ffs(pick) - 1 : 0;  // 0 where NaN logits leave no lane of rank j
}

// z[a, i] = swiglu(gate_i + bg, up_i + bu) for assignment a (token a / k, expert idx[a]); W: [2I, H] per
// expert, rows 2i / 2i+1 = gate_i / up_i. rowmax: [E, 2I] largest scale byte of each row.
// kTopk: the expert comes from the router's logits [T, E] instead (warp_topk_pick, E <= 32); the blocks of
// column 0 write each token's idx / wts for the down kernel.
template <int kMinBlocks, bool kTopk>
__global__ void __launch_bounds__(kTcWarps * kWarp, kMinBlocks)
    f16mma_mxfp4w_moe_gate_up_swiglu(WView w, const uint8_t* __restrict__ rowmax, const float* __restrict__ h,
                                     int32_t* __restrict__ idx, int k, const float* __restrict__ bias,
                                     float limit, float* __restrict__ z, const float* __restrict__ logits, int E,
                                     float* __restrict__ wts) {
  extern __shared__ uint2 xs[];  // [word 4][p 2][block nb][hi, lo]: (b0, b1) operands of x; then H raw floats
  const int a = blockIdx.y, lane = threadIdx.x % kWarp, g = lane / 4, q = lane % 4;
  const int H = int(w.cols), nb = H / 32;
  const int64_t R = w.rows, I = R / 2;
  int e;
  if constexpr (kTopk) {
    const int t = a / k, j = a % k;
    const bool writer = blockIdx.x == 0 && j == 0 && threadIdx.x < kWarp;
    e = warp_topk_pick(logits + int64_t(t) * E, E, k, j, writer ? idx + int64_t(t) * k : nullptr,
                       writer ? wts + int64_t(t) * k : nullptr);
  } else {
    e = idx[a];
  }
  const RowPair rp = row_pair(w, e, (int64_t(blockIdx.x) * kTcWarps + threadIdx.x / kWarp) * 16, g, nb);
  const int64_t ra = rp.ra, rb = rp.rb;
  const bool va = rp.va, vb = rp.vb;
  uint4 wa[kSteps], wb[kSteps];
  uint32_t ca[kSteps], cb[kSteps];
  auto fetch = [&](int b0) { fetch_row_pair(rp, nb, q, b0, wa, wb, ca, cb); };
  // The first batch is requested before x is staged: the two latencies overlap.
  fetch(0);
  const uint32_t ma = va ? __ldg(rowmax + int64_t(e) * R + ra) : 0u;
  const uint32_t mb = vb ? __ldg(rowmax + int64_t(e) * R + rb) : 0u;
  // The epilogue's biases (gate, up of rows ra and rb), requested now rather than after the products.
  const float* bb = bias + int64_t(e) * R;
  const bool pair_lane = q == 0 && (g & 1) == 0;  // holds a gate row of the mma's result; its up row is lane + 4
  const bool ea = pair_lane && va && ra + 1 < R, eb = pair_lane && vb && rb + 1 < R;
  const float bga = ea ? __ldg(bb + ra) : 0.0f, bua = ea ? __ldg(bb + ra + 1) : 0.0f;
  const float bgb = eb ? __ldg(bb + rb) : 0.0f, bub = eb ? __ldg(bb + rb + 1) : 0.0f;
  const float* x = h + int64_t(a / k) * H;
  float* raw = reinterpret_cast<float*>(xs + nb * 16);
  // x copied whole (cp.async, one L2 round trip), then permuted from shared memory.
  for (int i = threadIdx.x; i < H / 4; i += blockDim.x)
    cp_async16(reinterpret_cast<float4*>(raw) + i, reinterpret_cast<const float4*>(x) + i);
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();
  x = raw;
  for (int i = threadIdx.x; i < nb * 8; i += blockDim.x) {
    const int b = i / 8, wi = (i / 2) % 4, p = i % 2;
    const float* xp = x + 32 * b + 8 * wi + 2 * p;
    uint32_t hi0, lo0, hi1, lo1;
    pack_hilo_f16(xp[0], xp[4], hi0, lo0);
    pack_hilo_f16(xp[1], xp[5], hi1, lo1);
    uint2* dst = xs + ((wi * 2 + p) * nb + b) * 2;
    dst[0] = make_uint2(hi0, hi1);
    dst[1] = make_uint2(lo0, lo1);
  }
  __syncthreads();
  // Two accumulator chains (p = 0 / 1): each mma waits only for the one before it on its own chain. Tried and
  // not kept (bench/cuda_notes.md, round 8): the next batch requested before the current batch's products, the
  // K range split over 2 warps, every lane loading x with a clamped index instead of the xin predicate (4x the
  // shared-memory reads).
  float c[1][2][4] = {};
  for (int b0 = 0; b0 < nb; b0 += 4 * kSteps) {
    if (b0 > 0) fetch(b0);
    // x columns: n = 0 (hi), 1 (lo) of one n-tile; the rest are 0.
    mma_row_pair<kSteps, 1, 2>(wa, wb, ca, cb, ma, mb, b0, q, g, nb, g < 2, xs, c);
  }
  // Lanes q = 0 hold columns 0 and 1 (hi, lo) of rows ra (c0, c1) and rb (c2, c3).
  const float ya = (c[0][0][0] + c[0][1][0] + c[0][0][1] + c[0][1][1]) * e8m0_to_f32(ma);
  const float yb = (c[0][0][2] + c[0][1][2] + c[0][0][3] + c[0][1][3]) * e8m0_to_f32(mb);
  // Row pairs (2i, 2i + 1) = (gate, up): the up row of lane (g, 0) is in lane (g + 1, 0) = lane + 4.
  const float ua = __shfl_down_sync(0xffffffffu, ya, 4), ub = __shfl_down_sync(0xffffffffu, yb, 4);
  if (ea) z[int64_t(a) * I + ra / 2] = swiglu_clamped(ya + bga, ua + bua, limit);
  if (eb) z[int64_t(a) * I + rb / 2] = swiglu_clamped(yb + bgb, ub + bub, limit);
}

// out[r] = max over the row's scale bytes (rows of nb bytes).
__global__ void mxfp4_row_max(const uint8_t* __restrict__ scales, int64_t rows, int nb, uint8_t* __restrict__ out) {
  const int64_t r = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  uint32_t m = 0;
  for (int b = 0; b < nb; ++b) m = max(m, uint32_t(scales[r * nb + b]));
  out[r] = uint8_t(m);
}

}  // namespace

void launch_mxfp4_row_max(const uint8_t* scales, int64_t rows, int nb, uint8_t* out, cudaStream_t s) {
  mxfp4_row_max<<<unsigned((rows + 255) / 256), 256, 0, s>>>(scales, rows, nb, out);
}

bool launch_moe_gate_up_tc(const WView& gate_up, const uint8_t* rowmax, const float* h, int32_t* idx, int T,
                           int k, const float* bias, float limit, float* z, cudaStream_t s, const float* logits, int E,
                           float* wts) {
  const int64_t H = gate_up.cols, R = gate_up.rows;
  const size_t smem = size_t(H / 32) * 8 * 2 * sizeof(uint2) + size_t(H) * sizeof(float);
  if (!rowmax || H % 32 != 0 || R % 2 != 0 || smem > 48 * 1024 || (logits && (E > kWarp || k > kMaxTopK)))
    return false;
  const int rows_per_block = kTcWarps * 16;
  const dim3 grid{unsigned((R + rows_per_block - 1) / rows_per_block), unsigned(T * k)};
  if (logits)
    f16mma_mxfp4w_moe_gate_up_swiglu<4, true>
        <<<grid, kTcWarps * kWarp, smem, s>>>(gate_up, rowmax, h, idx, k, bias, limit, z, logits, E, wts);
  else
    f16mma_mxfp4w_moe_gate_up_swiglu<4, false>
        <<<grid, kTcWarps * kWarp, smem, s>>>(gate_up, rowmax, h, idx, k, bias, limit, z, nullptr, 0, nullptr);
  return true;
}

}  // namespace gptoss::cuda
