// The CUDA backend's device memory: allocation under --gpu-memory-limit, the upload of a model's weights
// (bf16 projections and head packed losslessly, MXFP4 experts as they are), the KV cache, and the device copy
// bandwidth probe. The class is declared in backend_impl.h.
#include <algorithm>
#include <cstring>
#include <thread>
#include <vector>

#include "backend/cuda/backend_impl.h"

namespace gptoss::cuda_impl {

CudaBackend::~CudaBackend() {
  if (graph_exec_) cudaGraphExecDestroy(graph_exec_);
  if (stream_) cudaStreamSynchronize(stream_);
  // Device memory (mem_) and pinned buffers are freed after this, with the members.
  if (copy_stream_) cudaStreamSynchronize(copy_stream_);
  if (argmax_done_) cudaEventDestroy(argmax_done_);
  if (drawn_ready_) cudaEventDestroy(drawn_ready_);
  if (copy_stream_) cudaStreamDestroy(copy_stream_);
  if (blas_) cublasDestroy(blas_);
  if (stream_) cudaStreamDestroy(stream_);
}

size_t CudaBackend::free_memory_bytes() {
  size_t free = 0, total = 0;
  if (cudaMemGetInfo(&free, &total) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  if (mem_.limit() > 0) free = std::min(free, mem_.limit() > mem_.used() ? mem_.limit() - mem_.used() : size_t(0));
  return free;
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
  GPTOSS_ASSIGN(d_inv_freq_, upload_floats(rope_.inv_freq.data(), rope_.inv_freq.size(), "rope inv_freq"));
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
  GPTOSS_TRY(h_argmax_.reserve(1));
  GPTOSS_CUDA_TRY(cudaEventCreateWithFlags(&argmax_done_, cudaEventDisableTiming));
  GPTOSS_CUDA_TRY(cudaEventCreateWithFlags(&drawn_ready_, cudaEventDisableTiming));
  GPTOSS_CUDA_TRY(cudaStreamCreateWithFlags(&copy_stream_, cudaStreamNonBlocking));
  return {};
}

Result<void*> CudaBackend::dev_alloc(size_t bytes, const char* what) {
  if (recording_) return Error("cuda: allocation of {} during graph capture", what);
  return mem_.alloc(bytes, what);
}

Result<void*> DeviceMemory::alloc(size_t bytes, const char* what) {
  bytes = std::max<size_t>(bytes, 16);
  if (limit_ && used_ + bytes > limit_)
    return Error("cuda: {} needs {:.2f} GiB more, but {:.2f} GiB of the --gpu-memory-limit {:.2f} GiB are used", what,
                 double(bytes) / kGiB, double(used_) / kGiB, double(limit_) / kGiB);
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

void DeviceMemory::free(const void* p, size_t bytes) {
  const auto it = std::find(allocs_.begin(), allocs_.end(), p);
  if (it == allocs_.end()) return;
  cudaFree(*it);
  allocs_.erase(it);
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
  mem_.free(scratch, rows * 5);
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
  if (free_source) mem_.free(m.data, rows * cols * 2);
  packed_[lo] = Packed{lo + rows * cols, static_cast<const uint32_t*>(d_meta), static_cast<const float2*>(esc)};
  pack_stats_.matrices += 1;
  pack_stats_.weights += rows * cols;
  pack_stats_.escapes += size_t(total);
  pack_stats_.bytes += rows * cols * 3 / 2 + meta.size() * 4 + size_t(total) * sizeof(float2);
  MatrixRef d = m;
  d.data = lo;
  return d;
}

// Page-cache bytes to the device through two pinned staging buffers; the host copies of a chunk
// run on several threads while the previous chunk's DMA is in flight.
Status CudaBackend::copy_to_device(void* dst, const void* src, size_t bytes) {
  constexpr size_t kChunk = size_t(64) << 20;
  GPTOSS_TRY(h_staging_.reserve(2 * kChunk));
  cudaEvent_t done[2];
  GPTOSS_CUDA_TRY(cudaEventCreateWithFlags(&done[0], cudaEventDisableTiming));
  GPTOSS_CUDA_TRY(cudaEventCreateWithFlags(&done[1], cudaEventDisableTiming));
  const unsigned nthreads = std::clamp(std::thread::hardware_concurrency(), 1u, 8u);
  Status st;
  for (size_t off = 0, i = 0; off < bytes; off += kChunk, ++i) {
    const size_t n = std::min(kChunk, bytes - off);
    uint8_t* stage = h_staging_.get() + (i % 2) * kChunk;
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

Result<ExpertStack> CudaBackend::upload_experts(const ExpertStack& s, const char* what) {
  const MatrixRef& m = s.first;
  const int experts = s.count;
  if (!m.data) return Error("cuda upload: {} has no data", what);
  if (m.type == WeightType::MXFP4 && m.cols % 32 != 0)
    return Error("cuda upload: {} is MXFP4 with {} columns, expected a multiple of 32", what, m.cols);
  if (m.type != WeightType::MXFP4 && !m.transposed && m.cols % 8 != 0)
    return Error("cuda upload: {} has {} columns, expected a multiple of 8", what, m.cols);
  const size_t db = matrix_data_bytes(m), sb = matrix_scale_bytes(m);
  MatrixRef d = m;
  GPTOSS_ASSIGN(void* data, dev_alloc(db * size_t(experts), what));
  for (int e = 0; e < experts; ++e) {
    if (e > 0 && s.stride == db) {  // contiguous: one copy for all experts
      GPTOSS_TRY(copy_to_device(static_cast<uint8_t*>(data) + db, s.expert(1).data, db * size_t(experts - 1)));
      break;
    }
    GPTOSS_TRY(copy_to_device(static_cast<uint8_t*>(data) + db * size_t(e), s.expert(e).data, db));
  }
  d.data = data;
  if (sb) {
    GPTOSS_ASSIGN(void* sc, dev_alloc(sb * size_t(experts), what));
    for (int e = 0; e < experts; ++e)
      GPTOSS_TRY(copy_to_device(static_cast<uint8_t*>(sc) + sb * size_t(e), s.expert(e).scales, sb));
    d.scales = static_cast<const uint8_t*>(sc);
  }
  return ExpertStack{d, db, sb, experts};
}

Result<MatrixRef> CudaBackend::upload_matrix(const MatrixRef& m, const char* what) {
  GPTOSS_ASSIGN(ExpertStack d, upload_experts({m, matrix_data_bytes(m), matrix_scale_bytes(m), 1}, what));
  return d.first;
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
    if (L.gate_up.count != E || L.down.count != E)
      return Error("cuda: a layer holds {} gate_up and {} down experts, expected {}", L.gate_up.count, L.down.count, E);
    add_m(L.gate_up.first, E);
    add_m(L.down.first, E);
    if (L.gate_up.first.type == WeightType::MXFP4) need += size_t(E) * size_t(L.gate_up.first.rows);  // row_max()
    need += sizeof(float) * size_t(4 * H + c.q_dim() + 2 * c.kv_dim() + c.num_attention_heads + E + E * 2 * c.intermediate_size + E * H);
  }
  size_t free_b = 0, total_b = 0;
  GPTOSS_CUDA_TRY(cudaMemGetInfo(&free_b, &total_b));
  const size_t limit = mem_.limit();
  const size_t avail = limit ? std::min(free_b, limit - std::min(mem_.used(), limit)) : free_b;
  if (need > avail)
    return Error("cuda: the model needs {:.2f} GiB of GPU memory for its weights, but only {:.2f} GiB are available on "
                 "{} ({:.2f} GiB free of {:.2f} GiB{})",
                 double(need) / kGiB, double(avail) / kGiB, device_name_, double(free_b) / kGiB, double(total_b) / kGiB,
                 opts_.gpu_memory_limit ? fmt::format(", limit {:.2f} GiB", double(opts_.gpu_memory_limit) / kGiB) : "");

  // Steps of more than kDecodeMaxT rows multiply the projections and the head with cuBLAS on plain bf16: the
  // packed matrices keep their bf16 source for that when the copies leave most of the memory free (the 20b
  // shape on an 80 GB card: 2.4 GB more), else such steps decode the packed matrix to scratch first.
  size_t plain = 0;
  if (opts_.gpu_pack_bf16) {
    auto add_p = [&](const MatrixRef& m) { plain += packable(m) ? size_t(m.rows) * size_t(m.cols) * 2 : 0; };
    add_p(host.lm_head);
    for (const LayerWeights& L : host.layers)
      for (const MatrixRef* m : {&L.q, &L.k, &L.v, &L.o}) add_p(*m);
  }
  const bool keep_plain = plain > 0 && double(need + plain) <= 0.6 * double(avail);

  ModelWeights d;
  GPTOSS_ASSIGN(d.embed, upload_matrix(host.embed, "embed"));
  GPTOSS_ASSIGN(d.lm_head, upload_matrix(host.lm_head, "lm_head"));
  // The decode products read these once per token: packed (lossless, 12 bits per weight and the escapes).
  auto pack = [&](MatrixRef& m, const char* what) -> Status {
    if (!opts_.gpu_pack_bf16 || !packable(m)) return {};
    const void* source = m.data;
    GPTOSS_ASSIGN(m, pack_bf16(m, what, /*free_source=*/!keep_plain));
    if (keep_plain && m.data != source) plain_bf16_[m.data] = static_cast<const __nv_bfloat16*>(source);
    return {};
  };
  GPTOSS_TRY(pack(d.lm_head, "lm_head"));
  GPTOSS_ASSIGN(d.final_norm, upload_floats(host.final_norm, size_t(H), "final_norm"));
  const size_t I = size_t(c.intermediate_size);
  for (const LayerWeights& L : host.layers) {
    LayerWeights o = L;
    GPTOSS_ASSIGN(o.q, upload_matrix(L.q, "q_proj"));
    GPTOSS_ASSIGN(o.k, upload_matrix(L.k, "k_proj"));
    GPTOSS_ASSIGN(o.v, upload_matrix(L.v, "v_proj"));
    GPTOSS_ASSIGN(o.o, upload_matrix(L.o, "o_proj"));
    GPTOSS_TRY(pack(o.q, "q_proj"));
    GPTOSS_TRY(pack(o.k, "k_proj"));
    GPTOSS_TRY(pack(o.v, "v_proj"));
    GPTOSS_TRY(pack(o.o, "o_proj"));
    GPTOSS_ASSIGN(o.router, upload_matrix(L.router, "router"));
    GPTOSS_ASSIGN(o.gate_up, upload_experts(L.gate_up, "gate_up_proj"));
    GPTOSS_ASSIGN(o.down, upload_experts(L.down, "down_proj"));
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
    if (o.gate_up.first.type == WeightType::MXFP4 && !o.gate_up.first.transposed) (void)row_max(o.gate_up);
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
    const int cap = kv_capacity(c, o, l);
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

}  // namespace gptoss::cuda_impl
