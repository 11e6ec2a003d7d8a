#include "cli/chat_runner.h"

#include <ctime>

#include "model/model.h"
namespace gptoss::cli {

std::string today_utc() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[16];
  std::strftime(buf, sizeof buf, "%Y-%m-%d", &tm);
  return buf;
}

Result<std::unique_ptr<ChatRunner>> ChatRunner::create(Model& model, Session& session, const Tokenizer& tokenizer,
                                                       const ChatSettings& settings) {
  const int vocab = model.config().vocab_size;
  if (tokenizer.token_count() > uint32_t(vocab))
    return Error("the tokenizer has {} ids but the model's vocabulary has only {} rows: they do not belong together",
                 tokenizer.token_count(), vocab);
  GPTOSS_ASSIGN(harmony::HarmonyEncoding enc, harmony::HarmonyEncoding::create(tokenizer));
  std::unique_ptr<ChatRunner> r(new ChatRunner(session, std::move(enc), settings));
  r->start_conversation();
  return r;
}

void ChatRunner::start_conversation() {
  conv_.messages.clear();
  harmony::Message sys;
  sys.role = harmony::Role::System;
  harmony::Content c;
  c.kind = harmony::Content::Kind::System;
  c.system = harmony::SystemContent::defaults();
  c.system.reasoning_effort = settings_.effort;
  c.system.conversation_start_date = settings_.date.empty() ? today_utc() : settings_.date;
  sys.content.push_back(std::move(c));
  conv_.messages.push_back(std::move(sys));
  if (!settings_.developer_instructions.empty()) {
    harmony::Message dev;
    dev.role = harmony::Role::Developer;
    harmony::Content d;
    d.kind = harmony::Content::Kind::Developer;
    d.developer.instructions = settings_.developer_instructions;
    dev.content.push_back(std::move(d));
    conv_.messages.push_back(std::move(dev));
  }
}

void ChatRunner::reset() {
  start_conversation();
  seq_.reset();
}

Result<TurnResult> ChatRunner::ask(const std::string& user_text, const OnText& on_text, const std::atomic<bool>* stop) {
  TurnResult res;
  conv_.messages.push_back(harmony::Message::from_text(harmony::Role::User, user_text));
  auto rendered = enc_.render_for_completion(conv_);
  if (!rendered.ok()) {
    conv_.messages.pop_back();
    return rendered.status();
  }
  const std::vector<int32_t> prompt(rendered->begin(), rendered->end());
  harmony::StreamableParser parser(enc_, harmony::Role::Assistant);
  GenerateOptions go;
  go.max_tokens = settings_.max_tokens;
  for (TokenId t : enc_.stop_tokens_for_assistant_actions()) go.stop_tokens.push_back(int32_t(t));
  go.sampler_state = &sampler_;
  auto on_token = [&](int32_t tok) {
    if (res.parse_error.empty()) {
      Status ps = parser.process(TokenId(tok));
      if (!ps.ok())
        res.parse_error = ps.message();
      else if (!parser.last_content_delta().empty() && on_text)
        on_text(parser.current_channel().value_or(""), parser.last_content_delta());
    }
    return true;
  };
  auto g = generate(seq_, prompt, go, on_token, stop);
  if (!g.ok()) {
    conv_.messages.pop_back();
    return g.status().with_context("the conversation no longer fits; /reset to start over");
  }
  res.prompt_tokens = g->prompt_tokens - g->reused_tokens;
  res.generated = int(g->tokens.size());
  res.prefill_seconds = g->prefill_seconds;
  res.decode_seconds = g->decode_seconds;
  res.interrupted = g->finish == FinishReason::Cancelled;
  res.hit_limit = g->finish == FinishReason::Length || g->finish == FinishReason::ContextFull;
  if (res.parse_error.empty()) {
    Status ps = parser.process_eos();
    if (!ps.ok()) res.parse_error = ps.message();
  }
  res.messages = parser.messages();
  // History keeps what parsed; a broken completion is dropped (the next turn re-renders without it).
  for (const auto& m : res.messages) conv_.messages.push_back(m);
  return res;
}

}  // namespace gptoss::cli
