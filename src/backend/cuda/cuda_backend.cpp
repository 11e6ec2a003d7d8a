// The CUDA backend: weights on the device in their checkpoint precision (MXFP4 experts stay MXFP4),
// KV cache on the device (f32 or bf16), decode through the memory-bound kernels of matvec.cu / moe.cu /
// attention.cu, prefill through cuBLAS bf16 GEMMs (f32 accumulation; activations as hi/lo bf16 pairs,
// so about 16 significant bits) with experts grouped per expert.
// A batch-1 step can be recorded once as a CUDA graph and replayed (record_step / replay_step): every
// kernel reads the token ids and positions from device memory written by begin_step.
#include <cublas_v2.h>

#include <algorithm>
#include <cstring>
#include <thread>
#include <unordered_map>
#include <vector>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/kernels.h"
#include "model/rope.h"

namespace gptoss {

namespace {

using cuda::Wt;
using cuda::WView;

#define GPTOSS_CUDA_TRY(expr)                                                                   \
  do {                                                                                          \
    const cudaError_t e_ = (expr);                                                              \
    if (e_ != cudaSuccess) return Error("cuda: {} failed: {}", #expr, cudaGetErrorString(e_)); \
  } while (0)

constexpr int kDecodeMaxT = 8;  // steps with at most this many tokens use the matvec kernels
constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

Wt to_wt(WeightType t) {
  switch (t) {
    case WeightType::F32: return cuda::kF32;
    case WeightType::BF16: return cuda::kBF16;
    case WeightType::MXFP4: return cuda::kMXFP4;
  }
  return cuda::kF32;
}

size_t matrix_data_bytes(const MatrixRef& m) {
  const size_t n = size_t(m.rows) * size_t(m.cols);
  switch (m.type) {
    case WeightType::F32: return n * 4;
    case WeightType::BF16: return n * 2;
    case WeightType::MXFP4: return n / 2;
  }
  return 0;
}
// What pack_bf16 takes: a single row-major bf16 matrix with a multiple of 8 columns.
bool packable(const MatrixRef& m) {
  return m.type == WeightType::BF16 && !m.transposed && m.cols % 8 == 0 && m.rows > 0;
}
size_t matrix_scale_bytes(const MatrixRef& m) { return m.type == WeightType::MXFP4 ? size_t(m.rows * m.cols / 32) : 0; }

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
  CudaBackend(const ModelConfig& c, const BackendOptions& o) : c_(c), opts_(o), rope_(yarn_rope_params(c)) {}
  ~CudaBackend() override;
  Status init();

  std::string name() const override { return "cuda (" + device_name_ + ")"; }
  Result<ModelWeights> upload(const ModelWeights& host, const ModelConfig& c) override;
  Result<float*> alloc(size_t count) override {
    GPTOSS_ASSIGN(void* p, dev_alloc(count * sizeof(float), "activation buffer"));
    return static_cast<float*>(p);
  }
  Result<std::unique_ptr<KvCache>> create_kv_cache(const ModelConfig& c, const KvCacheOptions& o) override;
  Status begin_step(std::span<const int32_t> tokens, int pos0) override;
  void embed(const MatrixRef& table, float* x) override;
  void rmsnorm(const float* x, const float* w, int T, int n, double eps, float* y) override {
    cuda::launch_rmsnorm(x, w, T, n, float(eps), y, stream_);
    check_launch("rmsnorm");
  }
  void matmul(const MatrixRef& W, const float* x, int T, const float* bias, float* y) override;
  void attention(KvCache& kv, int layer, float* q, float* k, const float* v, const float* sinks, int window,
                 float* out) override;
  void moe(const LayerWeights& w, const float* h, int T, float* x) override;
  bool matmul_add(const MatrixRef& W, const float* x, int T, const float* bias, float* y) override;
  bool norm_qkv(const LayerWeights& L, const float* x, int T, double eps, float* q, float* k, float* v) override;
  bool norm_moe(const LayerWeights& L, float* x, int T, double eps, float* h) override;
  Result<int32_t> argmax(const float* x, int n) override;
  bool argmax_async(const float* x, int n, int chain_pos) override;
  Result<int32_t> argmax_wait() override;
  Status begin_step_chained(int pos0) override;
  Result<int32_t> sample(const float* x, int n, float temperature, double u) override;
  void before_draw();
  void copy_drawn_id();
  Result<int32_t> drawn_id();
  void add(float* x, const float* y, size_t n) override {
    cuda::launch_add(x, y, n, stream_);
    check_launch("add");
  }
  Status to_host(const float* src, size_t n, float* dst) override;
  double measure_bandwidth_gbs() override;
  bool replay_step(uint64_t key) override;
  void record_step_begin(uint64_t key) override;
  Status record_step_end() override;

  Result<void*> upload_bytes(const void* host, size_t bytes, const char* what);
  const std::string& device_name() const { return device_name_; }

 private:
  Result<void*> dev_alloc(size_t bytes, const char* what);
  void dev_free(void* p, size_t bytes);
  Status copy_to_device(void* dst, const void* src, size_t bytes);
  Result<MatrixRef> upload_matrix(const MatrixRef& m, int experts, size_t stride, size_t sstride, const char* what,
                                  size_t* new_stride, size_t* new_sstride);
  Result<const float*> upload_floats(const float* host, size_t n, const char* what);
  Status ensure_step_scratch(int T);
  template <typename Ty>
  Ty* grow(Ty*& p, size_t& cap, size_t n, const char* what);
  void check_launch(const char* op) {
    const cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess && sticky_.ok()) sticky_ = Error("cuda: {} kernel failed: {}", op, cudaGetErrorString(e));
  }
  void fail(Status s) {
    if (sticky_.ok()) sticky_ = std::move(s);
  }
  WView view(const MatrixRef& m, size_t estride = 0, size_t sstride = 0) const {
    WView v{static_cast<const uint8_t*>(m.data), m.scales, m.rows, m.cols, int64_t(estride), int64_t(sstride)};
    if (const auto it = packed_.find(m.data); it != packed_.end())
      v.nib = it->second.nib, v.meta = it->second.meta, v.esc = it->second.esc;
    return v;
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
  CudaPackStats pack_stats_;
  void gemm_bf16(const MatrixRef& W, const __nv_bfloat16* wbf16, const __nv_bfloat16* xb, int T, float* y);
  void moe_grouped(const LayerWeights& w, const float* h, int T, float* x);
  void moe_experts(const LayerWeights& w, const float* h, int T, float* x);  // after routing
  // Largest scale byte of each row of an MXFP4 expert stack (the tensor-core gate_up kernel's input),
  // computed once per matrix (at upload, or on first use outside a graph capture); null if unavailable.
  const uint8_t* row_max(const MatrixRef& m, int experts, size_t sstride);
  std::unordered_map<const uint8_t*, const uint8_t*> row_max_;  // keyed by the device scales

  ModelConfig c_;
  BackendOptions opts_;
  RopeParams rope_;
  std::string device_name_;
  int num_sms_ = 132;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t blas_ = nullptr;
  std::vector<void*> allocs_;
  size_t used_ = 0;
  Status sticky_;

  // Step state: token ids and positions on the device (read by every kernel, so graphs stay valid).
  int T_ = 0;
  int32_t* h_step_ = nullptr;  // pinned [2 * cap]: tokens then positions
  int32_t* d_step_ = nullptr;  // device copy
  size_t step_cap_ = 0;
  float* d_inv_freq_ = nullptr;

  // Scratch, grown (never during graph capture) in begin_step or the prefill path.
  float* attn_part_ = nullptr; size_t attn_part_cap_ = 0;
  float* router_logits_ = nullptr; size_t router_cap_ = 0;
  int32_t* moe_idx_ = nullptr; size_t moe_idx_cap_ = 0;
  float* moe_wts_ = nullptr; size_t moe_wts_cap_ = 0;
  float* moe_z_ = nullptr; size_t moe_z_cap_ = 0;
  __nv_bfloat16* xb_ = nullptr; size_t xb_cap_ = 0;      // activations as bf16 for GEMMs
  __nv_bfloat16* wb_ = nullptr; size_t wb_cap_ = 0;      // one decoded weight matrix
  __nv_bfloat16* zb_ = nullptr; size_t zb_cap_ = 0;
  float* gu_ = nullptr; size_t gu_cap_ = 0;
  float* yd_ = nullptr; size_t yd_cap_ = 0;
  float* ybuf_ = nullptr; size_t ybuf_cap_ = 0;
  float* gemm2_ = nullptr; size_t gemm2_cap_ = 0;        // [2T, rows] output of one GEMM over [hi; lo]
  int32_t* slots_ = nullptr; size_t slots_cap_ = 0;
  std::vector<int32_t> h_idx_, h_slots_;
  int32_t* h_pinned_ = nullptr; size_t h_pinned_cap_ = 0;
  unsigned* d_router_counter_ = nullptr;  // the fused router kernel's last-block ticket (0 between launches)
  unsigned* d_attn_tickets_ = nullptr;    // [kDecodeMaxT * nkv] the decode attention's merge tickets (0 between)
  int32_t* d_argmax_ = nullptr;  // [2 * kArgmaxBlocks partials, result, argmax ticket]
  int32_t* h_argmax_ = nullptr;  // pinned result
  // The step input (token, position) the last argmax_async wrote into d_step_ for a chained step at chain_pos_
  // (-1: none), and the d_step_ it wrote into.
  int chain_pos_ = -1;
  const int32_t* chain_step_ = nullptr;
  cudaEvent_t argmax_done_ = nullptr;  // copy_drawn_id's copy to h_argmax_ has landed
  cudaEvent_t drawn_ready_ = nullptr;  // the draw's kernel has written the id (copy_stream_ waits for it)
  cudaStream_t copy_stream_ = nullptr;  // the drawn id's copy to the host, off the step stream

  // Graph of one recorded step, keyed by the caller.
  bool recording_ = false;
  uint64_t graph_key_ = 0;
  int graph_T_ = 0;
  cudaGraphExec_t graph_exec_ = nullptr;
};

CudaBackend::~CudaBackend() {
  if (graph_exec_) cudaGraphExecDestroy(graph_exec_);
  if (stream_) cudaStreamSynchronize(stream_);
  for (void* p : allocs_) cudaFree(p);
  if (h_step_) cudaFreeHost(h_step_);
  if (h_pinned_) cudaFreeHost(h_pinned_);
  if (h_argmax_) cudaFreeHost(h_argmax_);
  if (copy_stream_) cudaStreamSynchronize(copy_stream_);
  if (argmax_done_) cudaEventDestroy(argmax_done_);
  if (drawn_ready_) cudaEventDestroy(drawn_ready_);
  if (copy_stream_) cudaStreamDestroy(copy_stream_);
  if (blas_) cublasDestroy(blas_);
  if (stream_) cudaStreamDestroy(stream_);
}

Status CudaBackend::init() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) return Error("device 'cuda': no CUDA device is available");
  GPTOSS_CUDA_TRY(cudaSetDevice(0));
  cudaDeviceProp prop;
  GPTOSS_CUDA_TRY(cudaGetDeviceProperties(&prop, 0));
  device_name_ = prop.name;
  num_sms_ = prop.multiProcessorCount;
  GPTOSS_CUDA_TRY(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  if (cublasCreate(&blas_) != CUBLAS_STATUS_SUCCESS) return Error("cuda: cublasCreate failed");
  cublasSetStream(blas_, stream_);
  GPTOSS_ASSIGN(const float* f, upload_floats(rope_.inv_freq.data(), rope_.inv_freq.size(), "rope inv_freq"));
  d_inv_freq_ = const_cast<float*>(f);
  GPTOSS_CUDA_TRY(cuda::init_moe_decode_kernels());
  GPTOSS_ASSIGN(void* am, dev_alloc((2 * cuda::kArgmaxBlocks + 2) * sizeof(int32_t), "argmax scratch"));
  d_argmax_ = static_cast<int32_t*>(am);
  GPTOSS_CUDA_TRY(cudaMemset(d_argmax_, 0, (2 * cuda::kArgmaxBlocks + 2) * sizeof(int32_t)));  // the ticket
  GPTOSS_ASSIGN(void* rc, dev_alloc(sizeof(unsigned), "router counter"));
  d_router_counter_ = static_cast<unsigned*>(rc);
  GPTOSS_CUDA_TRY(cudaMemset(d_router_counter_, 0, sizeof(unsigned)));
  const size_t nt = size_t(kDecodeMaxT) * size_t(std::max(1, c_.num_key_value_heads)) * sizeof(unsigned);
  GPTOSS_ASSIGN(void* at, dev_alloc(nt, "attention tickets"));
  d_attn_tickets_ = static_cast<unsigned*>(at);
  GPTOSS_CUDA_TRY(cudaMemset(d_attn_tickets_, 0, nt));
  GPTOSS_CUDA_TRY(cudaMallocHost(&h_argmax_, sizeof(int32_t)));
  GPTOSS_CUDA_TRY(cudaEventCreateWithFlags(&argmax_done_, cudaEventDisableTiming));
  GPTOSS_CUDA_TRY(cudaEventCreateWithFlags(&drawn_ready_, cudaEventDisableTiming));
  GPTOSS_CUDA_TRY(cudaStreamCreateWithFlags(&copy_stream_, cudaStreamNonBlocking));
  return {};
}

Result<void*> CudaBackend::dev_alloc(size_t bytes, const char* what) {
  if (recording_) return Error("cuda: allocation of {} during graph capture", what);
  bytes = std::max<size_t>(bytes, 16);
  if (opts_.gpu_memory_limit && used_ + bytes > opts_.gpu_memory_limit)
    return Error("cuda: {} needs {:.2f} GiB more, but {:.2f} GiB of the --gpu-memory-limit {:.2f} GiB are used", what,
                 double(bytes) / kGiB, double(used_) / kGiB, double(opts_.gpu_memory_limit) / kGiB);
  void* p = nullptr;
  const cudaError_t e = cudaMalloc(&p, bytes);
  if (e != cudaSuccess) {
    cudaGetLastError();
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    return Error("cuda: cannot allocate {:.2f} GiB for {} ({:.2f} GiB free of {:.2f} GiB): {}", double(bytes) / kGiB,
                 what, double(free_b) / kGiB, double(total_b) / kGiB, cudaGetErrorString(e));
  }
  allocs_.push_back(p);
  used_ += bytes;
  return p;
}

void CudaBackend::dev_free(void* p, size_t bytes) {
  const auto it = std::find(allocs_.begin(), allocs_.end(), p);
  if (it == allocs_.end()) return;
  allocs_.erase(it);
  cudaFree(p);
  used_ -= std::min(used_, std::max<size_t>(bytes, 16));
}

Result<MatrixRef> CudaBackend::pack_bf16(const MatrixRef& m, const char* what, bool free_source) {
  if (!packable(m))
    return Error("cuda: {} cannot be packed (row-major bf16 with a multiple of 8 columns only)", what);
  const size_t rows = size_t(m.rows), cols = size_t(m.cols);
  const auto* w = static_cast<const uint16_t*>(m.data);
  // Pass 1: each row's base and escape count, then their prefix on the host (rows words).
  GPTOSS_ASSIGN(void* scratch, dev_alloc(rows * 5, "packing scratch"));
  auto* d_cnt = static_cast<uint32_t*>(scratch);
  auto* d_base = static_cast<uint8_t*>(scratch) + rows * 4;
  cuda::launch_bf16_pack_rows(w, m.rows, m.cols, d_base, d_cnt, stream_);
  std::vector<uint32_t> cnt(rows);
  std::vector<uint8_t> base(rows);
  GPTOSS_CUDA_TRY(cudaMemcpyAsync(cnt.data(), d_cnt, rows * 4, cudaMemcpyDeviceToHost, stream_));
  GPTOSS_CUDA_TRY(cudaMemcpyAsync(base.data(), d_base, rows, cudaMemcpyDeviceToHost, stream_));
  GPTOSS_CUDA_TRY(cudaStreamSynchronize(stream_));
  dev_free(scratch, rows * 5);
  std::vector<uint32_t> meta(rows + 1);
  uint64_t total = 0;
  for (size_t r = 0; r < rows; ++r) {
    meta[r] = uint32_t(total << 8) | base[r];
    total += cnt[r];
  }
  if (total >= (uint64_t(1) << 24)) return m;
  meta[rows] = uint32_t(total << 8);
  GPTOSS_ASSIGN(void* planes, dev_alloc(rows * cols + rows * cols / 2, what));
  GPTOSS_ASSIGN(void* d_meta, upload_bytes(meta.data(), meta.size() * 4, what));
  GPTOSS_ASSIGN(void* esc, dev_alloc(size_t(total) * sizeof(float2), what));
  auto* lo = static_cast<uint8_t*>(planes);
  cuda::launch_bf16_pack(w, m.rows, m.cols, static_cast<const uint32_t*>(d_meta), lo, lo + rows * cols,
                         static_cast<float2*>(esc), stream_);
  GPTOSS_CUDA_TRY(cudaGetLastError());
  GPTOSS_CUDA_TRY(cudaStreamSynchronize(stream_));
  if (free_source) dev_free(const_cast<void*>(m.data), rows * cols * 2);
  packed_[lo] = Packed{lo + rows * cols, static_cast<const uint32_t*>(d_meta), static_cast<const float2*>(esc)};
  pack_stats_.matrices += 1;
  pack_stats_.weights += rows * cols;
  pack_stats_.escapes += size_t(total);
  pack_stats_.bytes += rows * cols * 3 / 2 + meta.size() * 4 + size_t(total) * sizeof(float2);
  MatrixRef d = m;
  d.data = lo;
  return d;
}

template <typename Ty>
Ty* CudaBackend::grow(Ty*& p, size_t& cap, size_t n, const char* what) {
  if (n <= cap) return p;
  auto r = dev_alloc(n * sizeof(Ty), what);
  if (!r.ok()) {
    fail(r.status());
    return p;
  }
  p = static_cast<Ty*>(*r);  // the old buffer stays owned by allocs_ (rare growth)
  cap = n;
  return p;
}

// Page-cache bytes to the device through two pinned staging buffers; the host copies of a chunk
// run on several threads while the previous chunk's DMA is in flight.
Status CudaBackend::copy_to_device(void* dst, const void* src, size_t bytes) {
  constexpr size_t kChunk = size_t(64) << 20;
  if (!h_pinned_ || h_pinned_cap_ < 2 * kChunk / 4) {
    GPTOSS_CUDA_TRY(cudaMallocHost(&h_pinned_, 2 * kChunk));
    h_pinned_cap_ = 2 * kChunk / 4;
  }
  cudaEvent_t done[2];
  GPTOSS_CUDA_TRY(cudaEventCreateWithFlags(&done[0], cudaEventDisableTiming));
  GPTOSS_CUDA_TRY(cudaEventCreateWithFlags(&done[1], cudaEventDisableTiming));
  const unsigned nthreads = std::clamp(std::thread::hardware_concurrency(), 1u, 8u);
  Status st;
  for (size_t off = 0, i = 0; off < bytes; off += kChunk, ++i) {
    const size_t n = std::min(kChunk, bytes - off);
    uint8_t* stage = reinterpret_cast<uint8_t*>(h_pinned_) + (i % 2) * kChunk;
    if (i >= 2 && cudaEventSynchronize(done[i % 2]) != cudaSuccess) {
      st = Error("cuda: staging copy failed");
      break;
    }
    const uint8_t* s = static_cast<const uint8_t*>(src) + off;
    if (n >= (size_t(4) << 20) && nthreads > 1) {
      std::vector<std::thread> th;
      const size_t part = (n + nthreads - 1) / nthreads;
      for (unsigned j = 0; j < nthreads; ++j) {
        const size_t a = j * part, b = std::min(n, a + part);
        if (a < b) th.emplace_back([=] { std::memcpy(stage + a, s + a, b - a); });
      }
      for (auto& t : th) t.join();
    } else {
      std::memcpy(stage, s, n);
    }
    if (cudaMemcpyAsync(static_cast<uint8_t*>(dst) + off, stage, n, cudaMemcpyHostToDevice, stream_) != cudaSuccess ||
        cudaEventRecord(done[i % 2], stream_) != cudaSuccess) {
      st = Error("cuda: copy of {} bytes to the device failed", n);
      break;
    }
  }
  cudaStreamSynchronize(stream_);
  cudaEventDestroy(done[0]);
  cudaEventDestroy(done[1]);
  return st;
}

Result<void*> CudaBackend::upload_bytes(const void* host, size_t bytes, const char* what) {
  GPTOSS_ASSIGN(void* p, dev_alloc(bytes, what));
  GPTOSS_TRY(copy_to_device(p, host, bytes));
  return p;
}

Result<const float*> CudaBackend::upload_floats(const float* host, size_t n, const char* what) {
  if (!host) return static_cast<const float*>(nullptr);
  GPTOSS_ASSIGN(void* p, upload_bytes(host, n * sizeof(float), what));
  return static_cast<const float*>(p);
}

Result<MatrixRef> CudaBackend::upload_matrix(const MatrixRef& m, int experts, size_t stride, size_t sstride,
                                             const char* what, size_t* new_stride, size_t* new_sstride) {
  if (!m.data) return Error("cuda upload: {} has no data", what);
  if (m.type == WeightType::MXFP4 && m.cols % 32 != 0)
    return Error("cuda upload: {} is MXFP4 with {} columns, expected a multiple of 32", what, m.cols);
  if (m.type != WeightType::MXFP4 && !m.transposed && m.cols % 8 != 0)
    return Error("cuda upload: {} has {} columns, expected a multiple of 8", what, m.cols);
  // Experts are packed densely on the device (stride = one expert's bytes).
  const size_t db = matrix_data_bytes(m), sb = matrix_scale_bytes(m);
  MatrixRef d = m;
  GPTOSS_ASSIGN(void* data, dev_alloc(db * size_t(experts), what));
  for (int e = 0; e < experts; ++e) {
    if (e > 0 && stride == db) {  // contiguous: one copy for all experts
      GPTOSS_TRY(copy_to_device(static_cast<uint8_t*>(data) + db, static_cast<const uint8_t*>(m.data) + stride,
                                db * size_t(experts - 1)));
      break;
    }
    GPTOSS_TRY(copy_to_device(static_cast<uint8_t*>(data) + db * size_t(e),
                              static_cast<const uint8_t*>(m.data) + stride * size_t(e), db));
  }
  d.data = data;
  if (sb) {
    GPTOSS_ASSIGN(void* sc, dev_alloc(sb * size_t(experts), what));
    for (int e = 0; e < experts; ++e)
      GPTOSS_TRY(copy_to_device(static_cast<uint8_t*>(sc) + sb * size_t(e), m.scales + sstride * size_t(e), sb));
    d.scales = static_cast<const uint8_t*>(sc);
  }
  if (new_stride) *new_stride = db;
  if (new_sstride) *new_sstride = sb;
  return d;
}

Result<ModelWeights> CudaBackend::upload(const ModelWeights& host, const ModelConfig& c) {
  const int E = c.num_local_experts, H = c.hidden_size;
  if (c.num_attention_heads % c.num_key_value_heads != 0 || c.num_attention_heads / c.num_key_value_heads > 8)
    return Error("cuda: {} query heads per kv head, the attention kernel supports 1..8",
                 c.num_attention_heads / std::max(1, c.num_key_value_heads));
  if (c.head_dim % 8 != 0 || c.head_dim > 128)
    return Error("cuda: head_dim {} unsupported (multiple of 8, at most 128)", c.head_dim);
  if (E > 256 || c.num_experts_per_tok > 8)
    return Error("cuda: {} experts, top-{}: the router kernel supports at most 256 and top-8", E,
                 c.num_experts_per_tok);
  // Memory check first: what the weights need against what the device (or the limit) allows.
  size_t need = 0;
  auto add_m = [&](const MatrixRef& m, int experts) { need += (matrix_data_bytes(m) + matrix_scale_bytes(m)) * size_t(experts); };
  add_m(host.embed, 1);
  add_m(host.lm_head, 1);
  for (const LayerWeights& L : host.layers) {
    for (const MatrixRef* m : {&L.q, &L.k, &L.v, &L.o, &L.router}) add_m(*m, 1);
    add_m(L.gate_up, E);
    add_m(L.down, E);
    if (L.gate_up.type == WeightType::MXFP4) need += size_t(E) * size_t(L.gate_up.rows);  // row_max()
    need += sizeof(float) * size_t(4 * H + c.q_dim() + 2 * c.kv_dim() + c.num_attention_heads + E + E * 2 * c.intermediate_size + E * H);
  }
  size_t free_b = 0, total_b = 0;
  GPTOSS_CUDA_TRY(cudaMemGetInfo(&free_b, &total_b));
  const size_t avail = opts_.gpu_memory_limit ? std::min(free_b, opts_.gpu_memory_limit - std::min(used_, opts_.gpu_memory_limit)) : free_b;
  if (need > avail)
    return Error("cuda: the model needs {:.2f} GiB of GPU memory for its weights, but only {:.2f} GiB are available on "
                 "{} ({:.2f} GiB free of {:.2f} GiB{})",
                 double(need) / kGiB, double(avail) / kGiB, device_name_, double(free_b) / kGiB, double(total_b) / kGiB,
                 opts_.gpu_memory_limit ? fmt::format(", limit {:.2f} GiB", double(opts_.gpu_memory_limit) / kGiB) : "");

  ModelWeights d;
  GPTOSS_ASSIGN(d.embed, upload_matrix(host.embed, 1, 0, 0, "embed", nullptr, nullptr));
  GPTOSS_ASSIGN(d.lm_head, upload_matrix(host.lm_head, 1, 0, 0, "lm_head", nullptr, nullptr));
  // The decode products read these once per token: packed (lossless, 12 bits per weight and the escapes).
  auto pack = [&](MatrixRef& m, const char* what) -> Status {
    if (!opts_.gpu_pack_bf16 || !packable(m)) return {};
    GPTOSS_ASSIGN(m, pack_bf16(m, what, /*free_source=*/true));
    return {};
  };
  GPTOSS_TRY(pack(d.lm_head, "lm_head"));
  GPTOSS_ASSIGN(d.final_norm, upload_floats(host.final_norm, size_t(H), "final_norm"));
  const size_t I = size_t(c.intermediate_size);
  for (const LayerWeights& L : host.layers) {
    LayerWeights o = L;
    GPTOSS_ASSIGN(o.q, upload_matrix(L.q, 1, 0, 0, "q_proj", nullptr, nullptr));
    GPTOSS_ASSIGN(o.k, upload_matrix(L.k, 1, 0, 0, "k_proj", nullptr, nullptr));
    GPTOSS_ASSIGN(o.v, upload_matrix(L.v, 1, 0, 0, "v_proj", nullptr, nullptr));
    GPTOSS_ASSIGN(o.o, upload_matrix(L.o, 1, 0, 0, "o_proj", nullptr, nullptr));
    GPTOSS_TRY(pack(o.q, "q_proj"));
    GPTOSS_TRY(pack(o.k, "k_proj"));
    GPTOSS_TRY(pack(o.v, "v_proj"));
    GPTOSS_TRY(pack(o.o, "o_proj"));
    GPTOSS_ASSIGN(o.router, upload_matrix(L.router, 1, 0, 0, "router", nullptr, nullptr));
    GPTOSS_ASSIGN(o.gate_up, upload_matrix(L.gate_up, E, L.gate_up_stride, L.gate_up_scales_stride, "gate_up_proj",
                                           &o.gate_up_stride, &o.gate_up_scales_stride));
    GPTOSS_ASSIGN(o.down, upload_matrix(L.down, E, L.down_stride, L.down_scales_stride, "down_proj", &o.down_stride,
                                        &o.down_scales_stride));
    GPTOSS_ASSIGN(o.attn_norm, upload_floats(L.attn_norm, size_t(H), "attn_norm"));
    GPTOSS_ASSIGN(o.mlp_norm, upload_floats(L.mlp_norm, size_t(H), "mlp_norm"));
    GPTOSS_ASSIGN(o.q_bias, upload_floats(L.q_bias, size_t(c.q_dim()), "q_bias"));
    GPTOSS_ASSIGN(o.k_bias, upload_floats(L.k_bias, size_t(c.kv_dim()), "k_bias"));
    GPTOSS_ASSIGN(o.v_bias, upload_floats(L.v_bias, size_t(c.kv_dim()), "v_bias"));
    GPTOSS_ASSIGN(o.o_bias, upload_floats(L.o_bias, size_t(H), "o_bias"));
    GPTOSS_ASSIGN(o.sinks, upload_floats(L.sinks, size_t(c.num_attention_heads), "sinks"));
    GPTOSS_ASSIGN(o.router_bias, upload_floats(L.router_bias, size_t(E), "router_bias"));
    GPTOSS_ASSIGN(o.gate_up_bias, upload_floats(L.gate_up_bias, size_t(E) * 2 * I, "gate_up_bias"));
    GPTOSS_ASSIGN(o.down_bias, upload_floats(L.down_bias, size_t(E) * size_t(H), "down_bias"));
    if (o.gate_up.type == WeightType::MXFP4 && !o.gate_up.transposed) (void)row_max(o.gate_up, E, o.gate_up_scales_stride);
    d.layers.push_back(o);
  }
  GPTOSS_TRY(sticky_);
  return d;
}

Result<std::unique_ptr<KvCache>> CudaBackend::create_kv_cache(const ModelConfig& c, const KvCacheOptions& o) {
  auto kv = std::make_unique<CudaKvCache>();
  kv->bf16 = o.precision == KvPrecision::BF16;
  const size_t es = kv->bf16 ? 2 : 4;
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const int cap = c.layer_is_sliding[size_t(l)] ? std::min(o.max_context, c.sliding_window - 1 + o.max_batch)
                                                  : o.max_context;
    const size_t n = size_t(cap) * size_t(c.kv_dim()) * es;
    GPTOSS_ASSIGN(void* k, dev_alloc(n, "KV cache"));
    GPTOSS_ASSIGN(void* v, dev_alloc(n, "KV cache"));
    kv->k.push_back(k);
    kv->v.push_back(v);
    kv->capacity.push_back(cap);
    kv->total += 2 * n;
  }
  return std::unique_ptr<KvCache>(std::move(kv));
}

// Attention splits for the CUDA-core split kernel: at least 128 keys each (one 32-key tile for each of its 4
// warps), at most 8 blocks per SM.
int attention_splits(int T, int nkv, int max_keys, int sms) {
  const int by_work = std::max(1, (max_keys + 127) / 128);
  const int by_chip = std::max(1, (8 * sms + T * nkv - 1) / (T * nkv));
  return std::min(by_work, by_chip);
}

// ... and for the tensor-core decode kernel: at least 512 keys each, at most 32 splits (and what its in-kernel
// merge can hold). H100, 20b decode, two interleaved A/B runs, tok/s by least keys per split: context 2048
// (a 2177-key cache) 128: 437.4 / 439.2, 512: 440.6 / 443.7, 1024: 432.5, 2048: 424.0; context 32k 128: 359.6,
// 512: 379.1 / 379.9, 1024: 389.6 / 388.2, 2048: 389.6 (bench/cuda_notes.md, round 6).
int attention_decode_splits(int nh, int nkv, int d, int max_keys) {
  const int by_work = std::max(1, (max_keys + 511) / 512);
  return std::max(1, std::min({by_work, 32, cuda::attention_decode_max_splits(nh, nkv, d)}));
}

Status CudaBackend::ensure_step_scratch(int T) {
  const size_t t = size_t(T), H = size_t(c_.hidden_size), k = size_t(c_.num_experts_per_tok);
  if (2 * t > step_cap_) {
    if (h_step_) cudaFreeHost(h_step_);
    GPTOSS_CUDA_TRY(cudaMallocHost(&h_step_, 2 * t * sizeof(int32_t)));
    GPTOSS_ASSIGN(void* d, dev_alloc(2 * t * sizeof(int32_t), "step tokens"));
    d_step_ = static_cast<int32_t*>(d);
    step_cap_ = 2 * t;
  }
  const int max_splits = attention_splits(T, c_.num_key_value_heads, 1 << 30, num_sms_);
  grow(attn_part_, attn_part_cap_, t * size_t(c_.num_attention_heads) * size_t(max_splits) * size_t(c_.head_dim + 2),
       "attention scratch");
  grow(router_logits_, router_cap_, t * size_t(c_.num_local_experts), "router logits");
  grow(moe_idx_, moe_idx_cap_, t * k, "moe indices");
  grow(moe_wts_, moe_wts_cap_, t * k, "moe weights");
  if (T <= kDecodeMaxT) grow(moe_z_, moe_z_cap_, t * k * size_t(c_.intermediate_size), "moe activations");
  (void)H;
  return sticky_;
}

Status CudaBackend::begin_step(std::span<const int32_t> tokens, int pos0) {
  GPTOSS_TRY(sticky_);
  chain_pos_ = -1;  // d_step_ is rewritten from the host below
  T_ = int(tokens.size());
  GPTOSS_TRY(ensure_step_scratch(T_));
  // The previous step's copy must be done before the pinned buffer is rewritten.
  GPTOSS_CUDA_TRY(cudaStreamSynchronize(stream_));
  for (int t = 0; t < T_; ++t) h_step_[t] = tokens[size_t(t)], h_step_[T_ + t] = pos0 + t;
  GPTOSS_CUDA_TRY(cudaMemcpyAsync(d_step_, h_step_, 2 * size_t(T_) * sizeof(int32_t), cudaMemcpyHostToDevice, stream_));
  return {};
}

void CudaBackend::embed(const MatrixRef& table, float* x) {
  if (table.type == WeightType::MXFP4 || table.transposed) return fail(Error("cuda embed: table must be dense f32/bf16"));
  cuda::launch_embed(to_wt(table.type), table.data, table.cols, d_step_, T_, x, stream_);
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
    float* s2 = grow(gemm2_, gemm2_cap_, 2 * n, "gemm scratch");
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
    __nv_bfloat16* xb = grow(xb_, xb_cap_, 2 * size_t(T) * size_t(W.cols), "bf16 activations");
    if (!sticky_.ok()) return;
    cuda::launch_f32_to_bf16x2(x, size_t(T) * size_t(W.cols), xb, stream_);
    const __nv_bfloat16* wb = static_cast<const __nv_bfloat16*>(W.data);
    if (W.type == WeightType::MXFP4 || wt == cuda::kBF12) {
      __nv_bfloat16* s = grow(wb_, wb_cap_, size_t(W.rows) * size_t(W.cols), "decoded weights");
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

void CudaBackend::attention(KvCache& kvb, int layer, float* q, float* k, const float* v, const float* sinks,
                            int window, float* out) {
  auto& kv = static_cast<CudaKvCache&>(kvb);
  const int nh = c_.num_attention_heads, nkv = c_.num_key_value_heads, d = c_.head_dim;
  const int cap = kv.capacity[size_t(layer)];
  const bool decode_tc = T_ <= kDecodeMaxT && kv.bf16 && cuda::attention_decode_supported(nh, nkv, d);
  // One token: the decode kernel applies RoPE and appends the new key and value itself (one launch fewer per
  // layer; with the merge in the kernel too, H100 20b decode at 32k 353.2 -> 358.6 tok/s, unchanged at 2048).
  const bool rope_in_kernel = decode_tc && T_ == 1;
  if (!rope_in_kernel)
    cuda::launch_rope_kv_append(kv.bf16, q, k, v, kv.k[size_t(layer)], kv.v[size_t(layer)], d_step_ + T_, d_inv_freq_,
                                rope_.mscale, cap, T_, nh, nkv, d, stream_);
  if (T_ > kDecodeMaxT && cuda::attention_prefill_supported(nh, nkv, d)) {
    const cudaError_t e = cuda::launch_attention_prefill(kv.bf16, q, kv.k[size_t(layer)], kv.v[size_t(layer)],
                                                         d_step_ + T_, cap, window, sinks, T_, nh, nkv, d, out, stream_);
    if (e != cudaSuccess) return fail(Error("cuda: attention prefill: {}", cudaGetErrorString(e)));
    return check_launch("attention prefill");
  }
  const int max_keys = window > 0 ? std::min(window, cap) : cap;
  const int nsplit = decode_tc ? attention_decode_splits(nh, nkv, d, max_keys)
                               : attention_splits(T_, nkv, max_keys, num_sms_);
  // bf16 cache: the tensor-core decode kernel (H100, same run: 341 -> 373 tok/s at context 2048, 242 -> 300
  // at 32k; bench/cuda_notes.md); f32 cache: the CUDA-core split kernel (exact f32 products).
  if (decode_tc) {
    cuda::DecodeFusion fuse;
    if (rope_in_kernel) fuse.k = k, fuse.v = v, fuse.inv_freq = d_inv_freq_, fuse.mscale = rope_.mscale;
    fuse.tickets = d_attn_tickets_;
    const cudaError_t e = cuda::launch_attention_decode(q, kv.k[size_t(layer)], kv.v[size_t(layer)], d_step_ + T_, cap,
                                                        window, sinks, T_, nh, nkv, d, nsplit, attn_part_, out, fuse,
                                                        stream_);
    if (e != cudaSuccess) return fail(Error("cuda: attention decode: {}", cudaGetErrorString(e)));
    return check_launch("attention decode");
  }
  cuda::launch_attention(kv.bf16, q, kv.k[size_t(layer)], kv.v[size_t(layer)], d_step_ + T_, cap, window, sinks, T_,
                         nh, nkv, d, nsplit, attn_part_, out, stream_);
  check_launch("attention");
}

void CudaBackend::moe(const LayerWeights& w, const float* h, int T, float* x) {
  const int E = c_.num_local_experts, k = c_.num_experts_per_tok;
  matmul(w.router, h, T, w.router_bias, router_logits_);
  cuda::launch_router_topk(router_logits_, T, E, k, moe_idx_, moe_wts_, stream_);
  check_launch("router_topk");
  moe_experts(w, h, T, x);
}

const uint8_t* CudaBackend::row_max(const MatrixRef& m, int experts, size_t sstride) {
  if (const auto it = row_max_.find(m.scales); it != row_max_.end()) return it->second;
  const int nb = int(m.cols / 32);
  if (recording_ || !m.scales || sstride != size_t(m.rows) * size_t(nb)) return nullptr;
  auto r = dev_alloc(size_t(experts) * size_t(m.rows), "MXFP4 row scales");
  if (!r.ok()) return nullptr;
  auto* out = static_cast<uint8_t*>(*r);
  cuda::launch_mxfp4_row_max(m.scales, int64_t(experts) * m.rows, nb, out, stream_);
  check_launch("mxfp4 row max");
  row_max_[m.scales] = out;
  return out;
}

void CudaBackend::moe_experts(const LayerWeights& w, const float* h, int T, float* x) {
  const int k = c_.num_experts_per_tok;
  if (T > kDecodeMaxT) return moe_grouped(w, h, T, x);
  const float limit = float(c_.swiglu_limit);
  if (w.gate_up.type == WeightType::MXFP4 && w.down.type == WeightType::MXFP4 && !w.gate_up.transposed &&
      !w.down.transposed &&
      cuda::launch_moe_mxfp4_decode(view(w.gate_up, w.gate_up_stride, w.gate_up_scales_stride),
                                    view(w.down, w.down_stride, w.down_scales_stride), h, moe_idx_, moe_wts_, T, k,
                                    w.gate_up_bias, w.down_bias, limit, moe_z_, x, stream_,
                                    row_max(w.gate_up, c_.num_local_experts, w.gate_up_scales_stride)))
    return check_launch("moe mxfp4 decode");
  cuda::launch_moe_gate_up_swiglu(to_wt(w.gate_up.type), w.gate_up.transposed,
                                  view(w.gate_up, w.gate_up_stride, w.gate_up_scales_stride), h, moe_idx_, T, k,
                                  w.gate_up_bias, limit, moe_z_, stream_);
  cuda::launch_moe_down_combine(to_wt(w.down.type), w.down.transposed, view(w.down, w.down_stride, w.down_scales_stride),
                                moe_z_, moe_idx_, moe_wts_, T, k, w.down_bias, x, stream_);
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
  // critical path. H100, 20b decode, interleaved A/B: 490.6 -> 497.0 tok/s at context 2048, 430.1 -> 434.2 at
  // 32k (bench/cuda_notes.md, round 10).
  const bool gu_topk = E <= 32 && L.gate_up.type == WeightType::MXFP4 &&
                       L.down.type == WeightType::MXFP4 && !L.gate_up.transposed && !L.down.transposed;
  const uint8_t* rowmax = gu_topk ? row_max(L.gate_up, E, L.gate_up_scales_stride) : nullptr;
  if (!cuda::launch_norm_router_topk(wt_of(L.router), view(L.router), L.router_bias, x, L.mlp_norm, float(eps), T, k,
                                     h, router_logits_, moe_idx_, moe_wts_, d_router_counter_, stream_,
                                     /*topk=*/!gu_topk))
    return false;
  check_launch("norm router topk");
  if (gu_topk) {
    if (cuda::launch_moe_mxfp4_decode(view(L.gate_up, L.gate_up_stride, L.gate_up_scales_stride),
                                      view(L.down, L.down_stride, L.down_scales_stride), h, moe_idx_, moe_wts_, T, k,
                                      L.gate_up_bias, L.down_bias, float(c_.swiglu_limit), moe_z_, x, stream_, rowmax,
                                      router_logits_, E)) {
      check_launch("moe mxfp4 decode (top-k in gate_up)");
      return true;
    }
    cuda::launch_router_topk(router_logits_, T, E, k, moe_idx_, moe_wts_, stream_);  // not taken: top-k here
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
    e = cudaMemcpyAsync(h_argmax_, d_argmax_ + 2 * cuda::kArgmaxBlocks, sizeof(int32_t), cudaMemcpyDeviceToHost,
                        copy_stream_);
  if (e == cudaSuccess) e = cudaEventRecord(argmax_done_, copy_stream_);
  if (e != cudaSuccess) fail(Error("cuda: drawn id copy: {}", cudaGetErrorString(e)));
}

Result<int32_t> CudaBackend::drawn_id() {
  GPTOSS_TRY(sticky_);
  GPTOSS_CUDA_TRY(cudaEventSynchronize(argmax_done_));
  GPTOSS_TRY(sticky_);
  return *h_argmax_;
}

bool CudaBackend::argmax_async(const float* x, int n, int chain_pos) {
  if (!sticky_.ok()) return false;
  before_draw();
  // A chained step's input written by the argmax's last block: no kernel of its own between the steps.
  const bool chain = chain_pos >= 0 && d_step_ && step_cap_ >= 2;
  chain_pos_ = chain ? chain_pos : -1;
  chain_step_ = chain ? d_step_ : nullptr;
  cuda::launch_argmax(x, n, d_argmax_, d_argmax_ + 2 * cuda::kArgmaxBlocks, stream_, chain ? d_step_ : nullptr,
                      chain_pos);
  check_launch("argmax");
  copy_drawn_id();
  return true;
}

Result<int32_t> CudaBackend::argmax_wait() { return drawn_id(); }

// The token is the last argmax, copied on the device; the position comes with the launch. No host sync: the
// pinned step buffer is not touched (begin_step syncs before it rewrites it).
Status CudaBackend::begin_step_chained(int pos0) {
  GPTOSS_TRY(sticky_);
  T_ = 1;
  GPTOSS_TRY(ensure_step_scratch(T_));
  const bool written = chain_pos_ == pos0 && chain_step_ == d_step_;
  chain_pos_ = -1;
  if (written) return sticky_;  // by the argmax (argmax_async's chain_pos)
  cuda::launch_step_from_argmax(d_argmax_ + 2 * cuda::kArgmaxBlocks, pos0, d_step_, stream_);
  check_launch("chained step input");
  return sticky_;
}

Result<int32_t> CudaBackend::argmax(const float* x, int n) {
  GPTOSS_TRY(sticky_);
  argmax_async(x, n, -1);
  return drawn_id();
}

// Prefill: assignments (t, j) grouped by expert on the host (one sync per layer), then per expert a
// gather, two bf16 GEMMs with the expert decoded to bf16 scratch, and a scatter; a final weighted sum.
void CudaBackend::moe_grouped(const LayerWeights& w, const float* h, int T, float* x) {
  const int E = c_.num_local_experts, k = c_.num_experts_per_tok, H = c_.hidden_size, I = c_.intermediate_size;
  const size_t A = size_t(T) * size_t(k);
  h_idx_.resize(A);
  if (cudaMemcpyAsync(h_idx_.data(), moe_idx_, A * sizeof(int32_t), cudaMemcpyDeviceToHost, stream_) != cudaSuccess ||
      cudaStreamSynchronize(stream_) != cudaSuccess)
    return fail(Error("cuda moe: copying expert indices failed"));
  std::vector<int> count(size_t(E) + 1, 0);
  for (int32_t e : h_idx_) count[size_t(e) + 1]++;
  for (int e = 0; e < E; ++e) count[size_t(e) + 1] += count[size_t(e)];
  h_slots_.resize(A);
  std::vector<int> fill(count.begin(), count.end() - 1);
  for (size_t a = 0; a < A; ++a) h_slots_[size_t(fill[size_t(h_idx_[a])]++)] = int32_t(a);
  int32_t* slots = grow(slots_, slots_cap_, A, "moe slots");
  __nv_bfloat16* xg = grow(xb_, xb_cap_, 2 * A * size_t(H), "bf16 activations");
  float* gu = grow(gu_, gu_cap_, size_t(T) * 2 * size_t(I), "moe gate_up");
  __nv_bfloat16* zb = grow(zb_, zb_cap_, 2 * size_t(T) * size_t(I), "moe activations");
  float* yd = grow(yd_, yd_cap_, size_t(T) * size_t(H), "moe down");
  float* ybuf = grow(ybuf_, ybuf_cap_, A * size_t(H), "moe outputs");
  __nv_bfloat16* wb = grow(wb_, wb_cap_, 2 * size_t(I) * size_t(H), "decoded weights");
  if (!sticky_.ok()) return;
  if (cudaMemcpyAsync(slots, h_slots_.data(), A * sizeof(int32_t), cudaMemcpyHostToDevice, stream_) != cudaSuccess)
    return fail(Error("cuda moe: copying slots failed"));
  const float limit = float(c_.swiglu_limit);
  for (int e = 0; e < E; ++e) {
    const int n = count[size_t(e) + 1] - count[size_t(e)];
    if (n == 0) continue;
    const int32_t* sl = slots + count[size_t(e)];
    cuda::launch_gather_bf16x2(h, sl, n, k, H, xg, stream_);
    MatrixRef gup = w.expert_gate_up(e), dn = w.expert_down(e);
    const bool gup_direct = gup.type == WeightType::BF16;
    if (!gup_direct) cuda::launch_weight_to_bf16(to_wt(gup.type), gup.transposed, view(w.gate_up, w.gate_up_stride, w.gate_up_scales_stride), e, wb, stream_);
    MatrixRef gview = gup;
    if (!gup_direct) gview.transposed = false;
    gemm_bf16(gview, gup_direct ? static_cast<const __nv_bfloat16*>(gup.data) : wb, xg, n, gu);
    cuda::launch_swiglu_bias(gu, w.gate_up_bias + size_t(e) * 2 * size_t(I), n, I, limit, zb, stream_);
    const bool dn_direct = dn.type == WeightType::BF16;
    if (!dn_direct) cuda::launch_weight_to_bf16(to_wt(dn.type), dn.transposed, view(w.down, w.down_stride, w.down_scales_stride), e, wb, stream_);
    MatrixRef dview = dn;
    if (!dn_direct) dview.transposed = false;
    gemm_bf16(dview, dn_direct ? static_cast<const __nv_bfloat16*>(dn.data) : wb, zb, n, yd);
    cuda::launch_scatter_bias(yd, w.down_bias + size_t(e) * size_t(H), sl, n, H, ybuf, stream_);
  }
  cuda::launch_moe_combine(ybuf, moe_wts_, T, k, H, x, stream_);
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

Status CudaBackend::to_host(const float* src, size_t n, float* dst) {
  GPTOSS_TRY(sticky_);
  GPTOSS_CUDA_TRY(cudaMemcpyAsync(dst, src, n * sizeof(float), cudaMemcpyDeviceToHost, stream_));
  GPTOSS_CUDA_TRY(cudaStreamSynchronize(stream_));
  return sticky_;
}

// Device copy bandwidth: a 1 GiB device-to-device copy, (bytes read + bytes written) / time, median of 9.
double CudaBackend::measure_bandwidth_gbs() {
  const size_t n = size_t(1) << 30;
  void *a = nullptr, *b = nullptr;
  if (cudaMalloc(&a, n) != cudaSuccess || cudaMalloc(&b, n) != cudaSuccess) {
    cudaGetLastError();
    if (a) cudaFree(a);
    return 0.0;
  }
  cudaMemsetAsync(a, 1, n, stream_);
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  std::vector<float> ms;
  for (int i = 0; i < 10; ++i) {
    cudaEventRecord(e0, stream_);
    cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice, stream_);
    cudaEventRecord(e1, stream_);
    cudaEventSynchronize(e1);
    float t = 0;
    cudaEventElapsedTime(&t, e0, e1);
    if (i > 0) ms.push_back(t);  // the first copy is a warm-up
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  cudaFree(a);
  cudaFree(b);
  std::sort(ms.begin(), ms.end());
  return 2.0 * double(n) / (double(ms[ms.size() / 2]) * 1e-3) / 1e9;
}

// Graphs: only single-token steps are recorded (prefill steps sync with the host in moe_grouped).
bool CudaBackend::replay_step(uint64_t key) {
  if (!graph_exec_ || key != graph_key_ || T_ != graph_T_ || !sticky_.ok()) return false;
  const cudaError_t e = cudaGraphLaunch(graph_exec_, stream_);
  if (e != cudaSuccess) fail(Error("cuda: graph launch failed: {}", cudaGetErrorString(e)));
  return true;
}

void CudaBackend::record_step_begin(uint64_t key) {
  if (T_ != 1 || !sticky_.ok()) return;
  if (cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal) != cudaSuccess) {
    cudaGetLastError();
    return;
  }
  recording_ = true;
  graph_key_ = key;
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

}  // namespace

Result<std::unique_ptr<Backend>> create_cuda_backend(const ModelConfig& c, const BackendOptions& o) {
  auto b = std::make_unique<CudaBackend>(c, o);
  GPTOSS_TRY(b->init());
  return std::unique_ptr<Backend>(std::move(b));
}

bool cuda_device_available() {
  int n = 0;
  const bool ok = cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
  cudaGetLastError();
  return ok;
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
