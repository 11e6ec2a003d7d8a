#include "cli/chat_runner.h"

#include <chrono>
#include <ctime>

namespace gptoss::cli {

using Clock = std::chrono::steady_clock;

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
  std::unique_ptr<ChatRunner> r(new ChatRunner(model, session, std::move(enc), settings));
  r->start_conversation();
  return r;
}

void ChatRunner::start_conversation() {
  conv_.messages.clear();
  harmony::Message sys;
  sys.role = harmony::Role::system;
  harmony::Content c;
  c.kind = harmony::Content::Kind::system;
  c.system = harmony::SystemContent::defaults();
  c.system.reasoning_effort = settings_.effort;
  c.system.conversation_start_date = settings_.date.empty() ? today_utc() : settings_.date;
  sys.content.push_back(std::move(c));
  conv_.messages.push_back(std::move(sys));
  if (!settings_.developer_instructions.empty()) {
    harmony::Message dev;
    dev.role = harmony::Role::developer;
    harmony::Content d;
    d.kind = harmony::Content::Kind::developer;
    d.developer.instructions = settings_.developer_instructions;
    dev.content.push_back(std::move(d));
    conv_.messages.push_back(std::move(dev));
  }
}

void ChatRunner::reset() {
  start_conversation();
  session_.reset();
  fed_.clear();
}

Result<std::span<const float>> ChatRunner::feed(const std::vector<int32_t>& prompt) {
  size_t common = 0;
  while (common < fed_.size() && common < prompt.size() && fed_[common] == prompt[common]) ++common;
  if (common == prompt.size() && common > 0) --common;  // re-feed the last token to get its logits
  if (common < fed_.size() && !session_.truncate(int(common)).ok()) {
    session_.reset();
    common = 0;
  }
  fed_.resize(common);
  std::vector<int32_t> rest(prompt.begin() + long(common), prompt.end());
  last_fed_ = int(rest.size());
  GPTOSS_ASSIGN(auto logits, session_.forward(rest));
  fed_.insert(fed_.end(), rest.begin(), rest.end());
  return logits;
}

Result<TurnResult> ChatRunner::ask(const std::string& user_text, const OnText& on_text, const std::atomic<bool>* stop) {
  TurnResult res;
  conv_.messages.push_back(harmony::Message::from_text(harmony::Role::user, user_text));
  auto rendered = enc_.render_for_completion(conv_);
  if (!rendered.ok()) {
    conv_.messages.pop_back();
    return rendered.status();
  }
  std::vector<int32_t> prompt(rendered->begin(), rendered->end());
  auto t0 = Clock::now();
  auto logits = feed(prompt);
  if (!logits.ok()) {
    conv_.messages.pop_back();
    return logits.status().with_context("the conversation no longer fits; /reset to start over");
  }
  res.prompt_tokens = last_fed_;
  res.prefill_seconds = std::chrono::duration<double>(Clock::now() - t0).count();

  harmony::StreamableParser parser(enc_, harmony::Role::assistant);
  const auto stops = enc_.stop_tokens_for_assistant_actions();
  t0 = Clock::now();
  int32_t tok = sampler_.sample(*logits);
  for (;;) {
    if (stop && stop->load()) {
      res.interrupted = true;
      break;
    }
    if (res.generated >= settings_.max_tokens) {
      res.hit_limit = true;
      break;
    }
    ++res.generated;
    const bool is_stop = std::find(stops.begin(), stops.end(), TokenId(tok)) != stops.end();
    if (res.parse_error.empty()) {
      Status ps = parser.process(TokenId(tok));
      if (!ps.ok()) res.parse_error = ps.message();
      else if (!parser.last_content_delta().empty() && on_text)
        on_text(parser.current_channel().value_or(""), parser.last_content_delta());
    }
    if (is_stop) break;
    if (session_.position() >= session_.options().max_context) {
      res.hit_limit = true;
      break;
    }
    // Forward of this token and the next draw (on the GPU where it can run there).
    auto next = session_.forward_sample(std::span<const int32_t>(&tok, 1), sampler_);
    if (!next.ok()) return next.status();
    fed_.push_back(tok);
    tok = *next;
  }
  res.decode_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
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
