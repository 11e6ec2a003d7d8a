// CompletionMapper: completion tokens -> StreamEvents and a CompletionResult, over
// harmony::StreamableParser. The parser is strict (an error ends its usefulness); the mapper keeps a
// response going whatever the model writes:
//   - a header that does not parse at <|message|>: its channel and recipient are salvaged from the
//     text, a clean header is fed to a fresh parser, and the content streams as usual;
//   - a header that runs past kMaxHeaderTokens, or is cut by a stop token or <|start|>: text without
//     <|channel|> was content the model wrote without a header (kept as final text); a cut header
//     with <|channel|> is dropped (a truncated header carries no text);
//   - text after a message's end without <|start|>: continues the previous message's channel;
//   - <|start|> or <|channel|> inside content: the message is closed and a new header begins;
//   - other special or undecodable tokens inside content: dropped.
// Events follow the message's header: analysis -> reasoning; final, commentary without recipient
// (a preamble) or no channel -> content; any recipient -> a tool call (name without "functions.").
// Texts of several messages of one kind are joined with a newline.
// Messages of other roles (the model writing a user turn) are dropped.
#include <algorithm>
#include <cctype>
#include <random>

#include "serve/openai_api.h"

namespace gptoss::serve {

using harmony::Role;
using harmony::StreamableParser;

namespace {

// Real headers are about 15 tokens ("<|channel|>commentary to=functions.NAME <|constrain|>json").
constexpr size_t kMaxHeaderTokens = 64;

std::string new_call_id() {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  thread_local std::mt19937_64 rng{std::random_device{}()};
  std::string id = "call_";
  for (int i = 0; i < 24; ++i) id += kAlphabet[rng() % (sizeof(kAlphabet) - 1)];
  return id;
}

bool is_space_or_lt(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '<'; }

// The word after `marker` in `text`, up to whitespace or '<'.
std::string word_after(const std::string& text, std::string_view marker) {
  const size_t at = text.find(marker);
  if (at == std::string::npos) return "";
  size_t b = at + marker.size(), e = b;
  while (e < text.size() && !is_space_or_lt(text[e])) ++e;
  return text.substr(b, e - b);
}

}  // namespace

struct CompletionMapper::Impl {
  enum class Sink { Ignore, Reasoning, Content, Tool };

  const harmony::HarmonyEncoding* enc;
  std::unique_ptr<StreamableParser> parser;
  std::vector<TokenId> header;  // tokens of the header being read (since <|start|> or the stream's start)
  bool header_after_start = false;  // the header follows an explicit <|start|>: it begins with a role
  CompletionResult result;
  bool recovered = false;
  bool finished = false;

  Sink sink = Sink::Ignore;  // where the current message's text goes
  int tool_index = -1;
  size_t emitted = 0;  // bytes of the current message's content already emitted
  // The last finished message, for text that follows it without a header.
  std::optional<std::string> last_channel, last_recipient;
  Sink last_sink = Sink::Content;
  int last_tool_index = -1;
  bool continuing = false;  // the header being fed continues the last message
  bool fresh_message = false;  // no text of the current message emitted yet
  std::vector<StreamEvent> pending;  // events of the forced prefix (a named call's begin), sent with the first push

  bool is_stop(TokenId t) const { return t == enc->end_id || t == enc->return_id || t == enc->call_id; }

  std::string decode_lossy(const std::vector<TokenId>& ids) const {
    StreamDecoder d(enc->tokenizer());
    std::string out;
    for (TokenId t : ids) out += d.push(t);
    return out + d.finish();
  }

  // A second message of the same kind starts on a new line ("preamble\nanswer").
  void append_text(std::string& to, StreamEvent::Kind kind, const std::string& text,
                   std::vector<StreamEvent>& events) {
    std::string delta = fresh_message && !to.empty() ? "\n" + text : text;
    fresh_message = false;
    to += delta;
    events.push_back({kind, std::move(delta), -1});
  }

  void emit(const std::string& text, std::vector<StreamEvent>& events) {
    if (text.empty()) return;
    switch (sink) {
      case Sink::Ignore: return;
      case Sink::Reasoning: return append_text(result.reasoning, StreamEvent::Kind::ReasoningDelta, text, events);
      case Sink::Content: return append_text(result.content, StreamEvent::Kind::ContentDelta, text, events);
      case Sink::Tool:
        result.tool_calls[static_cast<size_t>(tool_index)].arguments += text;
        events.push_back({StreamEvent::Kind::ToolCallArgumentsDelta, text, tool_index});
        return;
    }
  }

  // A fresh parser: in the header of an assistant message, or expecting <|start|>.
  void reset_parser(bool in_assistant_header) {
    parser = std::make_unique<StreamableParser>(*enc, in_assistant_header ? std::optional<Role>(Role::Assistant)
                                                                          : std::nullopt);
    header.clear();
    header_after_start = false;
  }

  // The parser just read a header: pick the sink, open a tool call.
  void on_header_done(std::vector<StreamEvent>& events) {
    emitted = 0;
    header.clear();
    fresh_message = !continuing;
    if (continuing) {
      continuing = false;
      sink = last_sink;
      tool_index = last_tool_index;
      return;
    }
    const auto role = parser->current_role();
    const auto channel = parser->current_channel();
    const auto recipient = parser->current_recipient();
    if (role != Role::Assistant) {
      recovered = true;
      sink = Sink::Ignore;
    } else if (recipient && *recipient != "all" && *recipient != "assistant" && *recipient != "user") {
      std::string name = *recipient;
      if (name.rfind("functions.", 0) == 0) name.erase(0, 10);
      tool_index = static_cast<int>(result.tool_calls.size());
      result.tool_calls.push_back({new_call_id(), name, ""});
      events.push_back({StreamEvent::Kind::ToolCallBegin, name, tool_index});
      sink = Sink::Tool;
    } else if (channel == "analysis") {
      sink = Sink::Reasoning;
    } else {
      sink = Sink::Content;
    }
    last_channel = channel;
    last_recipient = recipient;
  }

  // The parser just finished a message (stop token or end of stream): emit what it flushed.
  void on_message_done(std::vector<StreamEvent>& events) {
    const auto& msgs = parser->messages();
    if (!msgs.empty()) {
      const std::string text = msgs.back().text();
      if (text.size() > emitted) emit(text.substr(emitted), events);
    }
    last_sink = sink;
    last_tool_index = tool_index;
    emitted = 0;
    reset_parser(false);
  }

  // Feeds a clean assistant header to a fresh parser: "<|channel|>C to=R<|message|>". Channel and
  // recipient come from text that broke the grammar: only name characters are kept, so that this
  // header parses.
  void feed_header(const std::optional<std::string>& channel, const std::optional<std::string>& recipient,
                   std::vector<StreamEvent>& events) {
    const auto clean = [](const std::optional<std::string>& s) {
      std::string out;
      for (char c : s.value_or("")) {
        if (std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.' || c == ':') out += c;
      }
      return out;
    };
    const std::string c = clean(channel), r = clean(recipient);
    const Tokenizer& tok = enc->tokenizer();
    std::vector<TokenId> ids;
    if (!c.empty()) {
      ids.push_back(enc->channel_id);
      for (TokenId t : tok.encode_ordinary(c)) ids.push_back(t);
    }
    if (!r.empty()) {
      for (TokenId t : tok.encode_ordinary(" to=" + r)) ids.push_back(t);
    }
    ids.push_back(enc->message_id);
    reset_parser(true);
    for (TokenId t : ids) (void)parser->process(t);
    if (parser->state() != StreamableParser::State::Content) {  // not expected; a plain final header parses
      reset_parser(true);
      (void)parser->process(enc->channel_id);
      for (TokenId t : tok.encode_ordinary("final")) (void)parser->process(t);
      (void)parser->process(enc->message_id);
    }
    on_header_done(events);
  }

  // Content tokens of the current message.
  void feed_content(TokenId t, std::vector<StreamEvent>& events) {
    (void)parser->process(t);  // never fails in content state
    const std::string& delta = parser->last_content_delta();
    emit(delta, events);
    emitted += delta.size();
  }

  // A header that will not end well (too long, or cut by a stop token, <|start|> or the end).
  // Without <|channel|> its text was content; with it, a truncated header has no text to keep.
  void abandon_header(bool keep_going, std::vector<StreamEvent>& events) {
    const std::vector<TokenId> tokens = header;
    const bool has_channel = std::find(tokens.begin(), tokens.end(), enc->channel_id) != tokens.end();
    if (!has_channel) {
      std::vector<TokenId> text_tokens;
      for (TokenId t : tokens) {
        if (!enc->tokenizer().is_special(t)) text_tokens.push_back(t);
      }
      // "<|start|>assistant" cut there is a truncated header, not text.
      if (header_after_start && !text_tokens.empty() &&
          harmony::parse_role(decode_lossy({text_tokens.front()}))) {
        text_tokens.erase(text_tokens.begin());
      }
      if (!text_tokens.empty()) {
        recovered = true;
        feed_header(std::string("final"), std::nullopt, events);
        for (TokenId t : text_tokens) {
          if (enc->tokenizer().is_decodable(t)) feed_content(t, events);
        }
        if (!keep_going) {
          (void)parser->process_eos();
          on_message_done(events);
        }
        return;
      }
    } else if (keep_going) {
      // Too long but with a channel: keep its channel and recipient, go on as content.
      recovered = true;
      const std::string text = decode_lossy(tokens);
      std::string channel = word_after(text, "<|channel|>");
      std::string recipient = word_after(text, "to=");
      feed_header(channel.empty() ? std::optional<std::string>() : channel,
                  recipient.empty() ? std::optional<std::string>() : recipient, events);
      return;
    }
    reset_parser(false);
  }

  // <|message|> ended a header the parser rejected: salvage its channel and recipient.
  void salvage_header(std::vector<StreamEvent>& events) {
    recovered = true;
    const std::string text = decode_lossy(header);
    std::string channel = word_after(text, "<|channel|>");
    std::string recipient = word_after(text, "to=");
    if (channel.empty()) channel = recipient.empty() ? "final" : "commentary";
    feed_header(channel, recipient.empty() ? std::optional<std::string>() : recipient, events);
  }

  void push(TokenId t, std::vector<StreamEvent>& events) {
    const Tokenizer& tok = enc->tokenizer();
    switch (parser->state()) {
      case StreamableParser::State::Content:
        if (is_stop(t)) {
          (void)parser->process(t);
          on_message_done(events);
        } else if (t == enc->start_id || t == enc->channel_id) {
          // A new message without <|end|> first.
          recovered = true;
          (void)parser->process(enc->end_id);
          on_message_done(events);
          push(t, events);
        } else if (tok.is_special(t) || !tok.is_decodable(t)) {
          recovered = true;
        } else {
          feed_content(t, events);
        }
        return;
      case StreamableParser::State::Header:
        if (t == enc->message_id) {
          header.push_back(t);
          if (parser->process(t).ok()) {
            on_header_done(events);
          } else {
            header.pop_back();
            salvage_header(events);
          }
        } else if (is_stop(t) || t == enc->start_id) {
          recovered = true;
          abandon_header(false, events);
          if (t == enc->start_id) push(t, events);
        } else {
          header.push_back(t);
          (void)parser->process(t);
          if (header.size() > kMaxHeaderTokens) abandon_header(true, events);
        }
        return;
      case StreamableParser::State::ExpectStart:
        if (t == enc->start_id) {
          (void)parser->process(t);
          header.clear();
          header_after_start = true;
        } else if (t == enc->channel_id) {
          // "<|channel|>..." with the "<|start|>assistant" left out.
          recovered = true;
          reset_parser(true);
          push(t, events);
        } else if (tok.is_special(t) || !tok.is_decodable(t)) {
          recovered = true;
        } else {
          // Text after a finished message: it goes on in that message's channel.
          recovered = true;
          continuing = true;
          feed_header(last_channel, last_recipient, events);
          feed_content(t, events);
        }
        return;
    }
  }

  void finish(std::vector<StreamEvent>& events) {
    if (finished) return;
    finished = true;
    switch (parser->state()) {
      case StreamableParser::State::Content:
        (void)parser->process_eos();
        on_message_done(events);
        return;
      case StreamableParser::State::Header:
        abandon_header(false, events);
        return;
      case StreamableParser::State::ExpectStart:
        return;
    }
  }
};

CompletionMapper::CompletionMapper(const harmony::HarmonyEncoding& enc, const std::string& forced_prefix)
    : impl_(std::make_shared<Impl>()) {
  impl_->enc = &enc;
  impl_->reset_parser(true);
  for (TokenId t : enc.tokenizer().encode(forced_prefix, AllowedSpecial::every())) impl_->push(t, impl_->pending);
  impl_->recovered = false;
}

void CompletionMapper::push(TokenId token, std::vector<StreamEvent>& events) {
  if (impl_->finished) return;
  if (!impl_->pending.empty()) {
    events.insert(events.end(), impl_->pending.begin(), impl_->pending.end());
    impl_->pending.clear();
  }
  impl_->push(token, events);
}
void CompletionMapper::finish(std::vector<StreamEvent>& events) {
  if (!impl_->pending.empty()) {
    events.insert(events.end(), impl_->pending.begin(), impl_->pending.end());
    impl_->pending.clear();
  }
  impl_->finish(events);
}
const CompletionResult& CompletionMapper::result() const { return impl_->result; }
bool CompletionMapper::recovered_from_error() const { return impl_->recovered; }

}  // namespace gptoss::serve
