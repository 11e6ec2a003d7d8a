// The small set of ops a backend implements. The model definition (forward_step in model/model.cpp)
// is written once on top of these; the CPU backend (backend/cpu) and the CUDA backend (backend/cuda)
// implement them.
// All float* / MatrixRef pointers passed to ops live in the backend's memory (host for CPU, device
// for CUDA); they come from Backend::alloc and Backend::upload. Activations are float32, row-major
// [T, n] for T tokens.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "core/status.h"
#include "format/config.h"
#include "gptoss/options.h"
#include "model/weights.h"

namespace gptoss {

struct KvCacheOptions {
  int max_context = 4096;             // positions the session may reach (<= max_position_embeddings)
  int max_batch = kDefaultMaxBatch;   // most tokens one forward step may carry (prefill chunk)
  KvPrecision precision = KvPrecision::F32;
};

// Positions layer `layer`'s cache holds: max_context for full-attention layers; for sliding layers a ring of
// (sliding_window - 1 + max_batch), enough for a whole chunk of queries to see their window of predecessors.
// Slot of position p: p % capacity. The one rule both backends size their caches by.
inline int kv_capacity(const ModelConfig& c, const KvCacheOptions& o, int layer) {
  return c.layer_is_sliding[size_t(layer)] ? std::min(o.max_context, c.sliding_window - 1 + o.max_batch)
                                           : o.max_context;
}

// Per-session key/value storage; backends subclass it (layouts by kv_capacity).
class KvCache {
 public:
  virtual ~KvCache() = default;
  virtual size_t bytes() const = 0;
};

// One sequence's part of a forward step: rows [row0, row0 + n) of the step are its tokens at positions
// pos0 .. pos0 + n - 1, attending to `kv` (its own cache, from create_kv_cache).
struct StepSeq {
  KvCache* kv = nullptr;
  int row0 = 0, n = 0, pos0 = 0;
};

// A forward step over T rows: one sequence's chunk, or the rows of many sequences (decode tokens of some,
// prefill chunks of others), each sequence's rows consecutive and in order. Activations of the step are
// [T, n] in `seqs` order. The output head runs over `out_rows` only (ascending): the rows whose logits
// are wanted.
struct Step {
  std::span<const int32_t> tokens;    // [T] ids, already validated
  std::span<const StepSeq> seqs;      // cover rows 0 .. T-1 in order
  std::span<const int32_t> out_rows;  // [R], ascending
  // Identifies what the ops of a step receive besides tokens and positions (its activation buffers, a
  // profiling variant): a backend that records steps replays one only for an equal key and equal shape.
  uint64_t buffers_key = 0;

  int rows() const { return int(tokens.size()); }
  // The out rows as one run [first, first + R), or -1 when they are not consecutive.
  int out_run_first() const {
    for (size_t i = 1; i < out_rows.size(); ++i)
      if (out_rows[i] != out_rows[0] + int(i)) return -1;
    return out_rows.empty() ? -1 : out_rows[0];
  }
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;

  // Makes host weights usable by this backend; the result's pointers are in backend memory and stay
  // valid for the backend's lifetime (CPU: the same pointers; CUDA: device copies).
  virtual Result<ModelWeights> upload(const ModelWeights& host, const ModelConfig& c) = 0;
  // Float buffer in backend memory, freed with the backend.
  virtual Result<float*> alloc(size_t count) = 0;
  virtual Result<std::unique_ptr<KvCache>> create_kv_cache(const ModelConfig& c, const KvCacheOptions& o) = 0;

  // Starts a forward step (see Step). Steps of one sequence alone and steps over many are the same op.
  virtual Status begin_step(const Step& step) = 0;

  // x[T, H] = table[tokens]  (the tokens of begin_step)
  virtual void embed(const MatrixRef& table, float* x) = 0;
  // y[t] = w * x[t] / sqrt(mean(x[t]^2) + eps), t < T, rows of n
  virtual void rmsnorm(const float* x, const float* w, int T, int n, double eps, float* y) = 0;
  // y[T, W.rows] = x[T, W.cols] W^T + bias
  virtual void matmul(const MatrixRef& W, const float* x, int T, const float* bias, float* y) = 0;
  // Attention of one layer for the step's T rows: applies YaRN RoPE to q [T, nh, d] and k [T, nkv, d] at the
  // rows' positions, appends k and v [T, nkv, d] to each row's sequence cache (Step::seqs), and writes
  // out[T, nh*d] = softmax-with-sink(q K^T / sqrt(d)) V over the keys that row sees in its own sequence
  // (window: 0 = all). q and k are scratch: a backend may rotate them in place (the CPU backend does) or leave them.
  virtual void attention(int layer, float* q, float* k, const float* v, const float* sinks, int window,
                         float* out) = 0;
  // y[i] = x[step.out_rows[i]], rows of n floats: the rows the output head runs over, when they are not one run.
  virtual void gather_rows(const float* x, int n, float* y) = 0;
  // x[T, H] += MoE(h[T, H]): router, top-k, softmax over the selected, clamped SwiGLU experts.
  virtual void moe(const LayerWeights& w, const float* h, int T, float* x) = 0;
  // x[i] += y[i]
  virtual void add(float* x, const float* y, size_t n) = 0;
  // Optional fused residual product: y[T, W.rows] += x W^T + bias. Returns false, having done
  // nothing, where the backend has no fused op for this shape (the caller then runs matmul + add).
  virtual bool matmul_add(const MatrixRef& /*W*/, const float* /*x*/, int /*T*/, const float* /*bias*/,
                          float* /*y*/) {
    return false;
  }
  // Optional fusions of the input RMSNorm with its consumers (decode steps). Each returns false, having
  // done nothing, where the backend has none for this step; the caller then runs rmsnorm + the ops.
  // q[T, q_dim], k, v[T, kv_dim] = rmsnorm(x; L.attn_norm) W^T + b for L.q, L.k, L.v.
  virtual bool norm_qkv(const LayerWeights& /*L*/, const float* /*x*/, int /*T*/, double /*eps*/, float* /*q*/,
                        float* /*k*/, float* /*v*/) {
    return false;
  }
  // x[T, H] += MoE(rmsnorm(x; L.mlp_norm)); h [T, H] is scratch (receives the normalised x).
  virtual bool norm_moe(const LayerWeights& /*L*/, float* /*x*/, int /*T*/, double /*eps*/, float* /*h*/) {
    return false;
  }
  // Optional: index of the largest of x[0, n) (first index on ties), computed where x lives so that
  // greedy decoding copies 4 bytes instead of n floats. Returns -1 where the backend has no such op.
  virtual Result<int32_t> argmax(const float* /*x*/, int /*n*/) { return -1; }
  // Optional chained greedy decoding (Session::forward_greedy): argmax_async enqueues the argmax of x[0, n) and
  // its copy to the host, returning false (nothing done) where the backend has no such op; argmax_wait
  // returns that id once it has arrived, while later work in the stream may still run; begin_step_chained
  // begins a one-token step (as begin_step, one sequence, one row at seqs[0].pos0) whose token is that argmax, read
  // on the device; the argmax must have been enqueued with chain_pos == that position (it writes the step's input
  // itself; -1: no step follows).
  virtual bool argmax_async(const float* /*x*/, int /*n*/, int /*chain_pos*/) { return false; }
  virtual Result<int32_t> argmax_wait() { return Error("argmax_wait: no argmax_async on this backend"); }
  virtual Status begin_step_chained(const Step& /*step*/) { return Error("begin_step_chained: not on this backend"); }
  // Optional: a draw from softmax(x[0, n) / temperature) by the inverse CDF in id order at u in [0, 1)
  // (Sampler::sample_at), computed where x lives. Returns -1 where the backend has no such op.
  virtual Result<int32_t> sample(const float* /*x*/, int /*n*/, float /*temperature*/, double /*u*/) { return -1; }
  // Optional: one draw per row of x [R, n], written to out[R] on the host: row i's argmax (first on ties) where
  // temperature[i] <= 0, else sample(row, temperature[i], u[i]). Returns false, having done nothing, where the
  // backend has no such op (the caller then copies the rows and draws on the host).
  virtual Result<bool> draw_rows(const float* /*x*/, int /*R*/, int /*n*/, std::span<const float> /*temperature*/,
                                 std::span<const double> /*u*/, int32_t* /*out*/) {
    return false;
  }
  // Copies n floats from backend memory to host memory (synchronising as needed).
  virtual Status to_host(const float* src, size_t n, float* dst) = 0;

  // Optional step recording (CUDA graphs), called after begin_step: if replay_step() returns true the backend
  // has re-issued the ops it recorded for a step of the same shape and Step::buffers_key with this step's tokens
  // and positions, and the caller skips them; otherwise the caller issues them between record_step_begin()
  // and record_step_end().
  virtual bool replay_step() { return false; }
  virtual void record_step_begin() {}
  virtual Status record_step_end() { return {}; }

  // Measured memory read bandwidth of this device in GB/s (the roofline's denominator), or 0.
  virtual double measure_bandwidth_gbs() { return 0.0; }
  // Bytes this backend may still allocate (device memory within --gpu-memory-limit), or 0 where it allocates host
  // memory as it goes (the CPU backend): sizing left to the caller's options.
  virtual size_t free_memory_bytes() { return 0; }
};

// Begins a step of one sequence: rows 0..T-1 at positions pos0.., attending to `kv` (null where the step's ops
// need no cache), its last row's logits wanted. For tests and benchmarks of single ops; the model builds its
// steps itself.
inline Status begin_one_sequence_step(Backend& be, std::span<const int32_t> tokens, int pos0, KvCache* kv = nullptr) {
  const StepSeq seq{kv, 0, int(tokens.size()), pos0};
  const int32_t last = int32_t(tokens.size()) - 1;
  return be.begin_step(Step{tokens, std::span<const StepSeq>(&seq, 1), std::span<const int32_t>(&last, 1), 0});
}

// Whether a CUDA device is usable by this build (false without the CUDA backend, its module or a GPU). Loads
// the CUDA module where the NVIDIA driver is installed. Defined with the factory in backend/factory.cpp.
bool cuda_usable();
// Backend factory: the backend BackendOptions (include/gptoss/options.h) name, "cpu" or "cuda".
Result<std::unique_ptr<Backend>> create_backend(const ModelConfig& c, const BackendOptions& o);

}  // namespace gptoss
