// The CUDA backend's class, private to src/backend/cuda (host code includes cuda_backend.h): what it keeps on
// the device and the ops it runs. Defined in two files: cuda_memory.cpp (device memory, upload and the lossless
// packing of the bf16 matrices, the KV cache, the bandwidth probe) and cuda_backend.cpp (the ops of a step, the
// device draws, graph recording, the entry points of cuda_backend.h).
#pragma once

#include <cublas_v2.h>

#include <string>
#include <unordered_map>
#include <vector>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/device_memory.h"
#include "backend/cuda/kernels.h"
#include "model/rope.h"

namespace gptoss::cuda_impl {

using cuda::Wt;
using cuda::WView;

#define GPTOSS_CUDA_TRY(expr)                                                                   \
  do {                                                                                          \
    const cudaError_t e_ = (expr);                                                              \
    if (e_ != cudaSuccess) return Error("cuda: {} failed: {}", #expr, cudaGetErrorString(e_)); \
  } while (0)

inline constexpr int kDecodeMaxT = 8;  // steps with at most this many tokens use the matvec kernels
inline constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

inline Wt to_wt(WeightType t) {
  switch (t) {
    case WeightType::F32: return cuda::kF32;
    case WeightType::BF16: return cuda::kBF16;
    case WeightType::MXFP4: return cuda::kMXFP4;
  }
  return cuda::kF32;
}

inline size_t matrix_data_bytes(const MatrixRef& m) {
  const size_t n = size_t(m.rows) * size_t(m.cols);
  switch (m.type) {
    case WeightType::F32: return n * 4;
    case WeightType::BF16: return n * 2;
    case WeightType::MXFP4: return n / 2;
  }
  return 0;
}
// What pack_bf16 takes: a single row-major bf16 matrix with a multiple of 8 columns.
inline bool packable(const MatrixRef& m) {
  return m.type == WeightType::BF16 && !m.transposed && m.cols % 8 == 0 && m.rows > 0;
}
inline size_t matrix_scale_bytes(const MatrixRef& m) { return m.type == WeightType::MXFP4 ? size_t(m.rows * m.cols / 32) : 0; }

class CudaKvCache final : public KvCache {
 public:
  std::vector<void*> k, v;
  std::vector<int> capacity;
  bool bf16 = false;
  size_t total = 0;
  size_t bytes() const override { return total; }
};

class CudaBackend final : public Backend {
 public:
  CudaBackend(const ModelConfig& c, const BackendOptions& o)
      : c_(c), opts_(o), rope_(yarn_rope_params(c)), mem_(o.gpu_memory_limit) {}
  ~CudaBackend() override;
  Status init();

  std::string name() const override { return "cuda (" + device_name_ + ")"; }
  Result<ModelWeights> upload(const ModelWeights& host, const ModelConfig& c) override;
  Result<float*> alloc(size_t count) override {
    GPTOSS_ASSIGN(void* p, dev_alloc(count * sizeof(float), "activation buffer"));
    return static_cast<float*>(p);
  }
  Result<std::unique_ptr<KvCache>> create_kv_cache(const ModelConfig& c, const KvCacheOptions& o) override;
  Status begin_step(const Step& step) override;
  void gather_rows(const float* x, int n, float* y) override;
  void embed(const MatrixRef& table, float* x) override;
  void rmsnorm(const float* x, const float* w, int T, int n, double eps, float* y) override {
    cuda::launch_rmsnorm(x, w, T, n, float(eps), y, stream_);
    check_launch("rmsnorm");
  }
  void matmul(const MatrixRef& W, const float* x, int T, const float* bias, float* y) override;
  void attention(int layer, float* q, float* k, const float* v, const float* sinks, int window,
                 float* out) override;
  void moe(const LayerWeights& w, const float* h, int T, float* x) override;
  bool matmul_add(const MatrixRef& W, const float* x, int T, const float* bias, float* y) override;
  bool norm_qkv(const LayerWeights& L, const float* x, int T, double eps, float* q, float* k, float* v) override;
  bool norm_moe(const LayerWeights& L, float* x, int T, double eps, float* h) override;
  Result<int32_t> argmax(const float* x, int n) override;
  bool argmax_async(const float* x, int n, int chain_pos) override;
  Result<int32_t> argmax_wait() override;
  Status begin_step_chained(const Step& step) override;
  Result<int32_t> sample(const float* x, int n, float temperature, double u) override;
  Result<bool> draw_rows(const float* x, int R, int n, std::span<const float> temperature, std::span<const double> u,
                         int32_t* out) override;
  void before_draw();
  void copy_drawn_id();
  Result<int32_t> drawn_id();
  void add(float* x, const float* y, size_t n) override {
    cuda::launch_add(x, y, n, stream_);
    check_launch("add");
  }
  Status to_host(const float* src, size_t n, float* dst) override;
  double measure_bandwidth_gbs() override;
  size_t free_memory_bytes() override;
  bool replay_step() override;
  void record_step_begin() override;
  Status record_step_end() override;

  Result<void*> upload_bytes(const void* host, size_t bytes, const char* what);
  const std::string& device_name() const { return device_name_; }

 private:
  Result<void*> dev_alloc(size_t bytes, const char* what);
  Status copy_to_device(void* dst, const void* src, size_t bytes);
  // Experts packed densely on the device (stride = one expert's bytes); a single matrix is a stack of one.
  Result<ExpertStack> upload_experts(const ExpertStack& s, const char* what);
  Result<MatrixRef> upload_matrix(const MatrixRef& m, const char* what);
  Result<const float*> upload_floats(const float* host, size_t n, const char* what);
  Status ensure_step_scratch(int T);
  void attention_seq(const CudaKvCache& kv, int row0, int n, int layer, float* q, float* k, const float* v,
                     const float* sinks, int window, float* out);
  Status plan_batch_attention();
  void attention_batch(int layer, const float* q, const float* k, const float* v, const float* sinks, int window,
                       float* out);
  // s grown to n elements (an error in sticky_ when it cannot be); its pointer, or the old one after an error.
  template <typename Ty>
  Ty* grow(DeviceScratch<Ty>& s, size_t n);
  void check_launch(const char* op) {
    const cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess && sticky_.ok()) sticky_ = Error("cuda: {} kernel failed: {}", op, cudaGetErrorString(e));
  }
  void fail(Status s) {
    if (sticky_.ok()) sticky_ = std::move(s);
  }
  WView view(const MatrixRef& m) const {
    WView v{static_cast<const uint8_t*>(m.data), m.scales, m.rows, m.cols, 0, 0};
    if (const auto it = packed_.find(m.data); it != packed_.end())
      v.nib = it->second.nib, v.meta = it->second.meta, v.esc = it->second.esc;
    return v;
  }
  // Experts are never packed (upload packs single matrices only).
  static WView view(const ExpertStack& s) {
    const MatrixRef& m = s.first;
    return WView{static_cast<const uint8_t*>(m.data), m.scales, m.rows, m.cols, int64_t(s.stride),
                 int64_t(s.scales_stride)};
  }
  // The kernels' weight type of a device matrix: kBF12 for a packed bf16 matrix.
  Wt wt_of(const MatrixRef& m) const { return packed_.count(m.data) ? cuda::kBF12 : to_wt(m.type); }

 public:
  // A bf16 matrix on the device (row-major, cols % 8 == 0) packed losslessly (packed_bf16.cu): the returned
  // ref (type BF16, data = the low-byte plane) is read through view() / wt_of() as kBF12. free_source: the
  // bf16 matrix is freed (it must come from dev_alloc). A matrix with 2^24 escapes or more stays as it is.
  Result<MatrixRef> pack_bf16(const MatrixRef& m, const char* what, bool free_source);
  const CudaPackStats& pack_stats() const { return pack_stats_; }

 private:
  struct Packed {
    const uint8_t* nib;
    const uint32_t* meta;
    const float2* esc;
  };
  std::unordered_map<const void*, Packed> packed_;  // keyed by the low-byte plane (MatrixRef::data)
  // A packed matrix's bf16 source, where upload kept it (for the cuBLAS products of many rows); same key.
  std::unordered_map<const void*, const __nv_bfloat16*> plain_bf16_;
  CudaPackStats pack_stats_;
  void gemm_bf16(const MatrixRef& W, const __nv_bfloat16* wbf16, const __nv_bfloat16* xb, int T, float* y);
  void moe_grouped(const LayerWeights& w, const float* h, int T, float* x);
  bool moe_grouped_tc(const LayerWeights& w, const float* h, int T, float* x);
  void moe_experts(const LayerWeights& w, const float* h, int T, float* x);  // after routing
  // Largest scale byte of each row of an MXFP4 expert stack (the tensor-core gate_up kernel's input),
  // computed once per matrix (at upload, or on first use outside a graph capture); null if unavailable.
  const uint8_t* row_max(const ExpertStack& s);
  std::unordered_map<const uint8_t*, const uint8_t*> row_max_;  // keyed by the device scales

  ModelConfig c_;
  BackendOptions opts_;
  RopeParams rope_;
  std::string device_name_;
  int num_sms_ = 132;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t blas_ = nullptr;
  DeviceMemory mem_;
  Status sticky_;

  // Step state: token ids, positions and out rows on the device (read by every kernel, so graphs stay valid);
  // the step's sequences (each attends to its own cache) and its shape key (graphs replay only an equal one).
  int T_ = 0, R_ = 0;
  std::vector<StepSeq> seqs_;
  uint64_t step_key_ = 0;
  PinnedBuffer<int32_t> h_step_;  // [2T + R]: tokens, positions, out rows
  DeviceScratch<int32_t> d_step_{"step tokens"};  // its device copy, read by the kernels
  DeviceScratch<int32_t> d_draws_{"drawn ids"};   // [2R] draw_rows: (id, ticket) per row, tickets 0 between
  PinnedBuffer<int32_t> h_draws_;
  const float* d_inv_freq_ = nullptr;  // [d/2] RoPE frequencies

  // The step's batched decode attention (plan_batch_attention, attention_batch): its one-token sequences with a
  // bf16 cache, when there are two or more, attend in one launch per layer; the others launch apart.
  int batch_n_ = 0;                   // sequences in the batched launch (0: none this step)
  std::vector<char> batched_;         // [seqs_] whether the sequence is one of them
  std::vector<int> batch_window_;     // [layers] the window the table's split counts assume (the model's)
  std::vector<int> batch_nsplit_;     // [layers] the largest split count of the layer's sequences (grid x)
  PinnedBuffer<cuda::DecodeSeq> h_batch_;                             // [layers, batch_n_]
  DeviceScratch<cuda::DecodeSeq> d_batch_{"batched attention table"};  // its device copy
  DeviceScratch<unsigned> batch_tickets_{"batched attention tickets"};  // [batch_n_, nkv], 0 between launches

  // Scratch of the decode step (grown in begin_step, never during graph capture); [T, ...] each.
  DeviceScratch<float> attn_partials_{"attention scratch"};  // [T or batch_n_, nh, splits, d + 2] split results
  DeviceScratch<float> router_logits_{"router logits"};      // [T, E]
  DeviceScratch<int32_t> moe_idx_{"moe indices"};            // [T, k] picked experts
  DeviceScratch<float> moe_wts_{"moe weights"};              // [T, k] their softmax weights
  DeviceScratch<float> moe_act_{"moe activations"};          // [T, k, I] SwiGLU outputs (decode, grouped tc)
  DeviceScratch<int32_t> moe_tiles_{"moe tiles"};            // [tiles, 4] + count: moe_grouped_tc's routing
  DeviceScratch<uint2> moe_xstage_{"moe staged inputs"};     // moe_grouped_tc's inputs, staged once per tile
  // Scratch of the prefill path (cuBLAS GEMMs on bf16 hi/lo pairs, experts grouped).
  DeviceScratch<__nv_bfloat16> act_bf16_{"bf16 activations"};       // [2T, cols] x as hi; lo
  DeviceScratch<__nv_bfloat16> weights_bf16_{"decoded weights"};    // one matrix (or expert) decoded to bf16
  DeviceScratch<float> gemm_pair_out_{"gemm scratch"};              // [2T, rows] one GEMM over [hi; lo]
  DeviceScratch<int32_t> moe_slots_{"moe slots"};                   // [T * k] assignments grouped by expert
  DeviceScratch<float> moe_gate_up_{"moe gate_up"};                 // [n, 2I] one expert's gate_up products
  DeviceScratch<__nv_bfloat16> moe_act_bf16_{"moe activations"};    // [2n, I] its SwiGLU outputs as hi; lo
  DeviceScratch<float> moe_down_{"moe down"};                       // [n, H] its down products
  DeviceScratch<float> moe_expert_out_{"moe outputs"};              // [T * k, H] every assignment's output
  std::vector<int32_t> h_idx_, h_slots_;
  PinnedBuffer<uint8_t> h_staging_;  // two 64 MiB chunks of copy_to_device
  unsigned* d_router_counter_ = nullptr;  // the fused router kernel's last-block ticket (0 between launches)
  unsigned* d_attn_tickets_ = nullptr;    // [kDecodeMaxT * nkv] the decode attention's merge tickets (0 between)
  int32_t* d_argmax_ = nullptr;  // [2 * kArgmaxBlocks partials, result, argmax ticket]
  PinnedBuffer<int32_t> h_argmax_;  // [1] the drawn id
  // The position of the chained step whose input (token, position) the last argmax_async wrote into d_step_
  // (-1: none).
  int chain_pos_ = -1;
  cudaEvent_t argmax_done_ = nullptr;  // copy_drawn_id's copy to h_argmax_ has landed
  cudaEvent_t drawn_ready_ = nullptr;  // the draw's kernel has written the id (copy_stream_ waits for it)
  cudaStream_t copy_stream_ = nullptr;  // the drawn id's copy to the host, off the step stream

  // Graph of one recorded step and the step key it was recorded for.
  bool recording_ = false;
  uint64_t graph_key_ = 0;
  int graph_T_ = 0;
  cudaGraphExec_t graph_exec_ = nullptr;
};

}  // namespace gptoss::cuda_impl
