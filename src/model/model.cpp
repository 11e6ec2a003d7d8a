// The gpt-oss forward pass, written once against the Backend ops, plus Model and Session bookkeeping.
// Read Session::step top to bottom next to docs/MODEL.md §4 (the § numbers below are that file's).
#include <algorithm>
#include <chrono>

#include "gptoss/gptoss.h"

namespace gptoss {

Model::~Model() = default;
Session::~Session() { cancel_chained(); }

// A started next step is discarded: wait for it (its writes land in buffers this session is about to reuse or
// free). Its only trace is slot pos_ of the sliding-window rings (clobbered_, see truncate).
void Session::cancel_chained() {
  if (!chained_) return;
  chained_ = false;
  clobbered_ = true;
  float sink = 0.0f;
  (void)model_->backend().to_host(logits_, 1, &sink);  // waits for the stream; errors resurface on the next call
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
    GPTOSS_ASSIGN(m->weights_, m->backend_->upload(m->host_->w, m->config()));
    m->load_seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return m;
  } catch (const std::exception& e) {
    return Error("{}: cannot load the model: {}", dir, e.what());
  }
}

uint64_t Model::decode_bytes_per_token() const { return gptoss::decode_bytes_per_token(config(), weights_); }

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
    const size_t B = size_t(s->opts_.max_batch);
    GPTOSS_ASSIGN(s->x_, be.alloc(B * size_t(c.hidden_size)));
    GPTOSS_ASSIGN(s->h_, be.alloc(B * size_t(c.hidden_size)));
    GPTOSS_ASSIGN(s->q_, be.alloc(B * size_t(c.q_dim())));
    GPTOSS_ASSIGN(s->k_, be.alloc(B * size_t(c.kv_dim())));
    GPTOSS_ASSIGN(s->v_, be.alloc(B * size_t(c.kv_dim())));
    GPTOSS_ASSIGN(s->attn_, be.alloc(B * size_t(c.q_dim())));
    GPTOSS_ASSIGN(s->logits_, be.alloc(B * size_t(c.vocab_size)));
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
  // The last step ran with all_rows false: its only logits row is logits_[0, V).
  const bool chain = pos_ < opts_.max_context;
  if (be.argmax_async(logits_, V, chain ? pos_ : -1)) {
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
  GPTOSS_ASSIGN(int32_t id, be.argmax(logits_, V));
  if (id >= 0) return id;
  GPTOSS_TRY(be.to_host(logits_, size_t(V), last_logits_.data()));
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
  GPTOSS_ASSIGN(int32_t id, model_->backend().sample(logits_, V, sampler.temperature(), u));
  if (id >= 0) return id;
  GPTOSS_TRY(model_->backend().to_host(logits_, size_t(V), last_logits_.data()));
  return sampler.sample_at(last_logits_, u);
}

Status Session::run(std::span<const int32_t> tokens, std::vector<float>* all_logits, bool copy_last) {
  cancel_chained();
  const ModelConfig& c = model_->config();
  if (tokens.empty()) return Error("forward: no tokens");
  for (size_t i = 0; i < tokens.size(); ++i)
    if (tokens[i] < 0 || tokens[i] >= c.vocab_size)
      return Error("token {} at index {} is out of range [0, {})", tokens[i], i, c.vocab_size);
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
  const ModelWeights& w = model_->weights();
  Backend& be = model_->backend();
  const int T = int(tokens.size()), H = c.hidden_size;
  GPTOSS_TRY(chained ? be.begin_step_chained(pos_) : be.begin_step(tokens, pos_));
  const int first = all_rows ? 0 : T - 1, rows = T - first;
  const float* xr = x_ + size_t(first) * size_t(H);
  // Backends that record steps (CUDA graphs) replay the ops of an identical earlier step instead of
  // receiving them again; the key names this session's buffers and the step's shape.
  const uint32_t skip = T == 1 ? skip_ops_ : 0u;  // profiling only (set_skip_ops)
  const uint64_t key = uint64_t(reinterpret_cast<uintptr_t>(x_)) * 1000003u + uint64_t(T) * 2u + (all_rows ? 1u : 0u) +
                       (uint64_t(skip) << 40);
  if (!be.replay_step(key)) {
    be.record_step_begin(key);
    be.embed(w.embed, x_);  // §4.1
    for (int l = 0; l < c.num_hidden_layers; ++l) {
      const LayerWeights& L = w.layers[size_t(l)];
      // §4.3 attention block: x += o_proj(attn(rope(q), rope(k), v)) with sinks, window on sliding layers
      if (!(skip & kSkipQkv) && !be.norm_qkv(L, x_, T, c.rms_norm_eps, q_, k_, v_)) {  // fused where it can be
        be.rmsnorm(x_, L.attn_norm, T, H, c.rms_norm_eps, h_);
        be.matmul(L.q, h_, T, L.q_bias, q_);
        be.matmul(L.k, h_, T, L.k_bias, k_);
        be.matmul(L.v, h_, T, L.v_bias, v_);
      }
      if (!(skip & kSkipAttention)) be.attention(*kv_, l, q_, k_, v_, L.sinks, L.sliding ? c.sliding_window : 0, attn_);
      if (!(skip & kSkipOProj) && !be.matmul_add(L.o, attn_, T, L.o_bias, x_)) {  // fused where it can be
        be.matmul(L.o, attn_, T, L.o_bias, h_);
        be.add(x_, h_, size_t(T) * size_t(H));
      }
      // §4.5 MoE block: x += sum_k w_k * expert_k(rmsnorm(x))
      if (!(skip & kSkipMoe) && !be.norm_moe(L, x_, T, c.rms_norm_eps, h_)) {
        be.rmsnorm(x_, L.mlp_norm, T, H, c.rms_norm_eps, h_);
        be.moe(L, h_, T, x_);
      }
    }
    // §4.6 output: only the rows whose logits are wanted
    if (!(skip & kSkipLmHead)) {
      be.rmsnorm(xr, w.final_norm, rows, H, c.rms_norm_eps, h_);
      be.matmul(w.lm_head, h_, rows, nullptr, logits_);
    }
    GPTOSS_TRY(be.record_step_end());
  }
  const size_t V = size_t(c.vocab_size);
  if (logits_host) GPTOSS_TRY(be.to_host(logits_, size_t(rows) * V, logits_host));
  if (copy_last) GPTOSS_TRY(be.to_host(logits_ + size_t(rows - 1) * V, V, last_logits_.data()));
  if (!chained) pos_ += T;
  clobbered_ = clobbered_ && chained;  // a real step rewrote slot pos_ of the rings
  return {};
}

}  // namespace gptoss
