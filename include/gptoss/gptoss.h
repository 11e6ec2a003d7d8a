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

#include "gptoss/options.h"
#include "gptoss/status.h"

namespace gptoss {

// The library's internal types (src/): the API holds them only by pointer or reference.
class Backend;
class Checkpoint;
class KvCache;
struct HostWeights;
struct ModelConfig;
struct ModelWeights;
struct StepBuffers;
struct StepSeq;

class Model {
 public:
  // Opens `dir` (any layout Checkpoint::open reads) and places the weights on the backend. Weights
  // are used where they lie (mmap on the CPU); nothing is dequantized up front.
  static Result<std::unique_ptr<Model>> open(const std::string& dir, const BackendOptions& backend = {},
                                             const CheckpointOptions& ck = {});
  ~Model();

  // Weight bytes one batch-1 decode step reads (roofline numerator).
  uint64_t decode_bytes_per_token() const;
  double load_seconds() const { return load_seconds_; }
  // The model's internals, for the library's own tools (the CLI, tests, benchmarks): their types are
  // internal, so a caller includes src/model/model.h to use them.
  const ModelConfig& config() const;
  const Checkpoint& checkpoint() const;
  Backend& backend();
  const ModelWeights& weights() const;
  // Profiling only (`gptoss bench --op-costs`): one-token steps leave out the op groups in `mask` (op_group
  // bits, model/op_knockout.h), so that the time a step saves is what those ops cost inside it. The outputs
  // are then meaningless. 0 restores the model.
  Status set_op_knockout(uint32_t mask);

 private:
  Model() = default;
  std::unique_ptr<Checkpoint> checkpoint_;
  std::unique_ptr<HostWeights> host_;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<Backend> knockout_;  // wraps backend_ while a knockout mask is set
  std::unique_ptr<ModelWeights> weights_;  // in backend memory
  double load_seconds_ = 0;
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

 private:
  friend class Batch;
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
  // forward_greedy's started next step: at position pos_, for token chained_token_ (not yet in pos_).
  bool chained_ = false;
  int32_t chained_token_ = -1;
  bool clobbered_ = false;  // a discarded chained step wrote slot pos_ of the sliding-window rings
  std::unique_ptr<StepBuffers> buf_;  // [max_batch, ...] each; logits [1, vocab] until all rows are wanted
  std::vector<int32_t> out_rows_;  // the step's rows whose logits are wanted
  std::vector<float> last_logits_;
};

// One forward step over several sessions at once (continuous batching): each session contributes its next
// tokens (a decode token, or a chunk of its prompt) as consecutive rows; the weights are read once for all
// rows, and each session attends to its own cache. Each session's results equal those of running it alone.
//
//   auto batch = gptoss::Batch::create(*model, {.max_rows = 256, .max_seqs = 64});
//   batch->add(*s1, {tok1});  batch->add(*s2, prompt_chunk);
//   auto ids = batch->run_draw(samplers);   // one token per added session
class Batch {
 public:
  struct Options {
    int max_rows = kDefaultMaxBatch;  // tokens one step carries, all sessions together
    int max_seqs = 64;                // sessions one step carries
    int max_out_rows = 0;             // rows whose logits one step computes (0: max_seqs; more for add's all_rows)
  };
  static Result<std::unique_ptr<Batch>> create(Model& model, const Options& opts);
  ~Batch();

  // Adds `tokens` (at the session's next positions) to the step being built; the logits of its last token are
  // computed (of every token with all_rows). A session appears at most once per step. Fails (nothing added)
  // when a limit would be passed.
  Status add(Session& session, std::span<const int32_t> tokens, bool all_rows = false);
  int rows() const { return int(tokens_.size()); }
  int size() const { return int(sessions_.size()); }
  bool empty() const { return sessions_.empty(); }
  int rows_left() const { return opts_.max_rows - rows(); }
  int max_seqs() const { return opts_.max_seqs; }
  int max_rows() const { return opts_.max_rows; }
  void clear();
  // Runs the step built by add(); every session advances by its tokens. The batch is then empty again
  // and the logits of entry i (in add order) are available until the next run.
  Status run();
  // Entry i's last-token logits, copied to the host ([vocab], valid until the next call).
  Result<std::span<const float>> logits(int i);
  // Entry i's logits of every token it added with all_rows, copied to the host ([n, vocab]).
  Result<std::span<const float>> all_logits(int i);
  // One draw per entry of the last run with samplers[i] (nullptr: greedy), on the device where the backend
  // can (greedy or untruncated sampling); truncated samplers draw on the host from copied logits.
  Status draw(std::span<Sampler* const> samplers, std::vector<int32_t>& out);

 private:
  Batch() = default;
  Model* model_ = nullptr;
  Options opts_;
  std::unique_ptr<StepBuffers> buf_;
  std::vector<int32_t> tokens_;
  std::vector<StepSeq> seqs_;
  std::vector<Session*> sessions_;
  std::vector<int32_t> out_rows_;
  std::vector<int> first_out_, ran_first_out_;  // per entry: its first row in out_rows_ (its last is the next's - 1)
  int ran_ = 0;  // entries of the last run
  std::vector<float> host_logits_, temps_;
  std::vector<double> us_;
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
