// The gpt-oss forward pass, written once against the Backend ops, plus Model and Session bookkeeping.
// Read forward_step top to bottom next to docs/MODEL.md §4 (the § numbers below are that file's).
#include <algorithm>
#include <chrono>

#include "model/model.h"
#include "model/op_knockout.h"

namespace gptoss {

Model::~Model() = default;
const ModelConfig& Model::config() const { return checkpoint_->config(); }
const Checkpoint& Model::checkpoint() const { return *checkpoint_; }
Backend& Model::backend() { return knockout_ ? *knockout_ : *backend_; }
const ModelWeights& Model::weights() const { return *weights_; }
Session::~Session() { cancel_chained(); }

// A started next step is discarded: wait for it (its writes land in buffers this session is about to reuse or
// free). Its only trace is slot pos_ of the sliding-window rings (clobbered_, see truncate).
void Session::cancel_chained() {
  if (!chained_) return;
  chained_ = false;
  clobbered_ = true;
  float sink = 0.0f;
  (void)model_->backend().to_host(buf_->logits, 1, &sink);  // waits for the stream; errors resurface on the next call
}

Result<std::unique_ptr<Model>> Model::open(const std::string& dir, const BackendOptions& bo,
                                           const CheckpointOptions& co) {
  // Loading allocates what the config asks for: a failure (std::bad_alloc, std::length_error) is an
  // error of this call, never an exception out of the library.
  try {
    const auto t0 = std::chrono::steady_clock::now();
    std::unique_ptr<Model> m(new Model());
    GPTOSS_ASSIGN(Checkpoint ck, Checkpoint::open(dir, co));
    m->checkpoint_ = std::make_unique<Checkpoint>(std::move(ck));
    GPTOSS_ASSIGN(m->host_, build_host_weights(*m->checkpoint_));
    GPTOSS_ASSIGN(m->backend_, create_backend(m->config(), bo));
    GPTOSS_ASSIGN(ModelWeights w, m->backend_->upload(m->host_->w, m->config()));
    m->weights_ = std::make_unique<ModelWeights>(std::move(w));
    m->load_seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return m;
  } catch (const std::exception& e) {
    return Error("{}: cannot load the model: {}", dir, e.what());
  }
}

Status Model::set_op_knockout(uint32_t mask) {
  knockout_.reset();
  if (mask) knockout_ = make_op_knockout(*backend_, *weights_, mask);
  return {};
}

Result<StepBuffers> StepBuffers::create(Backend& be, const ModelConfig& c, int rows, int out_rows) {
  StepBuffers b;
  b.rows = rows;
  b.out_rows = out_rows;
  const size_t B = size_t(rows);
  GPTOSS_ASSIGN(b.x, be.alloc(B * size_t(c.hidden_size)));
  GPTOSS_ASSIGN(b.h, be.alloc(B * size_t(c.hidden_size)));
  GPTOSS_ASSIGN(b.g, be.alloc(size_t(out_rows) * size_t(c.hidden_size)));
  GPTOSS_ASSIGN(b.q, be.alloc(B * size_t(c.q_dim())));
  GPTOSS_ASSIGN(b.k, be.alloc(B * size_t(c.kv_dim())));
  GPTOSS_ASSIGN(b.v, be.alloc(B * size_t(c.kv_dim())));
  GPTOSS_ASSIGN(b.attn, be.alloc(B * size_t(c.q_dim())));
  GPTOSS_ASSIGN(b.logits, be.alloc(size_t(out_rows) * size_t(c.vocab_size)));
  return b;
}

Status forward_step(Backend& be, const ModelConfig& c, const ModelWeights& w, const StepBuffers& b, const Step& st) {
  if (be.replay_step()) return {};
  be.record_step_begin();
  const int T = st.rows(), H = c.hidden_size, R = int(st.out_rows.size());
  be.embed(w.embed, b.x);  // §4.1
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const LayerWeights& L = w.layers[size_t(l)];
    // §4.3 attention block: x += o_proj(attn(rope(q), rope(k), v)) with sinks, window on sliding layers
    if (!be.norm_qkv(L, b.x, T, c.rms_norm_eps, b.q, b.k, b.v)) {  // fused where it can be
      be.rmsnorm(b.x, L.attn_norm, T, H, c.rms_norm_eps, b.h);
      be.matmul(L.q, b.h, T, L.q_bias, b.q);
      be.matmul(L.k, b.h, T, L.k_bias, b.k);
      be.matmul(L.v, b.h, T, L.v_bias, b.v);
    }
    be.attention(l, b.q, b.k, b.v, L.sinks, L.sliding ? c.sliding_window : 0, b.attn);
    if (!be.matmul_add(L.o, b.attn, T, L.o_bias, b.x)) {  // fused where it can be
      be.matmul(L.o, b.attn, T, L.o_bias, b.h);
      be.add(b.x, b.h, size_t(T) * size_t(H));
    }
    // §4.5 MoE block: x += sum_k w_k * expert_k(rmsnorm(x))
    if (!be.norm_moe(L, b.x, T, c.rms_norm_eps, b.h)) {
      be.rmsnorm(b.x, L.mlp_norm, T, H, c.rms_norm_eps, b.h);
      be.moe(L, b.h, T, b.x);
    }
  }
  // §4.6 output: only the rows whose logits are wanted
  const int first = st.out_run_first();
  const float* xr = b.x + size_t(std::max(first, 0)) * size_t(H);
  if (first < 0) {
    be.gather_rows(b.x, H, b.g);
    xr = b.g;
  }
  be.rmsnorm(xr, w.final_norm, R, H, c.rms_norm_eps, b.h);
  be.matmul(w.lm_head, b.h, R, nullptr, b.logits);
  return be.record_step_end();
}

namespace {

Status check_tokens(const ModelConfig& c, std::span<const int32_t> tokens) {
  if (tokens.empty()) return Error("forward: no tokens");
  for (size_t i = 0; i < tokens.size(); ++i)
    if (tokens[i] < 0 || tokens[i] >= c.vocab_size)
      return Error("token {} at index {} is out of range [0, {})", tokens[i], i, c.vocab_size);
  return {};
}

}  // namespace

uint64_t Model::decode_bytes_per_token() const { return gptoss::decode_bytes_per_token(config(), *weights_); }

Result<std::unique_ptr<Session>> Session::create(Model& model, const SessionOptions& o) {
  try {
    const ModelConfig& c = model.config();
    if (o.max_context <= 0 || o.max_context > c.max_position_embeddings)
      return Error("max_context {} is outside 1..{} (max_position_embeddings)", o.max_context,
                   c.max_position_embeddings);
    if (o.max_batch <= 0) return Error("max_batch must be positive, got {}", o.max_batch);
    std::unique_ptr<Session> s(new Session());
    s->model_ = &model;
    s->opts_ = o;
    s->opts_.max_batch = std::min(o.max_batch, o.max_context);
    Backend& be = model.backend();
    KvCacheOptions ko{o.max_context, s->opts_.max_batch, o.kv_precision};
    GPTOSS_ASSIGN(s->kv_, be.create_kv_cache(c, ko));
    // One row of logits: steps that want all rows' logits (forward with all_logits) grow it on first use, so
    // that a server's many sessions do not each hold [max_batch, vocab] floats they never fill.
    GPTOSS_ASSIGN(StepBuffers buf, StepBuffers::create(be, c, s->opts_.max_batch, 1));
    s->buf_ = std::make_unique<StepBuffers>(buf);
    s->last_logits_.resize(size_t(c.vocab_size));
    return s;
  } catch (const std::exception& e) {  // the KV cache and buffers are sized by the config and options
    return Error("cannot create a session (max_context {}, max_batch {}): {}", o.max_context, o.max_batch, e.what());
  }
}

size_t Session::kv_bytes() const { return kv_->bytes(); }

Status Session::truncate(int pos) {
  cancel_chained();
  if (pos < 0 || pos > pos_) return Error("truncate: position {} is outside 0..{}", pos, pos_);
  const int keep = opts_.max_batch - (clobbered_ ? 1 : 0);
  if (pos_ - pos > keep && pos > 0)
    return Error("truncate: cannot go back {} tokens (sliding-window cache keeps {} extra)", pos_ - pos, keep);
  pos_ = pos;
  return {};
}

Result<std::span<const float>> Session::forward(std::span<const int32_t> tokens, std::vector<float>* all_logits) {
  GPTOSS_TRY(run(tokens, all_logits, true));
  return std::span<const float>(last_logits_);
}

Result<int32_t> Session::forward_greedy(std::span<const int32_t> tokens) {
  Backend& be = model_->backend();
  const int V = model_->config().vocab_size;
  if (chained_ && tokens.size() == 1 && tokens[0] == chained_token_) {
    chained_ = false;  // this token's step is already in the stream (started by the previous call)
    clobbered_ = false;
    ++pos_;
  } else {
    GPTOSS_TRY(run(tokens, nullptr, false));
  }
  // The last step ran with all_rows false: its only logits row is buf_->logits[0, V).
  const bool chain = pos_ < opts_.max_context;
  if (be.argmax_async(buf_->logits, V, chain ? pos_ : -1)) {
    // Greedy decoding feeds this argmax back: its step is started before the host has the id, so the device
    // does not idle between steps while the caller turns around (bench/cuda_notes.md, round 9).
    if (chain) {
      const int32_t unused = 0;
      GPTOSS_TRY(step(std::span<const int32_t>(&unused, 1), false, nullptr, false, /*chained=*/true));
      chained_ = true;
    }
    GPTOSS_ASSIGN(int32_t id, be.argmax_wait());
    chained_token_ = id;
    return id;
  }
  GPTOSS_ASSIGN(int32_t id, be.argmax(buf_->logits, V));
  if (id >= 0) return id;
  GPTOSS_TRY(be.to_host(buf_->logits, size_t(V), last_logits_.data()));
  return int32_t(std::max_element(last_logits_.begin(), last_logits_.end()) - last_logits_.begin());
}

Result<int32_t> Session::forward_sample(std::span<const int32_t> tokens, Sampler& sampler) {
  if (sampler.greedy()) return forward_greedy(tokens);
  if (!sampler.untruncated()) {
    GPTOSS_ASSIGN(auto logits, forward(tokens));
    return sampler.sample(logits);
  }
  GPTOSS_TRY(run(tokens, nullptr, false));
  const int V = model_->config().vocab_size;
  const double u = sampler.uniform();
  GPTOSS_ASSIGN(int32_t id, model_->backend().sample(buf_->logits, V, sampler.temperature(), u));
  if (id >= 0) return id;
  GPTOSS_TRY(model_->backend().to_host(buf_->logits, size_t(V), last_logits_.data()));
  return sampler.sample_at(last_logits_, u);
}

Status Session::run(std::span<const int32_t> tokens, std::vector<float>* all_logits, bool copy_last) {
  cancel_chained();
  const ModelConfig& c = model_->config();
  GPTOSS_TRY(check_tokens(c, tokens));
  if (size_t(pos_) + tokens.size() > size_t(opts_.max_context))
    return Error("context full: {} tokens in the session + {} new > max context {}", pos_, tokens.size(),
                 opts_.max_context);
  if (all_logits) all_logits->resize(tokens.size() * size_t(c.vocab_size));
  for (size_t i = 0; i < tokens.size(); i += size_t(opts_.max_batch)) {
    const size_t n = std::min(tokens.size() - i, size_t(opts_.max_batch));
    float* dst = all_logits ? all_logits->data() + i * size_t(c.vocab_size) : nullptr;
    // Only the last chunk's last row is wanted in last_logits_.
    GPTOSS_TRY(step(tokens.subspan(i, n), all_logits != nullptr, dst, copy_last && !all_logits && i + n == tokens.size()));
  }
  if (all_logits) {
    std::copy_n(all_logits->end() - c.vocab_size, c.vocab_size, last_logits_.begin());
  }
  return {};
}

// One forward step over T <= max_batch tokens at positions pos_ .. pos_+T-1.
Status Session::step(std::span<const int32_t> tokens, bool all_rows, float* logits_host, bool copy_last,
                     bool chained) {
  const ModelConfig& c = model_->config();
  Backend& be = model_->backend();
  const int T = int(tokens.size());
  const StepSeq seq{kv_.get(), 0, T, pos_};
  if (all_rows && buf_->out_rows < opts_.max_batch) {
    GPTOSS_ASSIGN(buf_->logits, be.alloc(size_t(opts_.max_batch) * size_t(c.vocab_size)));
    buf_->out_rows = opts_.max_batch;
  }
  out_rows_.clear();
  for (int r = all_rows ? 0 : T - 1; r < T; ++r) out_rows_.push_back(r);
  const Step st{tokens, std::span<const StepSeq>(&seq, 1), out_rows_, buf_->key()};
  GPTOSS_TRY(chained ? be.begin_step_chained(st) : be.begin_step(st));
  GPTOSS_TRY(forward_step(be, c, model_->weights(), *buf_, st));
  const size_t V = size_t(c.vocab_size), rows = out_rows_.size();
  if (logits_host) GPTOSS_TRY(be.to_host(buf_->logits, rows * V, logits_host));
  if (copy_last) GPTOSS_TRY(be.to_host(buf_->logits + (rows - 1) * V, V, last_logits_.data()));
  if (!chained) pos_ += T;
  clobbered_ = clobbered_ && chained;  // a real step rewrote slot pos_ of the rings
  return {};
}

// ---- Batch -----------------------------------------------------------------------------------------

Batch::~Batch() = default;

Result<std::unique_ptr<Batch>> Batch::create(Model& model, const Options& o) {
  if (o.max_rows <= 0 || o.max_seqs <= 0 || o.max_seqs > o.max_rows || o.max_out_rows < 0 ||
      o.max_out_rows > o.max_rows)
    return Error("batch: max_rows {}, max_seqs {} and max_out_rows {} must be positive with max_seqs <= max_rows "
                 "and max_out_rows <= max_rows",
                 o.max_rows, o.max_seqs, o.max_out_rows);
  try {
    std::unique_ptr<Batch> b(new Batch());
    b->model_ = &model;
    b->opts_ = o;
    if (b->opts_.max_out_rows == 0) b->opts_.max_out_rows = o.max_seqs;
    GPTOSS_ASSIGN(StepBuffers buf,
                  StepBuffers::create(model.backend(), model.config(), o.max_rows, b->opts_.max_out_rows));
    b->buf_ = std::make_unique<StepBuffers>(buf);
    return b;
  } catch (const std::exception& e) {
    return Error("cannot create a batch of {} rows: {}", o.max_rows, e.what());
  }
}

void Batch::clear() {
  tokens_.clear();
  seqs_.clear();
  sessions_.clear();
  out_rows_.clear();
  first_out_.clear();
}

Status Batch::add(Session& s, std::span<const int32_t> tokens, bool all_rows) {
  GPTOSS_TRY(check_tokens(model_->config(), tokens));
  if (s.model_ != model_) return Error("batch: the session belongs to another model");
  if (std::find(sessions_.begin(), sessions_.end(), &s) != sessions_.end())
    return Error("batch: the session is already in this step");
  if (size() >= opts_.max_seqs) return Error("batch: {} sessions per step at most", opts_.max_seqs);
  if (tokens.size() > size_t(rows_left()))
    return Error("batch: {} tokens do not fit ({} rows left of {})", tokens.size(), rows_left(), opts_.max_rows);
  if (tokens.size() > size_t(s.opts_.max_batch))
    return Error("batch: {} tokens exceed the session's max_batch {} (its sliding-window ring)", tokens.size(),
                 s.opts_.max_batch);
  if (size_t(s.pos_) + tokens.size() > size_t(s.opts_.max_context))
    return Error("context full: {} tokens in the session + {} new > max context {}", s.pos_, tokens.size(),
                 s.opts_.max_context);
  const size_t outs = all_rows ? tokens.size() : 1;
  if (out_rows_.size() + outs > size_t(opts_.max_out_rows))
    return Error("batch: {} more rows of logits do not fit ({} of {} taken)", outs, out_rows_.size(),
                 opts_.max_out_rows);
  s.cancel_chained();
  const int row0 = rows();
  seqs_.push_back(StepSeq{s.kv_.get(), row0, int(tokens.size()), s.pos_});
  tokens_.insert(tokens_.end(), tokens.begin(), tokens.end());
  first_out_.push_back(int(out_rows_.size()));
  for (int r = all_rows ? row0 : rows() - 1; r < rows(); ++r) out_rows_.push_back(r);
  sessions_.push_back(&s);
  return {};
}

Status Batch::run() {
  if (empty()) return Error("batch: nothing to run");
  Backend& be = model_->backend();
  const Step st{tokens_, seqs_, out_rows_, buf_->key()};
  Status r = be.begin_step(st);
  if (r.ok()) r = forward_step(be, model_->config(), model_->weights(), *buf_, st);
  // A failed step leaves the sessions where they were (their caches may hold partial rows past pos_).
  if (r.ok())
    for (size_t i = 0; i < sessions_.size(); ++i) {
      sessions_[i]->pos_ += seqs_[i].n;
      sessions_[i]->clobbered_ = false;
    }
  ran_ = r.ok() ? size() : 0;
  ran_first_out_ = first_out_;
  ran_first_out_.push_back(int(out_rows_.size()));
  clear();
  return r;
}

Result<std::span<const float>> Batch::logits(int i) {
  if (i < 0 || i >= ran_) return Error("batch: no entry {} in the last run ({} entries)", i, ran_);
  const size_t V = size_t(model_->config().vocab_size);
  host_logits_.resize(V);
  const size_t last = size_t(ran_first_out_[size_t(i) + 1] - 1);
  GPTOSS_TRY(model_->backend().to_host(buf_->logits + last * V, V, host_logits_.data()));
  return std::span<const float>(host_logits_);
}

Result<std::span<const float>> Batch::all_logits(int i) {
  if (i < 0 || i >= ran_) return Error("batch: no entry {} in the last run ({} entries)", i, ran_);
  const size_t V = size_t(model_->config().vocab_size);
  const size_t first = size_t(ran_first_out_[size_t(i)]), n = size_t(ran_first_out_[size_t(i) + 1]) - first;
  host_logits_.resize(n * V);
  GPTOSS_TRY(model_->backend().to_host(buf_->logits + first * V, n * V, host_logits_.data()));
  return std::span<const float>(host_logits_);
}

Status Batch::draw(std::span<Sampler* const> samplers, std::vector<int32_t>& out) {
  if (int(samplers.size()) != ran_)
    return Error("batch: {} samplers for {} entries of the last run", samplers.size(), ran_);
  const int V = model_->config().vocab_size;
  out.assign(samplers.size(), -1);
  // Greedy and untruncated draws on the device in one call; truncated ones (top-k / top-p) on the host.
  temps_.assign(samplers.size(), 0.0f);
  us_.assign(samplers.size(), 0.0);
  bool host_only = false;
  for (size_t i = 0; i < samplers.size(); ++i) {
    Sampler* sm = samplers[i];
    if (!sm || sm->greedy()) continue;
    if (sm->untruncated()) {
      temps_[i] = sm->temperature();
      us_[i] = sm->uniform();
    } else {
      host_only = true;
    }
  }
  // The device draw reads rows 0..ran_-1 of the logits: one row per entry (no all_rows entry).
  host_only = host_only || ran_first_out_.back() != ran_;
  GPTOSS_ASSIGN(bool done, host_only ? Result<bool>(false)
                                     : model_->backend().draw_rows(buf_->logits, ran_, V, temps_, us_, out.data()));
  if (done) return {};
  for (size_t i = 0; i < samplers.size(); ++i) {
    GPTOSS_ASSIGN(auto lg, logits(int(i)));
    Sampler* sm = samplers[i];
    if (!sm || sm->greedy())
      out[i] = int32_t(std::max_element(lg.begin(), lg.end()) - lg.begin());
    else if (sm->untruncated())
      out[i] = sm->sample_at(lg, us_[i]);
    else
      out[i] = sm->sample(lg);
  }
  return {};
}

}  // namespace gptoss
