// The MoE of a step of many rows (T > kDecodeMaxT: batched decode, prefill chunks) with MXFP4 experts, on the
// tensor cores and without leaving the device:
//   1. moe_route (one block): the step's A = T * k assignments (a = t * k + j: token t's j-th expert idx[a])
//      sorted by expert, stable (a increasing within an expert), and each expert's run cut into tiles of up to
//      kTileTokens assignments: tile = {expert, first slot, count}; the tile count in ntiles.
//   2. moe_stage (block per tile): the tile's inputs converted once into the mma operand order below, in device
//      scratch (xstage; the 22 blocks of a gate_up tile each converted them for themselves before).
//   3. moe_grouped: block (256-row slice, tile) copies its tile's staged inputs into shared memory and multiplies
//      256 rows of the tile's expert with them: each weight is decoded once for up to kTileTokens assignments
//      (the decode kernel decodes it once per assignment). gate_up: input h[a / k], output z[a, I] =
//      SwiGLU(gate + bias, up + bias); down: input z[a], output y[a, H] = product + bias.
//      (2 and 3 run for gate_up, then for down.)
//   4. launch_moe_combine: x[t] += sum_j wts[t, j] * y[t * k + j], in a fixed order (results do not depend on
//      which block finishes first).
// Grids are sized for the most tiles A can make (A / kTileTokens + E); blocks past ntiles return at once, so
// the step needs no host sync (and can be captured in a graph).
//
// The product is moe_decode_tc.cu's (mxfp4_mma.cuh: E2M1 to f16 scaled by the block's scale relative to the
// row's largest, inputs as f16 hi + lo pairs, f32 accumulation): 8 mma columns per n-tile hold 4 inputs as
// (hi, lo) pairs, column g = 2 * input + (0: hi, 1: lo); the C fragment's columns (2q, 2q + 1) are then
// input q's hi and lo, so lane (g, q) ends with input q's sums for rows g and g + 8 of its warp's 16.
// kNTiles n-tiles make a tile of 4 * kNTiles inputs.
//
// Shared memory: the inputs in mma B-operand order, [word wi 4][p 2][n-tile][block nb][column 8] uint2 (b0, b1):
// lane (g, q) of a warp reads column g of its own block b (= b0 + 4s + q), so the 32 lanes read 256
// contiguous bytes. cols = 2880: 46 KB per n-tile.
#include <cuda_fp16.h>

#include <algorithm>
#include <type_traits>

#include "backend/cuda/common.cuh"
#include "backend/cuda/kernels.h"
#include "backend/cuda/mma.cuh"
#include "backend/cuda/mxfp4_mma.cuh"

namespace gptoss::cuda {

namespace {

// Warps per block, 16 rows each. A block stages its tile's inputs once for all its rows, and the registers
// (128 a thread) allow 16 warps an SM: one block of 16 warps halves the staging per row of two blocks of 8
// (bench/cuda_notes.md, session 15).
constexpr int kGWarps = 16;
constexpr int kGSteps = 4;   // 4-block steps fetched per batch (256 bytes of a row), as the decode kernel
constexpr int kRouteThreads = 1024;
constexpr int kStageThreads = 256;
// Largest staging of a block (4 n-tiles of cols <= 3072, 1 of cols <= 12288); above 48 KB it needs the opt-in
// attribute.
constexpr size_t kGroupedMaxSmem = 192 * 1024;

// What a block may stage on this device: kGroupedMaxSmem, or less where the device's opt-in limit is lower
// (99 KB on some parts). The current device's: the backend runs on one.
size_t grouped_smem_limit() {
  static const size_t limit = [] {
    int dev = 0, optin = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess)
      return size_t(48 * 1024);
    return std::min(kGroupedMaxSmem, size_t(optin));
  }();
  return limit;
}

// [wi 4][p 2][n-tile][block cols / 32][column 8] uint2
__host__ __device__ constexpr size_t grouped_smem(int64_t cols, int ntiles) {
  return size_t(cols / 32) * 8 * size_t(ntiles) * 8 * sizeof(uint2);
}

// n-tiles of 4 inputs per tile for a step of A assignments over E experts (inputs of at most cmax columns): each
// weight is decoded once per tile, so the experts' average assignments pick the widest tile they fill (16 from
// 16, 8 from 8); below that a tile of 4 wastes fewer columns.
int grouped_width(int A, int E, int64_t cmax) {
  return A >= 16 * E && grouped_smem(cmax, 4) <= grouped_smem_limit()  ? 4
         : A >= 8 * E && grouped_smem(cmax, 2) <= grouped_smem_limit() ? 2
                                                                       : 1;
}

// One block. idx [A] in shared memory (A * 4 bytes, checked by the launcher); E <= kRouteThreads.
__global__ void __launch_bounds__(kRouteThreads)
    moe_route(const int32_t* __restrict__ idx, int A, int E, int tile_tokens, int32_t* __restrict__ slots,
              int4* __restrict__ tiles, int32_t* __restrict__ ntiles) {
  extern __shared__ int32_t sidx[];  // [A]
  __shared__ int32_t count[kRouteThreads], start[kRouteThreads], tstart[kRouteThreads];
  const int tid = threadIdx.x, lane = tid % kWarp, warp = tid / kWarp, nwarps = blockDim.x / kWarp;
  for (int e = tid; e < E; e += blockDim.x) count[e] = 0;
  __syncthreads();
  for (int a = tid; a < A; a += blockDim.x) {
    const int e = idx[a];
    sidx[a] = e;
    if (e >= 0 && e < E) atomicAdd(&count[e], 1);  // out-of-range experts (never from the router) are dropped
  }
  __syncthreads();
  if (tid == 0) {
    int s = 0, ts = 0;
    for (int e = 0; e < E; ++e) {
      start[e] = s, tstart[e] = ts;
      s += count[e];
      ts += (count[e] + tile_tokens - 1) / tile_tokens;
    }
    *ntiles = ts;
  }
  __syncthreads();
  // Stable placement: a warp per expert walks the assignments 32 at a time; a lane's place is the matches
  // before it (lower a) in earlier chunks and in its own chunk.
  for (int e = warp; e < E; e += nwarps) {
    int placed = start[e];
    for (int a0 = 0; a0 < A; a0 += kWarp) {
      const int a = a0 + lane;
      const bool hit = a < A && sidx[a] == e;
      const unsigned m = __ballot_sync(0xffffffffu, hit);
      if (hit) slots[placed + __popc(m & ((1u << lane) - 1u))] = a;
      placed += __popc(m);
    }
  }
  for (int e = tid; e < E; e += blockDim.x)
    for (int j = 0, f = 0; f < count[e]; ++j, f += tile_tokens)
      tiles[tstart[e] + j] = make_int4(e, start[e] + f, min(tile_tokens, count[e] - f), 0);
}

// Block per tile: its inputs in the grouped kernel's shared-memory order ([wi 4][p 2][n-tile][block nb][column 8]
// uint2) at xstage + tile * grouped_smem(cols, kNTiles) / 8, written once per tile instead of by each of the
// tile's blocks. Item i = (input u, block b, word wi, p) packs values (2p, 2p+4 | 2p+1, 2p+5) of word wi as
// (hi, lo) f16 pairs into columns 2u and 2u + 1 of n-tile u / 4; inputs past the tile's count are zeros. kStage
// items' loads are issued before any is packed: one L2 round trip per kStage items instead of one per item.
// Gate_up's input row of assignment a is in[a / k], down's in[a].
template <int kNTiles, bool kDown>
__global__ void __launch_bounds__(kStageThreads)
    moe_stage(const float* __restrict__ in, int k, int cols, const int32_t* __restrict__ slots,
              const int4* __restrict__ tiles, const int32_t* __restrict__ ntiles, uint2* __restrict__ xstage) {
  constexpr int kTok = 4 * kNTiles;
  const int tile = blockIdx.x;
  if (tile >= *ntiles) return;
  const int4 td = tiles[tile];  // {expert, first slot, count}
  const int nb = cols / 32;
  uint2* xs = xstage + size_t(tile) * (grouped_smem(cols, kNTiles) / 8);
  constexpr int kStage = 8;
  const int count = td.z, items = kTok * nb * 8;
  for (int i0 = threadIdx.x; i0 < items; i0 += kStage * blockDim.x) {
    float2 v01[kStage], v45[kStage];
#pragma unroll
    for (int j = 0; j < kStage; ++j) {
      const int i = i0 + j * blockDim.x, u = i / (nb * 8), rem = i % (nb * 8);
      v01[j] = v45[j] = make_float2(0.0f, 0.0f);
      if (i < items && u < count) {
        const int a = slots[td.y + u];
        const float* xp = in + int64_t(kDown ? a : a / k) * cols + 32 * (rem / 8) + 8 * ((rem / 2) % 4) + 2 * (rem % 2);
        v01[j] = __ldg(reinterpret_cast<const float2*>(xp));
        v45[j] = __ldg(reinterpret_cast<const float2*>(xp + 4));
      }
    }
#pragma unroll
    for (int j = 0; j < kStage; ++j) {
      const int i = i0 + j * blockDim.x, u = i / (nb * 8), rem = i % (nb * 8);
      if (i >= items) break;
      const int b = rem / 8, wi = (rem / 2) % 4, p = rem % 2;
      uint2 hi, lo;
      pack_hilo_f16(v01[j].x, v45[j].x, hi.x, lo.x);
      pack_hilo_f16(v01[j].y, v45[j].y, hi.y, lo.y);
      uint2* dst = xs + ((((wi * 2 + p) * kNTiles + u / 4) * nb + b) * 8 + 2 * (u % 4));
      dst[0] = hi;
      dst[1] = lo;
    }
  }
}

// W: the expert stack [E][R, cols] (MXFP4, row-major); rowmax [E, R]; the tiles' inputs in xstage (moe_stage).
// kDown false (gate_up): rows (2i, 2i + 1) are (gate_i, up_i), out = z [A, R / 2]; kDown true: out = y [A, R].
// bias [E, R].
template <int kNTiles, bool kDown>
__global__ void __launch_bounds__(kGWarps * kWarp)
    f16mma_mxfp4w_moe_grouped(WView w, const uint8_t* __restrict__ rowmax, const int32_t* __restrict__ slots,
                              const int4* __restrict__ tiles, const int32_t* __restrict__ ntiles,
                              const uint2* __restrict__ xstage, const float* __restrict__ bias, float limit,
                              float* __restrict__ out) {
  extern __shared__ uint2 xs[];  // [wi 4][p 2][n-tile][block nb][column 8]
  const int tile = blockIdx.y;
  if (tile >= *ntiles) return;
  const int4 td = tiles[tile];  // {expert, first slot, count}
  const int e = td.x, count = td.z, lane = threadIdx.x % kWarp, g = lane / 4, q = lane % 4;
  const int cols = int(w.cols), nb = cols / 32;
  const int64_t R = w.rows;
  const RowPair rp = row_pair(w, e, (int64_t(blockIdx.x) * kGWarps + threadIdx.x / kWarp) * 16, g, nb);
  const int64_t ra = rp.ra, rb = rp.rb;
  const bool va = rp.va, vb = rp.vb;
  uint4 wa[kGSteps], wb[kGSteps];
  uint32_t ca[kGSteps], cb[kGSteps];
  auto fetch = [&](int b0) { fetch_row_pair(rp, nb, q, b0, wa, wb, ca, cb); };
  fetch(0);  // the first weights in flight while the inputs are copied
  const uint32_t ma = va ? __ldg(rowmax + int64_t(e) * R + ra) : 0u;
  const uint32_t mb = vb ? __ldg(rowmax + int64_t(e) * R + rb) : 0u;

  // The tile's inputs, staged once per tile by moe_stage, copied in (16-byte asynchronous copies, which leave
  // the registers to the weights in flight).
  {
    const size_t n16 = grouped_smem(cols, kNTiles) / 16;
    const float4* src = reinterpret_cast<const float4*>(xstage + size_t(tile) * (grouped_smem(cols, kNTiles) / 8));
    for (size_t i = threadIdx.x; i < n16; i += blockDim.x) cp_async16(reinterpret_cast<float4*>(xs) + i, src + i);
    cp_async_commit();
    cp_async_wait<0>();
  }
  __syncthreads();

  float c[kNTiles][2][4] = {};
  for (int b0 = 0; b0 < nb; b0 += 4 * kGSteps) {
    if (b0 > 0) fetch(b0);
    mma_row_pair<kGSteps, kNTiles, 8>(wa, wb, ca, cb, ma, mb, b0, q, g, nb, true, xs, c);
  }

  // Lane (g, q) holds input nt * 4 + q's sums of rows ra (c0 hi, c1 lo) and rb (c2, c3) of each n-tile.
  const float* bb = bias + int64_t(e) * R;
  const float sa_f = e8m0_to_f32(ma), sb_f = e8m0_to_f32(mb);
#pragma unroll
  for (int nt = 0; nt < kNTiles; ++nt) {
    const int u = nt * 4 + q;
    const float ya = (c[nt][0][0] + c[nt][1][0] + c[nt][0][1] + c[nt][1][1]) * sa_f;
    const float yb = (c[nt][0][2] + c[nt][1][2] + c[nt][0][3] + c[nt][1][3]) * sb_f;
    if constexpr (kDown) {
      if (u < count) {
        const int a = slots[td.y + u];
        if (va) out[int64_t(a) * R + ra] = ya + __ldg(bb + ra);
        if (vb) out[int64_t(a) * R + rb] = yb + __ldg(bb + rb);
      }
    } else {
      // Row pairs (2i, 2i + 1) = (gate, up): the up row of lane (g, q) is in lane (g + 1, q) = lane + 4.
      const float ua = __shfl_down_sync(0xffffffffu, ya, 4), ub = __shfl_down_sync(0xffffffffu, yb, 4);
      if (u < count && (g & 1) == 0) {
        const int a = slots[td.y + u];
        const int64_t I = R / 2;
        if (va && ra + 1 < R)
          out[int64_t(a) * I + ra / 2] = swiglu_clamped(ya + __ldg(bb + ra), ua + __ldg(bb + ra + 1), limit);
        if (vb && rb + 1 < R)
          out[int64_t(a) * I + rb / 2] = swiglu_clamped(yb + __ldg(bb + rb), ub + __ldg(bb + rb + 1), limit);
      }
    }
  }
}

template <int kNTiles, bool kDown>
cudaError_t launch_grouped(const WView& w, const uint8_t* rowmax, const float* in, int k, const int32_t* slots,
                           const int4* tiles, const int32_t* ntiles, int max_tiles, uint2* xstage, const float* bias,
                           float limit, float* out, cudaStream_t s) {
  moe_stage<kNTiles, kDown><<<unsigned(max_tiles), kStageThreads, 0, s>>>(in, k, int(w.cols), slots, tiles, ntiles,
                                                                          xstage);
  static const cudaError_t attr = cudaFuncSetAttribute(f16mma_mxfp4w_moe_grouped<kNTiles, kDown>,
                                                       cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                       int(grouped_smem_limit()));
  if (attr != cudaSuccess) return attr;
  const int rows_per_block = kGWarps * 16;
  const dim3 grid{unsigned((w.rows + rows_per_block - 1) / rows_per_block), unsigned(max_tiles)};
  f16mma_mxfp4w_moe_grouped<kNTiles, kDown><<<grid, kGWarps * kWarp, grouped_smem(w.cols, kNTiles), s>>>(
      w, rowmax, slots, tiles, ntiles, xstage, bias, limit, out);
  return cudaGetLastError();
}

}  // namespace

bool moe_grouped_tc_supported(const WView& gate_up, const WView& down, int A, int E) {
  const int64_t H = gate_up.cols, I = down.cols;
  // A weight is decoded once per tile: past about 64 assignments per expert (8 tiles of 8 when this was
  // measured, 4 of 16 now; not re-measured) decoding each expert once to bf16 for cuBLAS costs less (long
  // prefill chunks: bench/cuda_notes.md).
  return A <= 64 * E && H % 32 == 0 && I % 32 == 0 && gate_up.rows == 2 * I && down.rows == H &&
         E <= kRouteThreads && size_t(A) * sizeof(int32_t) <= 32 * 1024 &&
         grouped_smem(std::max(H, I), 1) <= grouped_smem_limit();
}

// sum over experts of ceil(n_e / t) <= (A + t - 1) / t + E; t = 4 gives the most.
int moe_grouped_tc_max_tiles(int A, int E, int tile_tokens) { return (A + tile_tokens - 1) / tile_tokens + E; }

// The most tiles of the width A picks can stage (launch_moe_grouped_tc picks the same).
size_t moe_grouped_tc_stage_bytes(int A, int E, int64_t H, int64_t I) {
  const int64_t cmax = std::max(H, I);
  const int nt = grouped_width(A, E, cmax);
  return size_t(moe_grouped_tc_max_tiles(A, E, 4 * nt)) * grouped_smem(cmax, nt);
}

cudaError_t launch_moe_grouped_tc(const WView& gate_up, const uint8_t* gate_up_rowmax, const WView& down,
                                  const uint8_t* down_rowmax, const float* h, const int32_t* idx, const float* wts,
                                  int T, int k, int E, const float* gate_up_bias, const float* down_bias, float limit,
                                  const MoeGroupedScratch& sc, float* x, cudaStream_t s) {
  const int A = T * k;
  const int nt = grouped_width(A, E, std::max(gate_up.cols, down.cols));
  const int tile_tokens = 4 * nt;
  const int max_tiles = moe_grouped_tc_max_tiles(A, E, tile_tokens);
  const int4* tiles = reinterpret_cast<const int4*>(sc.tiles);
  moe_route<<<1, kRouteThreads, size_t(A) * sizeof(int32_t), s>>>(idx, A, E, tile_tokens, sc.slots,
                                                                   reinterpret_cast<int4*>(sc.tiles), sc.ntiles);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  auto both = [&](auto nt_c) {  // gate_up (SwiGLU into z), then down (into y), tiles of 4 * kNT inputs
    constexpr int kNT = decltype(nt_c)::value;
    const cudaError_t e = launch_grouped<kNT, false>(gate_up, gate_up_rowmax, h, k, sc.slots, tiles, sc.ntiles,
                                                     max_tiles, sc.xstage, gate_up_bias, limit, sc.z, s);
    return e != cudaSuccess ? e
                            : launch_grouped<kNT, true>(down, down_rowmax, sc.z, k, sc.slots, tiles, sc.ntiles,
                                                        max_tiles, sc.xstage, down_bias, 0.0f, sc.y, s);
  };
  err = nt == 4   ? both(std::integral_constant<int, 4>{})
        : nt == 2 ? both(std::integral_constant<int, 2>{})
                  : both(std::integral_constant<int, 1>{});
  if (err != cudaSuccess) return err;
  launch_moe_combine(sc.y, wts, T, k, int(down.rows), x, s);
  return cudaGetLastError();
}

}  // namespace gptoss::cuda
