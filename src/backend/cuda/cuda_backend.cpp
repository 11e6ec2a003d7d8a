// The CUDA backend: weights on the device in their checkpoint precision (MXFP4 experts stay MXFP4),
// KV cache on the device (f32 or bf16), decode through the memory-bound kernels of matvec.cu, decode_fused.cu,
// moe_decode.cu / moe_decode_tc.cu and attention_decode.cu (moe.cu and attention.cu where those do not apply),
// prefill through cuBLAS bf16 GEMMs (f32 accumulation; activations as hi/lo bf16 pairs, so about 16
// significant bits) with experts grouped per expert.
// A one-token step of one sequence can be recorded once as a CUDA graph and replayed (record_step_begin /
// record_step_end / replay_step): every kernel reads the token ids and positions from device memory written by
// begin_step. In steps over several sequences each sequence attends to its own cache: the one-token
// sequences with a bf16 cache in one launch per layer (attention_batch), the others one launch per sequence.
// The class is declared in backend_impl.h; its memory and upload are in cuda_memory.cpp.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

#include "backend/cuda/backend_impl.h"

namespace gptoss {

namespace cuda_impl {

namespace {

// Attention splits for the CUDA-core split kernel: at least 128 keys each (one 32-key tile for each of its 4
// warps), at most 8 blocks per SM.
int attention_splits(int T, int nkv, int max_keys, int sms) {
  const int by_work = std::max(1, (max_keys + 127) / 128);
  const int by_chip = std::max(1, (8 * sms + T * nkv - 1) / (T * nkv));
  return std::min(by_work, by_chip);
}

// ... and for the tensor-core decode kernel: at least 512 keys each, at most 32 splits (and what its in-kernel
// merge can hold). 512 was best at short context and near best at 32k (bench/cuda_notes.md, round 6).
int attention_decode_splits(int nh, int nkv, int d, int max_keys) {
  const int by_work = std::max(1, (max_keys + 511) / 512);
  return std::max(1, std::min({by_work, 32, cuda::attention_decode_max_splits(nh, nkv, d)}));
}

}  // namespace

template <typename Ty>
Ty* CudaBackend::grow(DeviceScratch<Ty>& s, size_t n) {
  if (n <= s.capacity()) return s.get();
  if (recording_) {
    fail(Error("cuda: {} would grow during graph capture", s.what()));
    return s.get();
  }
  auto r = s.reserve(mem_, n);
  if (!r.ok()) fail(r.status());
  return s.get();
}

Status CudaBackend::ensure_step_scratch(int T) {
  const size_t t = size_t(T), k = size_t(c_.num_experts_per_tok);
  GPTOSS_TRY(h_step_.reserve(3 * t));
  grow(d_step_, 3 * t);
  // Split partials of the largest attention launch of one sequence: n <= T rows, the split kernel with
  // attention_splits(n) splits, the tensor-core decode kernel (n <= kDecodeMaxT) with <= 32. The batched launch
  // of many sequences grows them further itself (plan_batch_attention).
  size_t split_rows = 0;
  for (int n = 1; n <= T; ++n)
    split_rows = std::max(split_rows, size_t(n) * size_t(std::max(attention_splits(n, c_.num_key_value_heads, 1 << 30,
                                                                                     num_sms_),
                                                                    n <= kDecodeMaxT ? 32 : 1)));
  grow(attn_partials_, split_rows * size_t(c_.num_attention_heads) * size_t(c_.head_dim + 2));
  grow(router_logits_, t * size_t(c_.num_local_experts));
  grow(moe_idx_, t * k);
  grow(moe_wts_, t * k);
  if (T <= kDecodeMaxT) grow(moe_act_, t * k * size_t(c_.intermediate_size));
  return sticky_;
}

namespace {
// What a recorded step depends on besides the device data it reads: the caller's buffers, the rows and out
// rows, and each sequence's cache and length.
uint64_t step_key(const Step& st) {
  uint64_t h = st.buffers_key * 1000003u ^ (uint64_t(st.rows()) << 1) ^ (uint64_t(st.out_rows.size()) << 21) ^
               (st.out_run_first() >= 0 ? 1u : 0u);
  for (const StepSeq& q : st.seqs) h = (h ^ uint64_t(reinterpret_cast<uintptr_t>(q.kv))) * 0x100000001b3u + uint64_t(q.n);
  return h;
}
}  // namespace

Status CudaBackend::begin_step(const Step& st) {
  GPTOSS_TRY(sticky_);
  chain_pos_ = -1;  // d_step_ is rewritten from the host below
  T_ = st.rows();
  R_ = int(st.out_rows.size());
  seqs_.assign(st.seqs.begin(), st.seqs.end());
  step_key_ = step_key(st);
  GPTOSS_TRY(ensure_step_scratch(T_));
  // The previous step's copy must be done before the pinned buffer is rewritten.
  GPTOSS_CUDA_TRY(cudaStreamSynchronize(stream_));
  int32_t* h = h_step_.get();
  for (int t = 0; t < T_; ++t) h[t] = st.tokens[size_t(t)];
  for (const StepSeq& q : st.seqs)
    for (int r = 0; r < q.n; ++r) h[T_ + q.row0 + r] = q.pos0 + r;
  for (int i = 0; i < R_; ++i) h[2 * T_ + i] = st.out_rows[size_t(i)];
  GPTOSS_CUDA_TRY(cudaMemcpyAsync(d_step_.get(), h, (2 * size_t(T_) + size_t(R_)) * sizeof(int32_t),
                                  cudaMemcpyHostToDevice, stream_));
  return plan_batch_attention();
}

// The step's batched decode attention: its sequences of one token with a bf16 cache (two or more, distinct
// caches) attend in one launch per layer. Table [layers, batch_n_] of (cache, capacity, row, split count), the
// split count being what attention_seq would launch that sequence with (window as the model passes it:
// batch_window_; attention() falls back to launches per sequence for any other). Called after begin_step's
// sync: the pinned table is not being copied from.
Status CudaBackend::plan_batch_attention() {
  batch_n_ = 0;
  const int nh = c_.num_attention_heads, nkv = c_.num_key_value_heads, d = c_.head_dim, L = c_.num_hidden_layers;
  if (seqs_.size() < 2 || !cuda::attention_decode_supported(nh, nkv, d)) return {};
  batched_.assign(seqs_.size(), 0);
  std::vector<const KvCache*> caches;
  for (size_t i = 0; i < seqs_.size(); ++i) {
    const StepSeq& sq = seqs_[i];
    const auto* kv = static_cast<const CudaKvCache*>(sq.kv);
    if (sq.n != 1 || !kv || !kv->bf16 || kv->k.size() != size_t(L)) continue;
    batched_[i] = 1;
    caches.push_back(sq.kv);
  }
  const int n = int(caches.size());
  std::sort(caches.begin(), caches.end(), std::less<const KvCache*>());
  // The kernel appends each sequence's key as it attends: two rows of one cache would not see each other's.
  if (n < 2 || n > 65535 || std::adjacent_find(caches.begin(), caches.end()) != caches.end()) return {};
  GPTOSS_TRY(h_batch_.reserve(size_t(L) * size_t(n)));
  batch_window_.assign(size_t(L), 0);
  batch_nsplit_.assign(size_t(L), 1);
  cuda::DecodeSeq* h = h_batch_.get();
  for (int l = 0; l < L; ++l) {
    const int window = c_.layer_is_sliding[size_t(l)] ? c_.sliding_window : 0;
    batch_window_[size_t(l)] = window;
    int b = 0;
    for (size_t i = 0; i < seqs_.size(); ++i) {
      if (!batched_[i]) continue;
      const auto& kv = static_cast<const CudaKvCache&>(*seqs_[i].kv);
      const int cap = kv.capacity[size_t(l)];
      const int max_keys = window > 0 ? std::min(window, cap) : cap;
      cuda::DecodeSeq& e = h[size_t(l) * size_t(n) + size_t(b++)];
      e.k = kv.k[size_t(l)];
      e.v = kv.v[size_t(l)];
      e.cap = cap;
      e.row = seqs_[i].row0;
      e.nsplit = attention_decode_splits(nh, nkv, d, max_keys);
      e.pad = 0;
      batch_nsplit_[size_t(l)] = std::max(batch_nsplit_[size_t(l)], e.nsplit);
    }
  }
  const int most = *std::max_element(batch_nsplit_.begin(), batch_nsplit_.end());
  cuda::DecodeSeq* table = grow(d_batch_, size_t(L) * size_t(n));
  grow(attn_partials_, size_t(n) * size_t(nh) * size_t(most) * size_t(d + 2));  // [n, nh, most, d + 2]
  const size_t tickets = batch_tickets_.capacity();
  unsigned* tk = grow(batch_tickets_, size_t(n) * size_t(nkv));
  GPTOSS_TRY(sticky_);
  if (batch_tickets_.capacity() != tickets)  // new memory: the kernel needs its tickets 0
    GPTOSS_CUDA_TRY(cudaMemsetAsync(tk, 0, batch_tickets_.capacity() * sizeof(unsigned), stream_));
  GPTOSS_CUDA_TRY(cudaMemcpyAsync(table, h, size_t(L) * size_t(n) * sizeof(cuda::DecodeSeq), cudaMemcpyHostToDevice,
                                  stream_));
  batch_n_ = n;
  return {};
}

void CudaBackend::gather_rows(const float* x, int n, float* y) {
  cuda::launch_gather_rows(x, d_step_.get() + 2 * T_, R_, n, y, stream_);
  check_launch("gather_rows");
}

void CudaBackend::embed(const MatrixRef& table, float* x) {
  if (table.type == WeightType::MXFP4 || table.transposed) return fail(Error("cuda embed: table must be dense f32/bf16"));
  cuda::launch_embed(to_wt(table.type), table.data, table.cols, d_step_.get(), T_, x, stream_);
  check_launch("embed");
}

// y[T, rows] = x[T, cols] W^T with W bf16 (wbf16, row-major, or W.data itself when transposed storage)
// and x given as the bf16 pair xb = [hi; lo] ([2T, cols]). Up to kGemm2MaxFloats of output: ONE GEMM over
// all 2T columns into scratch [2T, rows] and a sum of its halves, so W is read once (prefill's expert and
// projection GEMMs have 2T = 2..1024 columns and are bound by reading W); larger outputs (the lm_head of a
// long chunk): two GEMMs, the second accumulating (beta 1).
void CudaBackend::gemm_bf16(const MatrixRef& W, const __nv_bfloat16* wbf16, const __nv_bfloat16* xb, int T, float* y) {
  constexpr size_t kGemm2MaxFloats = size_t(32) << 20;  // 128 MB of scratch at most
  const float one = 1.0f, zero = 0.0f;
  const bool tr = W.transposed && W.type == WeightType::BF16 && wbf16 == W.data;
  const size_t n = size_t(T) * size_t(W.rows);
  if (2 * n <= kGemm2MaxFloats) {
    float* s2 = grow(gemm_pair_out_, 2 * n);
    if (!sticky_.ok()) return;
    const cublasStatus_t st = cublasGemmEx(
        blas_, tr ? CUBLAS_OP_N : CUBLAS_OP_T, CUBLAS_OP_N, int(W.rows), 2 * T, int(W.cols), &one, wbf16, CUDA_R_16BF,
        tr ? int(W.rows) : int(W.cols), xb, CUDA_R_16BF, int(W.cols), &zero, s2, CUDA_R_32F, int(W.rows),
        CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    if (st != CUBLAS_STATUS_SUCCESS)
      return fail(Error("cuda: cublasGemmEx [{}x{}]x[{}] failed ({})", W.rows, W.cols, 2 * T, int(st)));
    cuda::launch_sum_halves(s2, n, y, stream_);
    return;
  }
  for (int half = 0; half < 2; ++half) {
    const cublasStatus_t st = cublasGemmEx(
        blas_, tr ? CUBLAS_OP_N : CUBLAS_OP_T, CUBLAS_OP_N, int(W.rows), T, int(W.cols), &one, wbf16, CUDA_R_16BF,
        tr ? int(W.rows) : int(W.cols), xb + size_t(half) * size_t(T) * size_t(W.cols), CUDA_R_16BF, int(W.cols),
        half ? &one : &zero, y, CUDA_R_32F, int(W.rows), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    if (st != CUBLAS_STATUS_SUCCESS)
      return fail(Error("cuda: cublasGemmEx [{}x{}]x[{}] failed ({})", W.rows, W.cols, T, int(st)));
  }
}

void CudaBackend::matmul(const MatrixRef& W, const float* x, int T, const float* bias, float* y) {
  const Wt wt = wt_of(W);
  if (T <= kDecodeMaxT) {
    if (W.transposed)
      cuda::launch_matvec_transposed(wt, view(W), x, T, bias, y, stream_);
    else
      cuda::launch_matvec(wt, view(W), x, T, bias, y, stream_);
    return check_launch("matvec");
  }
  if (W.type == WeightType::F32) {
    // f32 weights: full-precision SGEMM (no rounding of activations).
    const float one = 1.0f, zero = 0.0f;
    const cublasStatus_t st = cublasSgemm(blas_, W.transposed ? CUBLAS_OP_N : CUBLAS_OP_T, CUBLAS_OP_N, int(W.rows), T,
                                          int(W.cols), &one, static_cast<const float*>(W.data),
                                          W.transposed ? int(W.rows) : int(W.cols), x, int(W.cols), &zero, y, int(W.rows));
    if (st != CUBLAS_STATUS_SUCCESS) fail(Error("cuda: cublasSgemm failed ({})", int(st)));
  } else {
    __nv_bfloat16* xb = grow(act_bf16_, 2 * size_t(T) * size_t(W.cols));
    if (!sticky_.ok()) return;
    cuda::launch_f32_to_bf16x2(x, size_t(T) * size_t(W.cols), xb, stream_);
    const __nv_bfloat16* wb = static_cast<const __nv_bfloat16*>(W.data);
    if (const auto it = plain_bf16_.find(W.data); it != plain_bf16_.end()) {
      wb = it->second;
    } else if (W.type == WeightType::MXFP4 || wt == cuda::kBF12) {
      __nv_bfloat16* s = grow(weights_bf16_, size_t(W.rows) * size_t(W.cols));
      if (!sticky_.ok()) return;
      cuda::launch_weight_to_bf16(wt, false, view(W), 0, s, stream_);
      if (wt == cuda::kBF12) cuda::launch_bf12_patch_escapes(view(W), s, stream_);  // the same bf16 matrix
      wb = s;
    }
    gemm_bf16(W, wb, xb, T, y);
  }
  if (bias) cuda::launch_add_bias(y, bias, T, int(W.rows), stream_);
  check_launch("matmul");
}

void CudaBackend::attention(int layer, float* q, float* k, const float* v, const float* sinks, int window,
                            float* out) {
  const size_t qd = size_t(c_.q_dim()), kvd = size_t(c_.kv_dim());
  const bool batched = batch_n_ > 0 && window == batch_window_[size_t(layer)];
  if (batched) attention_batch(layer, q, k, v, sinks, window, out);
  for (size_t i = 0; i < seqs_.size(); ++i) {
    if (batched && batched_[i]) continue;
    const StepSeq& sq = seqs_[i];
    attention_seq(static_cast<const CudaKvCache&>(*sq.kv), sq.row0, sq.n, layer, q + size_t(sq.row0) * qd,
                  k + size_t(sq.row0) * kvd, v + size_t(sq.row0) * kvd, sinks, window, out + size_t(sq.row0) * qd);
  }
}

// The batched sequences of the step (plan_batch_attention), one token each: ONE launch of the tensor-core
// decode kernel with RoPE and the append in it, as attention_seq launches it for one of them alone. q, k, v,
// out: the whole step's rows ([T, nh, d], [T, nkv, d]); each sequence's entry names its row.
void CudaBackend::attention_batch(int layer, const float* q, const float* k, const float* v, const float* sinks,
                                  int window, float* out) {
  cuda::DecodeFusion fuse;
  fuse.k = k, fuse.v = v, fuse.inv_freq = d_inv_freq_, fuse.mscale = rope_.mscale;
  fuse.tickets = batch_tickets_.get();
  const cudaError_t e = cuda::launch_attention_decode_batch(
      q, d_batch_.get() + size_t(layer) * size_t(batch_n_), batch_n_, d_step_.get() + T_, window, sinks,
      c_.num_attention_heads, c_.num_key_value_heads, c_.head_dim, batch_nsplit_[size_t(layer)], attn_partials_.get(),
      out, fuse, stream_);
  if (e != cudaSuccess) return fail(Error("cuda: batched attention decode: {}", cudaGetErrorString(e)));
  check_launch("batched attention decode");
}

// The attention of one sequence's n rows (row0.. of the step; q, k, v, out already offset to them).
void CudaBackend::attention_seq(const CudaKvCache& kv, int row0, int n, int layer, float* q, float* k, const float* v,
                                const float* sinks, int window, float* out) {
  const int nh = c_.num_attention_heads, nkv = c_.num_key_value_heads, d = c_.head_dim;
  const int cap = kv.capacity[size_t(layer)];
  void* kc = kv.k[size_t(layer)];
  void* vc = kv.v[size_t(layer)];
  const int32_t* pos = d_step_.get() + T_ + row0;  // [n] the rows' positions (after the step's tokens)
  const bool decode_tc = n <= kDecodeMaxT && kv.bf16 && cuda::attention_decode_supported(nh, nkv, d);
  // One token: the decode kernel applies RoPE and appends the new key and value itself (one launch fewer per
  // layer, which shows at long context; bench/cuda_notes.md, round 6).
  const bool rope_in_kernel = decode_tc && n == 1;
  if (!rope_in_kernel)
    cuda::launch_rope_kv_append(kv.bf16, q, k, v, kc, vc, pos, d_inv_freq_, rope_.mscale, cap, n, nh, nkv, d, stream_);
  if (n > kDecodeMaxT && cuda::attention_prefill_supported(nh, nkv, d)) {
    const cudaError_t e =
        cuda::launch_attention_prefill(kv.bf16, q, kc, vc, pos, cap, window, sinks, n, nh, nkv, d, out, stream_);
    if (e != cudaSuccess) return fail(Error("cuda: attention prefill: {}", cudaGetErrorString(e)));
    return check_launch("attention prefill");
  }
  const int max_keys = window > 0 ? std::min(window, cap) : cap;
  const int nsplit = decode_tc ? attention_decode_splits(nh, nkv, d, max_keys)
                               : attention_splits(n, nkv, max_keys, num_sms_);
  // bf16 cache: the tensor-core decode kernel (faster, most at long context; bench/cuda_notes.md, round 4);
  // f32 cache: the CUDA-core split kernel (exact f32 products).
  if (decode_tc) {
    cuda::DecodeFusion fuse;
    if (rope_in_kernel) fuse.k = k, fuse.v = v, fuse.inv_freq = d_inv_freq_, fuse.mscale = rope_.mscale;
    fuse.tickets = d_attn_tickets_;
    const cudaError_t e = cuda::launch_attention_decode(q, kc, vc, pos, cap, window, sinks, n, nh, nkv, d, nsplit,
                                                        attn_partials_.get(), out, fuse, stream_);
    if (e != cudaSuccess) return fail(Error("cuda: attention decode: {}", cudaGetErrorString(e)));
    return check_launch("attention decode");
  }
  cuda::launch_attention(kv.bf16, q, kc, vc, pos, cap, window, sinks, n, nh, nkv, d, nsplit, attn_partials_.get(), out,
                         stream_);
  check_launch("attention");
}

void CudaBackend::moe(const LayerWeights& w, const float* h, int T, float* x) {
  const int E = c_.num_local_experts, k = c_.num_experts_per_tok;
  matmul(w.router, h, T, w.router_bias, router_logits_.get());
  cuda::launch_router_topk(router_logits_.get(), T, E, k, moe_idx_.get(), moe_wts_.get(), stream_);
  check_launch("router_topk");
  moe_experts(w, h, T, x);
}

const uint8_t* CudaBackend::row_max(const ExpertStack& s) {
  const MatrixRef& m = s.first;
  if (const auto it = row_max_.find(m.scales); it != row_max_.end()) return it->second;
  const int nb = int(m.cols / 32);
  if (recording_ || !m.scales || s.scales_stride != size_t(m.rows) * size_t(nb)) return nullptr;
  auto r = dev_alloc(size_t(s.count) * size_t(m.rows), "MXFP4 row scales");
  if (!r.ok()) return nullptr;
  auto* out = static_cast<uint8_t*>(*r);
  cuda::launch_mxfp4_row_max(m.scales, int64_t(s.count) * m.rows, nb, out, stream_);
  check_launch("mxfp4 row max");
  row_max_[m.scales] = out;
  return out;
}

void CudaBackend::moe_experts(const LayerWeights& w, const float* h, int T, float* x) {
  const int k = c_.num_experts_per_tok;
  if (T > kDecodeMaxT) {
    if (!moe_grouped_tc(w, h, T, x)) moe_grouped(w, h, T, x);
    return;
  }
  const float limit = float(c_.swiglu_limit);
  const MatrixRef &gu = w.gate_up.first, &dn = w.down.first;
  if (gu.type == WeightType::MXFP4 && dn.type == WeightType::MXFP4 && !gu.transposed && !dn.transposed &&
      cuda::launch_moe_mxfp4_decode(view(w.gate_up), view(w.down), h, moe_idx_.get(), moe_wts_.get(), T, k,
                                    w.gate_up_bias, w.down_bias, limit, moe_act_.get(), x, stream_, row_max(w.gate_up)))
    return check_launch("moe mxfp4 decode");
  cuda::launch_moe_gate_up_swiglu(to_wt(gu.type), gu.transposed, view(w.gate_up), h, moe_idx_.get(), T, k,
                                  w.gate_up_bias, limit, moe_act_.get(), stream_);
  cuda::launch_moe_down_combine(to_wt(dn.type), dn.transposed, view(w.down), moe_act_.get(), moe_idx_.get(),
                                moe_wts_.get(), T, k, w.down_bias, x, stream_);
  check_launch("moe");
}

// Decode: RMSNorm + q/k/v products in one launch (same weight type, row-major).
bool CudaBackend::norm_qkv(const LayerWeights& L, const float* x, int T, double eps, float* q, float* k, float* v) {
  if (T > cuda::kFusedMaxT || L.q.transposed || L.k.transposed || L.v.transposed || wt_of(L.k) != wt_of(L.q) ||
      wt_of(L.v) != wt_of(L.q))
    return false;
  const WView w[3] = {view(L.q), view(L.k), view(L.v)};
  const float* bias[3] = {L.q_bias, L.k_bias, L.v_bias};
  float* y[3] = {q, k, v};
  if (!cuda::launch_norm_matvec3(wt_of(L.q), w, bias, y, 3, x, L.attn_norm, float(eps), T, stream_)) return false;
  check_launch("norm qkv");
  return true;
}

// Decode: RMSNorm + router + top-k in one launch, then the expert kernels.
bool CudaBackend::norm_moe(const LayerWeights& L, float* x, int T, double eps, float* h) {
  if (T > cuda::kFusedMaxT || L.router.transposed) return false;
  const int E = c_.num_local_experts, k = c_.num_experts_per_tok;
  // E <= 32 (gpt-oss-20b): the router kernel writes the logits only and the tensor-core gate_up kernel picks
  // the experts itself, so the router's last-block handoff (fence, ticket, logits read again, top-k) leaves the
  // critical path (bench/cuda_notes.md, round 10).
  const MatrixRef &gu = L.gate_up.first, &dn = L.down.first;
  const bool gu_topk = E <= 32 && gu.type == WeightType::MXFP4 && dn.type == WeightType::MXFP4 && !gu.transposed &&
                       !dn.transposed;
  const uint8_t* rowmax = gu_topk ? row_max(L.gate_up) : nullptr;
  if (!cuda::launch_norm_router_topk(wt_of(L.router), view(L.router), L.router_bias, x, L.mlp_norm, float(eps), T, k,
                                     h, router_logits_.get(), moe_idx_.get(), moe_wts_.get(), d_router_counter_, stream_,
                                     /*topk=*/!gu_topk))
    return false;
  check_launch("norm router topk");
  if (gu_topk) {
    if (cuda::launch_moe_mxfp4_decode(view(L.gate_up), view(L.down), h, moe_idx_.get(), moe_wts_.get(), T, k,
                                      L.gate_up_bias, L.down_bias, float(c_.swiglu_limit),
                                      moe_act_.get(), x, stream_, rowmax, router_logits_.get(), E)) {
      check_launch("moe mxfp4 decode (top-k in gate_up)");
      return true;
    }
    cuda::launch_router_topk(router_logits_.get(), T, E, k, moe_idx_.get(), moe_wts_.get(), stream_);  // not taken: top-k here
  }
  moe_experts(L, h, T, x);
  return true;
}

// Decode only (few tokens, row-major weights): the matvec kernel adds into y.
bool CudaBackend::matmul_add(const MatrixRef& W, const float* x, int T, const float* bias, float* y) {
  if (T > kDecodeMaxT || W.transposed) return false;
  cuda::launch_matvec(wt_of(W), view(W), x, T, bias, y, stream_, /*accumulate=*/true);
  check_launch("matvec add");
  return true;
}

// The device draws (argmax, sample) leave one id after the 2 * kArgmaxBlocks words of scratch: copy_drawn_id
// enqueues its copy to h_argmax_ on a second stream (marked by argmax_done_), so the step stream goes on at
// once with what follows (a chained step) instead of waiting for the copy; drawn_id waits for that copy
// alone. Each draw's kernel first waits for the previous copy (before_draw): the id word is reused.
void CudaBackend::before_draw() {
  const cudaError_t e = cudaStreamWaitEvent(stream_, argmax_done_, 0);
  if (e != cudaSuccess) fail(Error("cuda: drawn id wait: {}", cudaGetErrorString(e)));
}
void CudaBackend::copy_drawn_id() {
  cudaError_t e = cudaEventRecord(drawn_ready_, stream_);
  if (e == cudaSuccess) e = cudaStreamWaitEvent(copy_stream_, drawn_ready_, 0);
  if (e == cudaSuccess)
    e = cudaMemcpyAsync(h_argmax_.get(), d_argmax_ + 2 * cuda::kArgmaxBlocks, sizeof(int32_t), cudaMemcpyDeviceToHost,
                        copy_stream_);
  if (e == cudaSuccess) e = cudaEventRecord(argmax_done_, copy_stream_);
  if (e != cudaSuccess) fail(Error("cuda: drawn id copy: {}", cudaGetErrorString(e)));
}

Result<int32_t> CudaBackend::drawn_id() {
  GPTOSS_TRY(sticky_);
  GPTOSS_CUDA_TRY(cudaEventSynchronize(argmax_done_));
  GPTOSS_TRY(sticky_);
  return *h_argmax_.get();
}

bool CudaBackend::argmax_async(const float* x, int n, int chain_pos) {
  if (!sticky_.ok()) return false;
  before_draw();
  // A chained step's input written by the argmax's last block: no kernel of its own between the steps.
  // d_step_ stays where it is until then: begin_step_chained's one token needs no larger step buffer.
  const bool chain = chain_pos >= 0 && d_step_.capacity() >= 2;
  chain_pos_ = chain ? chain_pos : -1;
  cuda::launch_argmax(x, n, d_argmax_, d_argmax_ + 2 * cuda::kArgmaxBlocks, stream_, chain ? d_step_.get() : nullptr,
                      chain_pos);
  check_launch("argmax");
  copy_drawn_id();
  return true;
}

Result<int32_t> CudaBackend::argmax_wait() { return drawn_id(); }

// The step's input (the last argmax as its token, pos0) was written on the device by that argmax's last block
// (argmax_async's chain_pos). No host sync: the pinned step buffer is not touched (begin_step syncs before it
// rewrites it).
Status CudaBackend::begin_step_chained(const Step& st) {
  GPTOSS_TRY(sticky_);
  if (st.seqs.size() != 1 || st.rows() != 1) return Error("begin_step_chained: a chained step is one token of one sequence");
  const bool written = chain_pos_ == st.seqs[0].pos0;
  chain_pos_ = -1;
  if (!written)
    return Error("begin_step_chained({}): no argmax_async wrote the input of a step at that position", st.seqs[0].pos0);
  T_ = 1;
  R_ = 1;
  seqs_.assign(st.seqs.begin(), st.seqs.end());
  batch_n_ = 0;
  step_key_ = step_key(st);
  GPTOSS_TRY(ensure_step_scratch(T_));  // the decode scratch (a prefill step does not grow it); d_step_ stays
  return sticky_;
}

Result<int32_t> CudaBackend::argmax(const float* x, int n) {
  GPTOSS_TRY(sticky_);
  argmax_async(x, n, -1);
  return drawn_id();
}

// Many rows, MXFP4 experts: routed and multiplied on the device (moe_grouped_tc.cu). False (nothing launched)
// where it does not apply: other weight types, shapes it does not take, row scales unavailable.
bool CudaBackend::moe_grouped_tc(const LayerWeights& w, const float* h, int T, float* x) {
  const int E = c_.num_local_experts, k = c_.num_experts_per_tok, A = T * k;
  const MatrixRef &gu = w.gate_up.first, &dn = w.down.first;
  if (gu.type != WeightType::MXFP4 || dn.type != WeightType::MXFP4 || gu.transposed || dn.transposed ||
      !cuda::moe_grouped_tc_supported(view(w.gate_up), view(w.down), A, E))
    return false;
  const uint8_t* gu_max = row_max(w.gate_up);
  const uint8_t* dn_max = row_max(w.down);
  if (!gu_max || !dn_max) return false;
  const size_t max_tiles = size_t(cuda::moe_grouped_tc_max_tiles(A, E, 4));
  cuda::MoeGroupedScratch sc;
  sc.slots = grow(moe_slots_, size_t(A));
  sc.tiles = grow(moe_tiles_, 4 * max_tiles + 1);
  sc.ntiles = sc.tiles + 4 * max_tiles;
  sc.z = grow(moe_act_, size_t(A) * size_t(c_.intermediate_size));
  sc.y = grow(moe_expert_out_, size_t(A) * size_t(c_.hidden_size));
  sc.xstage = grow(moe_xstage_, cuda::moe_grouped_tc_stage_bytes(A, E, c_.hidden_size, c_.intermediate_size) / 8);
  if (!sticky_.ok()) return true;  // the error stays in sticky_: the step fails
  const cudaError_t e = cuda::launch_moe_grouped_tc(view(w.gate_up), gu_max, view(w.down), dn_max, h, moe_idx_.get(),
                                                    moe_wts_.get(), T, k, E, w.gate_up_bias, w.down_bias,
                                                    float(c_.swiglu_limit), sc, x, stream_);
  if (e != cudaSuccess) fail(Error("cuda: grouped moe: {}", cudaGetErrorString(e)));
  return true;
}

// Prefill: assignments (t, j) grouped by expert on the host (one sync per layer), then per expert a
// gather, two bf16 GEMMs with the expert decoded to bf16 scratch, and a scatter; a final weighted sum.
void CudaBackend::moe_grouped(const LayerWeights& w, const float* h, int T, float* x) {
  const int E = c_.num_local_experts, k = c_.num_experts_per_tok, H = c_.hidden_size, I = c_.intermediate_size;
  const size_t A = size_t(T) * size_t(k);
  h_idx_.resize(A);
  if (cudaMemcpyAsync(h_idx_.data(), moe_idx_.get(), A * sizeof(int32_t), cudaMemcpyDeviceToHost, stream_) != cudaSuccess ||
      cudaStreamSynchronize(stream_) != cudaSuccess)
    return fail(Error("cuda moe: copying expert indices failed"));
  std::vector<int> count(size_t(E) + 1, 0);
  for (int32_t e : h_idx_) count[size_t(e) + 1]++;
  for (int e = 0; e < E; ++e) count[size_t(e) + 1] += count[size_t(e)];
  h_slots_.resize(A);
  std::vector<int> fill(count.begin(), count.end() - 1);
  for (size_t a = 0; a < A; ++a) h_slots_[size_t(fill[size_t(h_idx_[a])]++)] = int32_t(a);
  int32_t* slots = grow(moe_slots_, A);
  __nv_bfloat16* xg = grow(act_bf16_, 2 * A * size_t(H));
  float* gu = grow(moe_gate_up_, size_t(T) * 2 * size_t(I));
  __nv_bfloat16* zb = grow(moe_act_bf16_, 2 * size_t(T) * size_t(I));
  float* yd = grow(moe_down_, size_t(T) * size_t(H));
  float* ybuf = grow(moe_expert_out_, A * size_t(H));
  __nv_bfloat16* wb = grow(weights_bf16_, 2 * size_t(I) * size_t(H));
  if (!sticky_.ok()) return;
  if (cudaMemcpyAsync(slots, h_slots_.data(), A * sizeof(int32_t), cudaMemcpyHostToDevice, stream_) != cudaSuccess)
    return fail(Error("cuda moe: copying slots failed"));
  const float limit = float(c_.swiglu_limit);
  for (int e = 0; e < E; ++e) {
    const int n = count[size_t(e) + 1] - count[size_t(e)];
    if (n == 0) continue;
    const int32_t* sl = slots + count[size_t(e)];
    cuda::launch_gather_bf16x2(h, sl, n, k, H, xg, stream_);
    MatrixRef gup = w.gate_up.expert(e), dn = w.down.expert(e);
    const bool gup_direct = gup.type == WeightType::BF16;
    if (!gup_direct) cuda::launch_weight_to_bf16(to_wt(gup.type), gup.transposed, view(w.gate_up), e, wb, stream_);
    MatrixRef gview = gup;
    if (!gup_direct) gview.transposed = false;
    gemm_bf16(gview, gup_direct ? static_cast<const __nv_bfloat16*>(gup.data) : wb, xg, n, gu);
    cuda::launch_swiglu_bias(gu, w.gate_up_bias + size_t(e) * 2 * size_t(I), n, I, limit, zb, stream_);
    const bool dn_direct = dn.type == WeightType::BF16;
    if (!dn_direct) cuda::launch_weight_to_bf16(to_wt(dn.type), dn.transposed, view(w.down), e, wb, stream_);
    MatrixRef dview = dn;
    if (!dn_direct) dview.transposed = false;
    gemm_bf16(dview, dn_direct ? static_cast<const __nv_bfloat16*>(dn.data) : wb, zb, n, yd);
    cuda::launch_scatter_bias(yd, w.down_bias + size_t(e) * size_t(H), sl, n, H, ybuf, stream_);
  }
  cuda::launch_moe_combine(ybuf, moe_wts_.get(), T, k, H, x, stream_);
  check_launch("moe grouped");
}

Result<int32_t> CudaBackend::sample(const float* x, int n, float temperature, double u) {
  GPTOSS_TRY(sticky_);
  before_draw();
  cuda::launch_sample(x, n, temperature, u, d_argmax_, d_argmax_ + 2 * cuda::kArgmaxBlocks, stream_);
  check_launch("sample");
  copy_drawn_id();
  return drawn_id();
}

// One launch of the argmax or sampling kernel per row into its own (id, ticket) pair, then one copy of all ids.
Result<bool> CudaBackend::draw_rows(const float* x, int R, int n, std::span<const float> temperature,
                                    std::span<const double> u, int32_t* out) {
  GPTOSS_TRY(sticky_);
  if (R <= 0) return true;
  const size_t cap = d_draws_.capacity();
  int32_t* d = grow(d_draws_, 2 * size_t(R));
  GPTOSS_TRY(sticky_);
  if (d_draws_.capacity() != cap) GPTOSS_CUDA_TRY(cudaMemsetAsync(d, 0, d_draws_.capacity() * sizeof(int32_t), stream_));
  GPTOSS_TRY(h_draws_.reserve(2 * size_t(R)));
  before_draw();
  // The greedy rows in one launch (over every row: a sampled row's id is then overwritten by its sample).
  if (std::any_of(temperature.begin(), temperature.begin() + R, [](float t) { return t <= 0.0f; }))
    cuda::launch_argmax_rows(x, R, n, d, stream_);
  for (int i = 0; i < R; ++i)
    if (temperature[size_t(i)] > 0.0f)
      cuda::launch_sample(x + size_t(i) * size_t(n), n, temperature[size_t(i)], u[size_t(i)], d_argmax_, d + 2 * i,
                          stream_);
  check_launch("draw_rows");
  GPTOSS_CUDA_TRY(cudaMemcpyAsync(h_draws_.get(), d, 2 * size_t(R) * sizeof(int32_t), cudaMemcpyDeviceToHost, stream_));
  GPTOSS_CUDA_TRY(cudaStreamSynchronize(stream_));
  GPTOSS_TRY(sticky_);
  for (int i = 0; i < R; ++i) out[i] = h_draws_.get()[2 * i];
  return true;
}

Status CudaBackend::to_host(const float* src, size_t n, float* dst) {
  GPTOSS_TRY(sticky_);
  GPTOSS_CUDA_TRY(cudaMemcpyAsync(dst, src, n * sizeof(float), cudaMemcpyDeviceToHost, stream_));
  GPTOSS_CUDA_TRY(cudaStreamSynchronize(stream_));
  return sticky_;
}

// Graphs: only one-token steps of one sequence are recorded (prefill steps sync with the host in moe_grouped; a
// batch's sequences change from step to step).
bool CudaBackend::replay_step() {
  if (!graph_exec_ || step_key_ != graph_key_ || T_ != graph_T_ || !sticky_.ok()) return false;
  const cudaError_t e = cudaGraphLaunch(graph_exec_, stream_);
  if (e != cudaSuccess) fail(Error("cuda: graph launch failed: {}", cudaGetErrorString(e)));
  return true;
}

void CudaBackend::record_step_begin() {
  if (T_ != 1 || seqs_.size() != 1 || !sticky_.ok()) return;
  if (cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal) != cudaSuccess) {
    cudaGetLastError();
    return;
  }
  recording_ = true;
  graph_key_ = step_key_;
}

Status CudaBackend::record_step_end() {
  if (!recording_) return sticky_;
  recording_ = false;
  cudaGraph_t g = nullptr;
  GPTOSS_CUDA_TRY(cudaStreamEndCapture(stream_, &g));
  if (graph_exec_) cudaGraphExecDestroy(graph_exec_);
  graph_exec_ = nullptr;
  const cudaError_t e = cudaGraphInstantiate(&graph_exec_, g, 0);
  cudaGraphDestroy(g);
  if (e != cudaSuccess) return Error("cuda: graph instantiation failed: {}", cudaGetErrorString(e));
  graph_T_ = T_;
  GPTOSS_TRY(sticky_);
  // The captured work has not run yet: run it once now.
  GPTOSS_CUDA_TRY(cudaGraphLaunch(graph_exec_, stream_));
  return {};
}

}  // namespace cuda_impl

using cuda_impl::CudaBackend;

Result<std::unique_ptr<Backend>> create_cuda_backend(const ModelConfig& c, const BackendOptions& o) {
  auto b = std::make_unique<CudaBackend>(c, o);
  GPTOSS_TRY(b->init());
  return std::unique_ptr<Backend>(std::move(b));
}

Result<void*> cuda_upload_bytes(Backend& b, const void* host, size_t bytes) {
  auto* cb = dynamic_cast<CudaBackend*>(&b);
  if (!cb) return Error("cuda_upload_bytes: backend '{}' is not the CUDA backend", b.name());
  return cb->upload_bytes(host, bytes, "test data");
}

Result<MatrixRef> cuda_pack_bf16(Backend& b, const MatrixRef& m) {
  auto* cb = dynamic_cast<CudaBackend*>(&b);
  if (!cb) return Error("cuda_pack_bf16: backend '{}' is not the CUDA backend", b.name());
  return cb->pack_bf16(m, "test matrix", /*free_source=*/false);
}

CudaPackStats cuda_pack_stats(Backend& b) {
  auto* cb = dynamic_cast<CudaBackend*>(&b);
  if (!cb) return {};
  return cb->pack_stats();
}

std::string cuda_device_name(Backend& b) {
  auto* cb = dynamic_cast<CudaBackend*>(&b);
  return cb ? cb->device_name() : std::string();
}

}  // namespace gptoss
