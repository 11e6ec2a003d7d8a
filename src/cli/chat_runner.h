// A multi-turn Harmony chat over a Session: renders the conversation and runs it through the generation
// layer (gptoss/generate.h: the KV cache's common prefix reused, sampling until <|return|> or <|call|>),
// streaming the parsed message text as it comes. Shared by `gptoss chat` and `gptoss generate --prompt`.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "gptoss/generate.h"
#include "gptoss/gptoss.h"
#include "tokenizer/harmony.h"
#include "tokenizer/tokenizer.h"

namespace gptoss::cli {

struct ChatSettings {
  harmony::ReasoningEffort effort = harmony::ReasoningEffort::Medium;
  std::string developer_instructions;  // --system: rendered as the developer message's instructions
  std::string date;                    // "Current date:" line; empty = today (UTC)
  SamplerOptions sampler;
  int max_tokens = 2048;  // per answer
};

struct TurnResult {
  std::vector<harmony::Message> messages;  // what the assistant said, parsed
  int prompt_tokens = 0;                   // tokens fed before sampling (after prefix reuse)
  int generated = 0;
  double prefill_seconds = 0, decode_seconds = 0;
  bool interrupted = false;  // stopped by the caller's flag (Ctrl-C)
  bool hit_limit = false;    // max_tokens reached without a stop token
  std::string parse_error;   // the output broke the Harmony grammar (random weights do)
};

class ChatRunner {
 public:
  // Checks that the tokenizer fits the model (ids, Harmony tokens) before anything runs.
  static Result<std::unique_ptr<ChatRunner>> create(Model& model, Session& session, const Tokenizer& tokenizer,
                                                    const ChatSettings& settings);

  // on_text(channel, text): decoded content as it streams ("analysis", "final", "commentary", ...).
  using OnText = std::function<void(const std::string& channel, const std::string& text)>;
  Result<TurnResult> ask(const std::string& user_text, const OnText& on_text, const std::atomic<bool>* stop);
  void reset();
  const harmony::HarmonyEncoding& encoding() const { return enc_; }

 private:
  ChatRunner(Session& s, harmony::HarmonyEncoding enc, const ChatSettings& st)
      : seq_(s), enc_(std::move(enc)), settings_(st), sampler_(st.sampler) {}
  void start_conversation();

  Sequence seq_;  // the session and the tokens it holds (the next turn reuses their common prefix)
  harmony::HarmonyEncoding enc_;
  ChatSettings settings_;
  Sampler sampler_;  // one random stream over the whole chat
  harmony::Conversation conv_;
};

// Today's date as YYYY-MM-DD (UTC).
std::string today_utc();

}  // namespace gptoss::cli
