// Launchers of the CUDA kernels, one group per .cu file; host-includable (no device code). All run
// on `stream`; pointers are device
// pointers; activations are f32 row-major [T, n]. Kernel names encode the activation and weight
// types (f32_bf16w_..., f32_mxfp4w_...).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>


namespace gptoss::cuda {

inline constexpr int kWarp = 32;

// A weight matrix on the device in its stored format (see core/matrix.h for layouts):
//  kF32 / kBF16: row-major [rows, cols];  kMXFP4: blocks [rows, cols/32, 16] + scales [rows, cols/32].
//  kBF12: a bf16 matrix packed losslessly on the device (packed_bf16.cu): data = the low byte of every bf16
//  [rows, cols], nib = a 4-bit code per weight [rows, cols/2] (sign + the exponent's upper 7 bits as an
//  offset 0..7 from the row's base), meta [rows + 1] = (first escape << 8) | base, esc = the weights outside
//  the row's window as (column, exact value), applied as corrections. Single matrices only.
// An expert stack (core/matrix.h ExpertStack) is one WView: expert e's data lies e * stride bytes after `data`,
// its scales e * scales_stride bytes after `scales` (both 0 for a single matrix).
// Wt is a plain enum (not enum class): the kernels take it as an int template parameter (template <int WT>).
enum Wt : int { kF32 = 0, kBF16 = 1, kMXFP4 = 2, kBF12 = 3 };
struct WView {
  const uint8_t* data;
  const uint8_t* scales;
  int64_t rows, cols;
  int64_t stride, scales_stride;
  const uint8_t* nib = nullptr;     // kBF12 only
  const uint32_t* meta = nullptr;   // kBF12 only
  const float2* esc = nullptr;      // kBF12 only: {column as int bits, weight}
};

// ---- matvec.cu: dense products for few tokens (decode), weights read once for up to 4 tokens.
// y[t, r] = sum_c W[r, c] x[t, c] + bias[r]   (W row-major, any stored type)
// accumulate: y[t, r] += (the same) instead (residual add fused into the product).
void launch_matvec(Wt wt, const WView& w, const float* x, int T, const float* bias, float* y, cudaStream_t s,
                   bool accumulate = false);
// Same for transposed dense storage W[c, r] (f32 or bf16 only): thread per output column.
void launch_matvec_transposed(Wt wt, const WView& w, const float* x, int T, const float* bias, float* y,
                              cudaStream_t s);
// out[r, c] = bf16(W[r, c]) for expert e, from any stored type (transposed: W stored [c, r]).
void launch_weight_to_bf16(Wt wt, bool transposed, const WView& w, int e, __nv_bfloat16* out, cudaStream_t s);

// ---- packed_bf16.cu: the lossless packing of a bf16 matrix w [rows, cols] (cols % 8 == 0), in two passes:
// base[r] and the number of escapes cnt[r] of each row; then, with meta = (exclusive prefix of cnt << 8) |
// base (rows + 1 words, computed by the caller), the planes and the escapes.
void launch_bf16_pack_rows(const uint16_t* w, int64_t rows, int64_t cols, uint8_t* base, uint32_t* cnt, cudaStream_t s);
void launch_bf16_pack(const uint16_t* w, int64_t rows, int64_t cols, const uint32_t* meta, uint8_t* lo, uint8_t* nib,
                      float2* esc, cudaStream_t s);
// out[r, c] = W[r, c] for the escapes of a kBF12 matrix (after launch_weight_to_bf16 decoded the planes).
void launch_bf12_patch_escapes(const WView& w, __nv_bfloat16* out, cudaStream_t s);

// ---- elementwise.cu
void launch_embed(Wt wt, const void* table, int64_t cols, const int32_t* tokens, int T, float* x, cudaStream_t s);
void launch_rmsnorm(const float* x, const float* w, int T, int n, float eps, float* y, cudaStream_t s);
void launch_add(float* x, const float* y, size_t n, cudaStream_t s);
// y[R, n] = x[rows[i], :] (rows on the device)
void launch_gather_rows(const float* x, const int32_t* rows, int R, int n, float* y, cudaStream_t s);
// y[i] = s[i] + s[n + i] (i < n): sums the hi and lo halves of one GEMM over a bf16 pair [hi; lo].
void launch_sum_halves(const float* s, size_t n, float* y, cudaStream_t st);
// y[0, n) = bf16(x), y[n, 2n) = bf16(x - y[0, n)): the hi/lo pair the prefill GEMMs run on.
void launch_f32_to_bf16x2(const float* x, size_t n, __nv_bfloat16* y, cudaStream_t s);
// y[t, r] += bias[r]
void launch_add_bias(float* y, const float* bias, int T, int n, cudaStream_t s);

// ---- draw.cu
// out[0] = argmax(x[0..n)) (first index on ties). part: scratch of 2 * kArgmaxBlocks words; out[1]: a ticket
// word, 0 before the launch (left 0 after it). step (optional): also step[0] = the id, step[1] = pos, the input
// of the next one-token step (chained greedy decoding: no kernel of its own between the two steps).
inline constexpr int kArgmaxBlocks = 128;
void launch_argmax(const float* x, int n, int32_t* part, int32_t* out, cudaStream_t s, int32_t* step = nullptr,
                   int pos = 0);
// out[0] = the draw of Sampler::sample_at(x[0..n), u) at this temperature (inverse CDF in id order of
// softmax(x / T)). part: the same scratch as launch_argmax.
// Greedy ids of R rows x [R, n] in one launch: out[2 * r] = argmax of row r (the odd words are left alone).
void launch_argmax_rows(const float* x, int R, int n, int32_t* out, cudaStream_t s);
void launch_sample(const float* x, int n, float temperature, double u, int32_t* part, int32_t* out, cudaStream_t s);

// ---- attention.cu
// q [T, nh, d] and k [T, nkv, d] rotated in place (half-split YaRN RoPE) at positions pos[T], and the
// rotated k and v appended to cache rows [cap, nkv, d] of type bf16 (kv_bf16) or f32: token t goes to
// slot pos[t] % cap. One launch.
void launch_rope_kv_append(bool kv_bf16, float* q, float* k, const float* v, void* kc, void* vc, const int32_t* pos,
                           const float* inv_freq, float mscale, int cap, int T, int nh, int nkv, int d,
                           cudaStream_t s);
// Attention with sinks over each query's visible keys, split over nsplit key ranges, then merged.
// part: scratch of T*nh*nsplit*(d+2) floats (unused when nsplit == 1: the split kernel writes out).
void launch_attention(bool kv_bf16, const float* q, const void* kc, const void* vc, const int32_t* pos, int cap,
                      int window, const float* sinks, int T, int nh, int nkv, int d, int nsplit, float* part,
                      float* out, cudaStream_t s);

// ---- decode_fused.cu: RMSNorm fused into its consumers for steps of T <= kFusedMaxT tokens. Both return
// false (nothing launched) for shapes they do not take.
inline constexpr int kFusedMaxT = 4;
// y[i][t, :] = rmsnorm(x[t]; nw, eps) W_i^T + bias[i] for i < n <= 3 matrices of one type, one launch.
bool launch_norm_matvec3(Wt wt, const WView* w, const float* const* bias, float* const* y, int n, const float* x,
                         const float* nw, float eps, int T, cudaStream_t s);
// h = rmsnorm(x; nw, eps) [T, H]; logits [T, E] = h W^T + bias; idx / wts [T, k] = top-k + softmax (as
// launch_router_topk). counter: a device word that is 0 before the launch (left 0 after it).
// topk false: logits (and h) only, no top-k (the gate_up kernel picks the experts: launch_moe_mxfp4_decode).
bool launch_norm_router_topk(Wt wt, const WView& w, const float* bias, const float* x, const float* nw, float eps,
                             int T, int k, float* h, float* logits, int32_t* idx, float* wts, unsigned* counter,
                             cudaStream_t s, bool topk = true);

// ---- attention_decode.cu: the decode attention (T <= 8 tokens) for a bf16 cache on the tensor cores, same
// split layout as launch_attention, splits merged in the kernel (nsplit <= attention_decode_max_splits).
// Supported: nh/nkv <= 8, d in {16, 32, 64, 128}.
bool attention_decode_supported(int nh, int nkv, int d);
int attention_decode_max_splits(int nh, int nkv, int d);
// What the decode kernel does besides attending:
struct DecodeFusion {
  // T == 1: q and k as the q/k/v product left them (not rotated); the kernel applies RoPE (inv_freq [d/2],
  // mscale) to q and to the new key, and stores the new key and value v [nkv, d] at slot pos[0] % cap.
  // nullptr: launch_rope_kv_append ran first.
  const float* k = nullptr;
  const float* v = nullptr;
  const float* inv_freq = nullptr;
  float mscale = 1.0f;
  // [T * nkv] words, 0 before the launch and left 0 (required when nsplit > 1): the splits are merged by
  // the last block of each (token, kv head) to finish, instead of a launch of f32_attention_merge.
  unsigned* tickets = nullptr;
};
cudaError_t launch_attention_decode(const float* q, void* kc, void* vc, const int32_t* pos, int cap, int window,
                                    const float* sinks, int T, int nh, int nkv, int d, int nsplit, float* part,
                                    float* out, const DecodeFusion& fuse, cudaStream_t s);
// One sequence of a batched decode launch, for one layer: one token (row `row` of the step), its own cache.
struct DecodeSeq {
  void* k = nullptr;  // the layer's bf16 cache of the sequence, [cap, nkv, d] each
  void* v = nullptr;
  int32_t cap = 0;     // its slots (position p in slot p % cap)
  int32_t row = 0;     // the token's row of the step: q [row, nh, d], k / v [row, nkv, d], out, pos[row]
  int32_t nsplit = 1;  // its key splits, <= the launch's nsplit (what launch_attention_decode would get alone)
  int32_t pad = 0;
};
// launch_attention_decode of one token for each of nseq sequences (seqs [nseq], on the device) in ONE launch,
// RoPE and the append in the kernel (fuse.k, fuse.v: the step's [T, nkv, d] rows, indexed by DecodeSeq::row;
// fuse.tickets: [nseq * nkv] words, 0 before and after). Each sequence's blocks do exactly what the
// one-token launch of that sequence alone does. nsplit: the largest of seqs[].nsplit (grid x); part:
// [nseq, nh, nsplit, d + 2] floats. Distinct sequences only (no two share a cache).
cudaError_t launch_attention_decode_batch(const float* q, const DecodeSeq* seqs, int nseq, const int32_t* pos,
                                          int window, const float* sinks, int nh, int nkv, int d, int nsplit,
                                          float* part, float* out, const DecodeFusion& fuse, cudaStream_t s);

// ---- attention_prefill.cu: the same attention for a prefill chunk on the tensor cores (mma.sync,
// operands as bf16 hi/lo pairs). Supported: nh/nkv <= 8 and d in {16, 32, 64, 128}.
bool attention_prefill_supported(int nh, int nkv, int d);
cudaError_t launch_attention_prefill(bool kv_bf16, const float* q, const void* kc, const void* vc, const int32_t* pos,
                                     int cap, int window, const float* sinks, int T, int nh, int nkv, int d, float* out,
                                     cudaStream_t s);

// ---- moe.cu
// idx[t, j], wts[t, j]: top-k of logits[t, 0..E) (descending, first index on ties), softmax over them.
void launch_router_topk(const float* logits, int T, int E, int k, int32_t* idx, float* wts, cudaStream_t s);
// Decode: z[a, i] = swiglu(gate_i, up_i) of expert idx[a] on h[a / k] (a < T*k); rows of W interleaved.
void launch_moe_gate_up_swiglu(Wt wt, bool transposed, const WView& w, const float* h, const int32_t* idx, int T,
                               int k, const float* bias, float limit, float* z, cudaStream_t s);
// Decode: x[t, r] += sum_j wts[t, j] (W_d[idx[t, j]] z[t*k + j] + bias[idx[t, j], r]).
void launch_moe_down_combine(Wt wt, bool transposed, const WView& w, const float* z, const int32_t* idx,
                             const float* wts, int T, int k, const float* bias, float* x, cudaStream_t s);
// ---- moe_decode.cu: MXFP4 experts at decode (16-byte block loads, x / z staged in shared memory,
// E2M1 decoded with integer ops, f32 products). Same results as launch_moe_gate_up_swiglu +
// launch_moe_down_combine; returns false (nothing launched) for shapes it does not take (H or I not a
// multiple of 32, too much shared memory).
cudaError_t init_moe_decode_kernels();
// logits: as launch_moe_gate_up_tc (then the tensor-core gate_up must be usable: returns false, having
// launched nothing, where it is not); idx and wts are then written, else only read.
bool launch_moe_mxfp4_decode(const WView& gate_up, const WView& down, const float* h, int32_t* idx,
                             float* wts, int T, int k, const float* gate_up_bias, const float* down_bias,
                             float limit, float* z, float* x, cudaStream_t s,
                             const uint8_t* gate_up_rowmax = nullptr, const float* logits = nullptr, int E = 0);
// ---- moe_decode_tc.cu: the decode gate_up product on the tensor cores (used by launch_moe_mxfp4_decode
// when given gate_up_rowmax). rowmax [E, rows]: the largest scale byte of each row, from
// launch_mxfp4_row_max over the experts' scales ([E * rows, nb] bytes).
void launch_mxfp4_row_max(const uint8_t* scales, int64_t rows, int nb, uint8_t* out, cudaStream_t s);
// logits [T, E] (E <= 32): the kernel picks the experts from the router's logits itself and writes idx and
// wts ([T, k], as launch_router_topk) for the down kernel; otherwise it reads idx (and leaves wts alone).
bool launch_moe_gate_up_tc(const WView& gate_up, const uint8_t* rowmax, const float* h, int32_t* idx, int T,
                           int k, const float* bias, float limit, float* z, cudaStream_t s,
                           const float* logits = nullptr, int E = 0, float* wts = nullptr);
// ---- moe_grouped_tc.cu: the MoE of a step of more than kDecodeMaxT rows with MXFP4 experts (row-major),
// routed on the device (no host sync): assignments sorted by expert into tiles of 4 or 8, each weight decoded
// once per tile, products on the tensor cores; x[t] += sum_j wts[t, j] (W_d z + b_d) as launch_moe_combine.
struct MoeGroupedScratch {
  int32_t* slots;   // [A = T * k] assignments sorted by expert
  int32_t* tiles;   // [moe_grouped_tc_max_tiles(A, E, 4), 4] {expert, first slot, count, 0}
  int32_t* ntiles;  // [1]
  float* z;         // [A, I] SwiGLU outputs
  float* y;         // [A, H] expert outputs with their bias
  uint2* xstage;    // moe_grouped_tc_stage_bytes(A, E, H, I): each tile's inputs staged for the tensor cores
};
bool moe_grouped_tc_supported(const WView& gate_up, const WView& down, int A, int E);
int moe_grouped_tc_max_tiles(int A, int E, int tile_tokens);
size_t moe_grouped_tc_stage_bytes(int A, int E, int64_t H, int64_t I);
cudaError_t launch_moe_grouped_tc(const WView& gate_up, const uint8_t* gate_up_rowmax, const WView& down,
                                  const uint8_t* down_rowmax, const float* h, const int32_t* idx, const float* wts,
                                  int T, int k, int E, const float* gate_up_bias, const float* down_bias, float limit,
                                  const MoeGroupedScratch& scratch, float* x, cudaStream_t s);
// ---- moe.cu, prefill (grouped per expert): rows[n] gathered from h as bf16 hi/lo pairs ([2n, H]); gu [n, 2I] -> z
// bf16 hi/lo [2n, I] (+bias of e);
// y [n, H] + bias of e scattered to ybuf[slot[i]]; x[t] += sum_j wts[t, j] ybuf[t*k + j].
void launch_gather_bf16x2(const float* h, const int32_t* slots, int n, int k, int H, __nv_bfloat16* out,
                          cudaStream_t s);
void launch_swiglu_bias(const float* gu, const float* bias, int n, int I, float limit, __nv_bfloat16* z,
                        cudaStream_t s);
void launch_scatter_bias(const float* y, const float* bias, const int32_t* slots, int n, int H, float* ybuf,
                         cudaStream_t s);
void launch_moe_combine(const float* ybuf, const float* wts, int T, int k, int H, float* x, cudaStream_t s);

}  // namespace gptoss::cuda
