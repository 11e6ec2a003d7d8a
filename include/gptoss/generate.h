// gptoss generation layer: one decode loop over a Session for every front end (generate, chat, serve).
//
//   gptoss::Sequence seq(*session);                      // a Session and the tokens it holds
//   gptoss::GenerateOptions go{.sampler = {.temperature = 0}, .max_tokens = 64, .stop_tokens = {eos}};
//   auto r = gptoss::generate(seq, prompt, go, [](int32_t tok) { print(tok); return true; });
//
// Stepwise, for a scheduler that interleaves several sequences (gptoss serve):
//   Generation g(seq, go);  g.start(prompt);  while (!g.finished()) g.next(device_chain);
// Batched, for a scheduler that runs several sequences in one step (gptoss serve, bench --concurrency):
//   g.begin(prompt);  each step: batch.add(session, g.step_input(budget)); batch.run(); batch.draw(...);
//   g.step_done(rows, drawn); while (g.ready()) emit(g.next());
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "gptoss/gptoss.h"
#include "gptoss/status.h"

namespace gptoss {

// A Session and the token ids it holds, in order, so that a new prompt reuses the longest cached prefix.
class Sequence {
 public:
  explicit Sequence(Session& session) : session_(&session) {}
  Session& session() { return *session_; }
  const std::vector<int32_t>& tokens() const { return tokens_; }
  // Tokens of `prompt` that feed() would take from the cache (at most prompt.size() - 1: the last token
  // is always run again for its logits).
  size_t reusable_prefix(std::span<const int32_t> prompt) const;
  // Brings the session to exactly `prompt`, running only what is not cached; returns the last token's
  // logits. When the session cannot go back far enough (Session::truncate), it starts over. On error
  // the sequence is empty.
  Result<std::span<const float>> feed(std::span<const int32_t> prompt);
  // The first half of feed() for a caller that runs the tokens itself (in a Batch): brings the session back to
  // the longest cached prefix of `prompt` and returns how many of its tokens are cached (the rest must run).
  size_t prepare(std::span<const int32_t> prompt);
  // `tokens` ran through the session (a Batch step): they are now part of the sequence.
  void ran(std::span<const int32_t> tokens) { tokens_.insert(tokens_.end(), tokens.begin(), tokens.end()); }
  // One decode step: appends `token` and returns the next token drawn by `sampler`. device_chain lets
  // Session::forward_sample start the following step on the device before the host has the id; it is
  // only for a sequence that runs alone (another session's steps in between would discard it).
  Result<int32_t> step(int32_t token, Sampler& sampler, bool device_chain);
  int last_fed() const { return last_fed_; }  // tokens the last feed() ran (the rest came from the cache)
  void reset();

 private:
  Session* session_;
  std::vector<int32_t> tokens_;
  int last_fed_ = 0;
};

enum class FinishReason { None, StopToken, Length, ContextFull, Cancelled, StopString };
const char* finish_reason_name(FinishReason r);

struct GenerateOptions {
  SamplerOptions sampler;
  int max_tokens = 0;                // 0: until the context is full
  std::vector<int32_t> stop_tokens;  // the generation ends with one of these (it is emitted as the last token)
  // A caller's sampler to draw with instead of one made from `sampler`: its random state carries on from
  // one generation to the next (a chat's turns). Not owned; must outlive the generation.
  Sampler* sampler_state = nullptr;
};

// One generation in progress over a Sequence: start() feeds the prompt and draws the first token; each
// next() returns one token, running the model only for the tokens after the first.
class Generation {
 public:
  Generation(Sequence& seq, const GenerateOptions& opts)
      : seq_(seq), opts_(opts), own_(opts.sampler), sampler_(opts.sampler_state ? *opts.sampler_state : own_) {}
  Status start(std::span<const int32_t> prompt);
  Result<int32_t> next(bool device_chain = true);

  // Batched stepping. begin() is start() without running the model: the prompt's uncached tokens are run by
  // the caller's steps, in chunks. step_input(budget) is what this generation runs next (at most `budget`
  // tokens of its prompt, or its last token; empty when it has a token ready or is finished); after the
  // step, step_done(n, drawn) records that the first n of them ran and `drawn` came from the last one's
  // logits (ignored while prompt tokens remain). ready(): next() returns a token without running the model.
  Status begin(std::span<const int32_t> prompt);
  std::span<const int32_t> step_input(int budget) const;
  void step_done(size_t n, int32_t drawn);
  bool ready() const { return !finished() && pending_ready_; }
  bool prefilling() const { return fed_ < prompt_.size(); }
  Sampler& sampler() { return sampler_; }
  // Ends the generation from outside (cancel, a stop string found by the caller).
  void finish(FinishReason why) {
    if (why_ == FinishReason::None) why_ = why;
  }
  bool finished() const { return why_ != FinishReason::None; }
  FinishReason finish_reason() const { return why_; }
  int prompt_tokens() const { return prompt_tokens_; }
  int reused_tokens() const { return reused_; }
  int generated() const { return generated_; }
  double prefill_seconds() const { return prefill_s_; }
  double decode_seconds() const;  // from the first token to the last
  Sequence& sequence() { return seq_; }

 private:
  Sequence& seq_;
  GenerateOptions opts_;
  Sampler own_;
  Sampler& sampler_;
  std::vector<int32_t> prompt_;  // begin(): the prompt; fed_ of its tokens are in the sequence
  size_t fed_ = 0;
  int32_t pending_ = -1;       // the drawn token not yet returned
  bool pending_ready_ = false;  // pending_ drawn (else the last token must run first)
  int32_t last_ = -1;
  FinishReason why_ = FinishReason::None;
  int prompt_tokens_ = 0, reused_ = 0, generated_ = 0;
  double prefill_s_ = 0;
  double t_first_ = 0, t_last_ = 0;  // seconds since start() began
  double t0_ = 0;
};

struct GenerateResult {
  std::vector<int32_t> tokens;  // every token emitted, the stop token included
  FinishReason finish = FinishReason::None;
  int prompt_tokens = 0, reused_tokens = 0;
  double prefill_seconds = 0, decode_seconds = 0;
};

// Returns false to stop the generation (FinishReason::Cancelled).
using OnToken = std::function<bool(int32_t token)>;
// The decode loop: start, then next() until a stop token, max_tokens, the end of the context, on_token
// returning false, or *cancel becoming true (checked before every token).
Result<GenerateResult> generate(Sequence& seq, std::span<const int32_t> prompt, const GenerateOptions& opts,
                                const OnToken& on_token, const std::atomic<bool>* cancel = nullptr);

// Stop strings over streamed text: push() returns the text that can be shown, holding back a tail that
// may be the start of a stop string; once one is found, everything from it on is dropped (matched()).
class StopStrings {
 public:
  explicit StopStrings(std::vector<std::string> stops = {}) : stops_(std::move(stops)) {}
  std::string push(std::string_view text);
  std::string flush();  // end of the stream: the held-back tail (nothing after a match)
  bool matched() const { return matched_; }
  bool empty() const { return stops_.empty(); }

 private:
  std::vector<std::string> stops_;
  std::string held_;
  bool matched_ = false;
};

}  // namespace gptoss
