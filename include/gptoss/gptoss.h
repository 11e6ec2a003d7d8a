// gptoss public API: open a gpt-oss model (a converted directory or a Hugging Face / original/
// checkpoint directly), run forward passes in a session that holds the KV cache, and sample.
//
//   auto model = gptoss::Model::open("models/gpt-oss-20b", {.device = "cpu"});   // Result<unique_ptr<Model>>
//   auto session = gptoss::Session::create(**model, {.max_context = 8192});
//   auto logits = (*session)->forward(prompt_ids);                                 // last token's [vocab]
//   gptoss::Sampler sampler({.temperature = 0.7f, .top_p = 0.9f, .seed = 1});
//   int32_t next = sampler.sample(*logits);
//
// Every call that can fail returns a Status or Result with a message; nothing aborts on bad input.
#pragma once

#include <cstdint>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "core/status.h"
#include "format/checkpoint.h"
#include "model/backend.h"

namespace gptoss {

class Model {
 public:
  // Opens `dir` (any layout Checkpoint::open reads) and places the weights on the backend. Weights
  // are used where they lie (mmap on the CPU); nothing is dequantized up front.
  static Result<std::unique_ptr<Model>> open(const std::string& dir, const BackendOptions& backend = {},
                                             const CheckpointOptions& ck = {});
  ~Model();

  const ModelConfig& config() const { return checkpoint_->config(); }
  const Checkpoint& checkpoint() const { return *checkpoint_; }
  Backend& backend() { return *backend_; }
  const ModelWeights& weights() const { return weights_; }
  // Weight bytes one batch-1 decode step reads (roofline numerator).
  uint64_t decode_bytes_per_token() const;
  double load_seconds() const { return load_seconds_; }

 private:
  Model() = default;
  std::unique_ptr<Checkpoint> checkpoint_;
  std::unique_ptr<HostWeights> host_;
  std::unique_ptr<Backend> backend_;
  ModelWeights weights_;
  double load_seconds_ = 0;
};

// Ops of a forward step, for profiling (Session::set_skip_ops).
enum SkipOp : uint32_t {
  kSkipQkv = 1,        // RMSNorm + q/k/v products
  kSkipAttention = 2,  // RoPE, KV append, attention
  kSkipOProj = 4,      // o_proj + residual
  kSkipMoe = 8,        // RMSNorm + router + experts + residual
  kSkipLmHead = 16,    // final RMSNorm + lm_head
};

struct SessionOptions {
  int max_context = 4096;  // positions this session may reach; KV memory scales with it
  int max_batch = kDefaultMaxBatch;  // tokens per forward step; longer inputs are processed in chunks
  KvPrecision kv_precision = KvPrecision::F32;
};

class Sampler;

class Session {
 public:
  static Result<std::unique_ptr<Session>> create(Model& model, const SessionOptions& opts = {});
  ~Session();

  // Appends `tokens` to the context and runs them through the model. Returns the logits of the last
  // token ([vocab], valid until the next call). With all_logits, also fills it with [tokens, vocab].
  Result<std::span<const float>> forward(std::span<const int32_t> tokens, std::vector<float>* all_logits = nullptr);
  // Greedy decoding: like forward(tokens) but returns the argmax of the last token's logits (first id on
  // ties, as Sampler with temperature 0). Backends with a device argmax copy 4 bytes instead of the
  // logits; the span of an earlier forward() is then not refreshed. On such backends the step after it is
  // started at once with that argmax as its token, so the device does not idle while the caller turns
  // around; the next forward_greedy of exactly that token only waits for it (any other call discards it).
  Result<int32_t> forward_greedy(std::span<const int32_t> tokens);
  // Like forward(tokens) then sampler.sample(logits), with the draw on the device where the backend can
  // (greedy, or no top-k / top-p cut): the logits then stay where they are. Same caveat as forward_greedy.
  Result<int32_t> forward_sample(std::span<const int32_t> tokens, Sampler& sampler);

  int position() const { return pos_; }
  const SessionOptions& options() const { return opts_; }
  void reset() {
    cancel_chained();
    pos_ = 0;
    clobbered_ = false;
  }
  // Forgets the tokens after `pos` (e.g. to re-render the end of a chat). Sliding-window layers keep
  // only a ring of recent keys, so going back more than max_batch tokens fails (max_batch - 1 after a
  // forward_greedy whose started next step was discarded: it wrote the ring's oldest slot): then reset()
  // and feed the context again.
  Status truncate(int pos);
  size_t kv_bytes() const;
  // Profiling only (`gptoss bench --op-costs`): one-token steps leave out the ops in `mask` (SkipOp bits),
  // so that the time a step saves is what those ops cost inside it. The outputs are then meaningless.
  void set_skip_ops(uint32_t mask) { skip_ops_ = mask; }

 private:
  Session() = default;
  Status run(std::span<const int32_t> tokens, std::vector<float>* all_logits, bool copy_last);
  // chained: a one-token step at pos_ whose token is the backend's last argmax_async (pos_ unchanged).
  Status step(std::span<const int32_t> tokens, bool all_rows, float* logits_host, bool copy_last,
              bool chained = false);
  void cancel_chained();
  Model* model_ = nullptr;
  SessionOptions opts_;
  std::unique_ptr<KvCache> kv_;
  int pos_ = 0;
  uint32_t skip_ops_ = 0;
  // forward_greedy's started next step: at position pos_, for token chained_token_ (not yet in pos_).
  bool chained_ = false;
  int32_t chained_token_ = -1;
  bool clobbered_ = false;  // a discarded chained step wrote slot pos_ of the sliding-window rings
  // Activations in backend memory, [max_batch, n] each.
  float *x_ = nullptr, *h_ = nullptr, *q_ = nullptr, *k_ = nullptr, *v_ = nullptr, *attn_ = nullptr;
  float* logits_ = nullptr;  // [max_batch, vocab]
  std::vector<float> last_logits_;
};

struct SamplerOptions {
  float temperature = 1.0f;  // 0: greedy (argmax)
  int top_k = 0;             // 0: off
  float top_p = 1.0f;        // 1: off
  uint64_t seed = 0;
};

class Sampler {
 public:
  explicit Sampler(const SamplerOptions& o = {}) : opts_(o), rng_(o.seed) {}
  // Picks a token id from logits [vocab]. Deterministic for a given seed and logits.
  int32_t sample(std::span<const float> logits);
  // Without top-k / top-p cuts (and temperature > 0) a draw is the inverse CDF, in id order, of
  // softmax(logits / temperature) at one uniform u in [0, 1): that draw can run where the logits live
  // (Session::forward_sample). sample_at is the same draw on the host, at a given u.
  bool greedy() const { return opts_.temperature <= 0.0f; }
  bool untruncated() const { return !greedy() && opts_.top_k <= 0 && opts_.top_p >= 1.0f; }
  float temperature() const { return opts_.temperature; }
  double uniform() { return std::uniform_real_distribution<double>(0.0, 1.0)(rng_); }
  int32_t sample_at(std::span<const float> logits, double u);

 private:
  SamplerOptions opts_;
  std::mt19937_64 rng_;
  struct Candidate {
    float logit, w;  // w = exp((logit - max) / temperature)
    int32_t id;
  };
  std::vector<Candidate> cand_;
  std::vector<float> w_;
};

}  // namespace gptoss
