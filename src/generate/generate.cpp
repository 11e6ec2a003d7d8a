// The decode loop shared by generate, chat and serve (include/gptoss/generate.h).
#include "gptoss/generate.h"

#include <algorithm>
#include <chrono>

#include "core/status.h"

namespace gptoss {

namespace {
double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
}  // namespace

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::None: return "none";
    case FinishReason::StopToken: return "stop";
    case FinishReason::Length: return "length";
    case FinishReason::ContextFull: return "context_full";
    case FinishReason::Cancelled: return "cancelled";
    case FinishReason::StopString: return "stop_string";
  }
  return "none";
}

// ---- Sequence ------------------------------------------------------------------------------------

size_t Sequence::reusable_prefix(std::span<const int32_t> prompt) const {
  size_t common = 0;
  while (common < tokens_.size() && common < prompt.size() && tokens_[common] == prompt[common]) ++common;
  if (common == prompt.size() && common > 0) --common;  // the last token runs again for its logits
  return common;
}

void Sequence::reset() {
  session_->reset();
  tokens_.clear();
}

size_t Sequence::prepare(std::span<const int32_t> prompt) {
  size_t common = reusable_prefix(prompt);
  if (common < size_t(session_->position()) && !session_->truncate(int(common)).ok()) {
    session_->reset();
    common = 0;
  }
  if (common == 0) session_->reset();
  tokens_.resize(common);
  return common;
}

Result<std::span<const float>> Sequence::feed(std::span<const int32_t> prompt) {
  if (prompt.empty()) return Error("the prompt has no tokens");
  auto rest = prompt.subspan(prepare(prompt));
  last_fed_ = int(rest.size());
  auto logits = session_->forward(rest);
  if (!logits.ok()) {
    reset();
    return logits.status();
  }
  ran(rest);
  return logits;
}

Result<int32_t> Sequence::step(int32_t token, Sampler& sampler, bool device_chain) {
  const std::span<const int32_t> one(&token, 1);
  Result<int32_t> next = [&]() -> Result<int32_t> {
    if (device_chain) return session_->forward_sample(one, sampler);
    GPTOSS_ASSIGN(auto logits, session_->forward(one));
    return sampler.sample(logits);
  }();
  if (!next.ok()) {
    reset();
    return next.status();
  }
  tokens_.push_back(token);
  return next;
}

// ---- Generation ----------------------------------------------------------------------------------

Status Generation::start(std::span<const int32_t> prompt) {
  t0_ = now_s();
  prompt_tokens_ = int(prompt.size());
  auto logits = seq_.feed(prompt);
  if (!logits.ok()) return logits.status();
  reused_ = prompt_tokens_ - seq_.last_fed();
  pending_ = sampler_.sample(*logits);
  pending_ready_ = true;
  prefill_s_ = now_s() - t0_;
  return {};
}

Result<int32_t> Generation::next(bool device_chain) {
  if (finished()) return Error("generation: next() after the end ({})", finish_reason_name(why_));
  if (!pending_ready_) {
    if (last_ < 0) return Error("generation: next() before start()");
    auto nx = seq_.step(last_, sampler_, device_chain);
    if (!nx.ok()) {
      why_ = FinishReason::Cancelled;
      return nx.status();
    }
    pending_ = *nx;
  }
  pending_ready_ = false;
  last_ = pending_;
  ++generated_;
  t_last_ = now_s() - t0_;
  if (generated_ == 1) t_first_ = t_last_;
  Session& s = seq_.session();
  if (std::find(opts_.stop_tokens.begin(), opts_.stop_tokens.end(), last_) != opts_.stop_tokens.end())
    why_ = FinishReason::StopToken;
  else if (opts_.max_tokens > 0 && generated_ >= opts_.max_tokens)
    why_ = FinishReason::Length;
  else if (s.position() >= s.options().max_context)  // no room to run this token
    why_ = FinishReason::ContextFull;
  return last_;
}

Status Generation::begin(std::span<const int32_t> prompt) {
  if (prompt.empty()) return Error("the prompt has no tokens");
  t0_ = now_s();
  prompt_tokens_ = int(prompt.size());
  prompt_.assign(prompt.begin(), prompt.end());
  fed_ = seq_.prepare(prompt);
  reused_ = int(fed_);
  return {};
}

std::span<const int32_t> Generation::step_input(int budget) const {
  if (finished() || pending_ready_ || budget <= 0) return {};
  if (prefilling()) return std::span<const int32_t>(prompt_).subspan(fed_, std::min(prompt_.size() - fed_, size_t(budget)));
  if (last_ < 0) return {};
  return std::span<const int32_t>(&last_, 1);
}

void Generation::step_done(size_t n, int32_t drawn) {
  if (prefilling()) {
    seq_.ran(std::span<const int32_t>(prompt_).subspan(fed_, n));
    fed_ += n;
    if (prefilling()) return;
    prefill_s_ = now_s() - t0_;
  } else {
    seq_.ran(std::span<const int32_t>(&last_, 1));
  }
  pending_ = drawn;
  pending_ready_ = true;
}

double Generation::decode_seconds() const { return generated_ > 1 ? t_last_ - t_first_ : 0.0; }

Result<GenerateResult> generate(Sequence& seq, std::span<const int32_t> prompt, const GenerateOptions& opts,
                                const OnToken& on_token, const std::atomic<bool>* cancel) {
  Generation g(seq, opts);
  GPTOSS_TRY(g.start(prompt));
  GenerateResult r;
  while (!g.finished()) {
    if (cancel && cancel->load()) {
      g.finish(FinishReason::Cancelled);
      break;
    }
    GPTOSS_ASSIGN(int32_t tok, g.next());
    r.tokens.push_back(tok);
    if (on_token && !on_token(tok)) g.finish(FinishReason::Cancelled);
  }
  r.finish = g.finish_reason();
  r.prompt_tokens = g.prompt_tokens();
  r.reused_tokens = g.reused_tokens();
  r.prefill_seconds = g.prefill_seconds();
  r.decode_seconds = g.decode_seconds();
  return r;
}

// ---- StopStrings ---------------------------------------------------------------------------------

std::string StopStrings::push(std::string_view text) {
  if (matched_) return {};
  if (stops_.empty()) return std::string(text);
  held_.append(text);
  size_t hit = std::string::npos;
  for (const auto& s : stops_) hit = std::min(hit, held_.find(s));
  if (hit != std::string::npos) {
    matched_ = true;
    std::string out = held_.substr(0, hit);
    held_.clear();
    return out;
  }
  // Hold back the longest tail that is a proper prefix of some stop string.
  size_t keep = 0;
  for (const auto& s : stops_)
    for (size_t n = std::min(s.size() - 1, held_.size()); n > keep; --n)
      if (held_.compare(held_.size() - n, n, s, 0, n) == 0) {
        keep = n;
        break;
      }
  std::string out = held_.substr(0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  return out;
}

std::string StopStrings::flush() {
  std::string out = matched_ ? std::string() : held_;
  held_.clear();
  return out;
}

}  // namespace gptoss
