#include "tokenizer/harmony.h"

#include <fmt/ranges.h>

#include <algorithm>
#include <cctype>
#include <set>

#include "tokenizer/harmony_render.h"
#include "tokenizer/utf8.h"

namespace gptoss::harmony {

namespace {

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD
constexpr std::string_view kChannelMarker = "<|channel|>";
constexpr std::string_view kConstrainMarker = "<|constrain|>";

bool is_ascii_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_ascii_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_ascii_space(s.back())) s.remove_suffix(1);
  return s;
}

// Rust's str::split_ascii_whitespace (no \v).
std::vector<std::string> split_ascii_whitespace(std::string_view s) {
  std::vector<std::string> parts;
  size_t i = 0;
  const auto ws = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f'; };
  while (i < s.size()) {
    while (i < s.size() && ws(s[i])) ++i;
    const size_t b = i;
    while (i < s.size() && !ws(s[i])) ++i;
    if (i > b) parts.emplace_back(s.substr(b, i - b));
  }
  return parts;
}

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

// Length of the invalid UTF-8 sequence at s[i] as Rust's Utf8Error::error_len counts it
// (maximal subpart), or 0 when s[i..] is a valid sequence cut short by the end of s.
size_t invalid_sequence_length(std::string_view s, size_t i) {
  const uint8_t c = static_cast<uint8_t>(s[i]);
  const utf8::LeadByte lb = utf8::lead_byte(c);
  if (lb.len == 0) return 1;
  const size_t len = lb.len;
  const uint8_t lo = lb.lo, hi = lb.hi;
  for (size_t k = 1; k < len; ++k) {
    if (i + k >= s.size()) return 0;
    const uint8_t b = static_cast<uint8_t>(s[i + k]);
    const bool ok = k == 1 ? (b >= lo && b <= hi) : ((b & 0xC0) == 0x80);
    if (!ok) return k;
  }
  return 0;  // not reached for invalid input
}

// String::from_utf8_lossy: each maximal invalid subpart becomes one U+FFFD.
std::string utf8_lossy(std::string_view s) {
  std::string out;
  size_t i = 0;
  while (i < s.size()) {
    const size_t n = utf8::valid_sequence_length(s, i);
    if (n > 0) {
      out.append(s.substr(i, n));
      i += n;
      continue;
    }
    out += kReplacement;
    const size_t bad = invalid_sequence_length(s, i);
    if (bad == 0) break;
    i += bad;
  }
  return out;
}

}  // namespace

std::string_view role_name(Role role) {
  switch (role) {
    case Role::User: return "user";
    case Role::Assistant: return "assistant";
    case Role::System: return "system";
    case Role::Developer: return "developer";
    case Role::Tool: return "tool";
  }
  return "user";
}

std::optional<Role> parse_role(std::string_view name) {
  for (Role r : {Role::User, Role::Assistant, Role::System, Role::Developer, Role::Tool}) {
    if (role_name(r) == name) return r;
  }
  return std::nullopt;
}

std::string_view reasoning_effort_name(ReasoningEffort effort) {
  switch (effort) {
    case ReasoningEffort::Low: return "low";
    case ReasoningEffort::Medium: return "medium";
    case ReasoningEffort::High: return "high";
  }
  return "medium";
}

std::optional<ReasoningEffort> parse_reasoning_effort(std::string_view name, bool ignore_case) {
  std::string n(name);
  if (ignore_case)
    std::transform(n.begin(), n.end(), n.begin(), [](unsigned char ch) { return char(std::tolower(ch)); });
  for (ReasoningEffort e : {ReasoningEffort::Low, ReasoningEffort::Medium, ReasoningEffort::High}) {
    if (reasoning_effort_name(e) == n) return e;
  }
  return std::nullopt;
}

SystemContent SystemContent::defaults() {
  SystemContent s;
  s.model_identity = "You are ChatGPT, a large language model trained by OpenAI.";
  s.reasoning_effort = ReasoningEffort::Medium;
  s.knowledge_cutoff = "2024-06";
  s.channel_config = ChannelConfig{{"analysis", "commentary", "final"}, true};
  return s;
}

Message Message::from_text(Role role, std::string text) {
  Message m;
  m.role = role;
  Content c;
  c.text = std::move(text);
  m.content.push_back(std::move(c));
  return m;
}

std::string Message::text() const {
  std::string out;
  for (const Content& c : content) {
    if (c.kind == Content::Kind::Text) out += c.text;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Rendering

Result<HarmonyEncoding> HarmonyEncoding::create(const Tokenizer& tokenizer) {
  HarmonyEncoding enc(tokenizer);
  struct Need {
    const char* name;
    TokenId* id;
  };
  const Need needs[] = {{"<|start|>", &enc.start_id},     {"<|message|>", &enc.message_id},
                        {"<|end|>", &enc.end_id},         {"<|return|>", &enc.return_id},
                        {"<|call|>", &enc.call_id},       {"<|channel|>", &enc.channel_id},
                        {"<|constrain|>", &enc.constrain_id}};
  for (const Need& n : needs) {
    const auto id = tokenizer.special_token_id(n.name);
    if (!id) return Error("tokenizer has no special token {} (needed by the Harmony format)", n.name);
    *n.id = *id;
  }
  return enc;
}

void HarmonyEncoding::render_text(std::string_view text, std::vector<TokenId>& out) const {
  const auto ids = tokenizer_.encode_ordinary(text);
  out.insert(out.end(), ids.begin(), ids.end());
}

Status HarmonyEncoding::render_message_into(const Message& m, bool has_function_tools,
                                            std::vector<TokenId>& out) const {
  out.push_back(start_id);
  if (m.role == Role::Tool) {
    if (!m.name) return Error("tool message without a name (the tool's name is its header)");
    render_text(*m.name, out);
  } else {
    render_text(role_name(m.role), out);
    if (m.name) render_text(":" + *m.name, out);
  }
  if (m.recipient && *m.recipient != "all") render_text(" to=" + *m.recipient, out);
  if (m.channel) {
    out.push_back(channel_id);
    render_text(*m.channel, out);
  }
  if (m.content_type) {
    if (starts_with(*m.content_type, kConstrainMarker)) {
      render_text(" ", out);
      out.push_back(constrain_id);
      const std::string_view rest = std::string_view(*m.content_type).substr(kConstrainMarker.size());
      if (!rest.empty()) render_text(rest, out);
    } else {
      render_text(" " + *m.content_type, out);
    }
  }
  out.push_back(message_id);
  for (const Content& c : m.content) {
    switch (c.kind) {
      case Content::Kind::Text:
        render_text(c.text, out);
        break;
      case Content::Kind::System:
        if (m.role != Role::System) {
          return Error("system content in a {} message (only system messages may have it)", role_name(m.role));
        }
        render_text(render_system_content(c.system, has_function_tools), out);
        break;
      case Content::Kind::Developer:
        if (m.role != Role::Developer) {
          return Error("developer content in a {} message (only developer messages may have it)",
                       role_name(m.role));
        }
        render_text(render_developer_content(c.developer), out);
        break;
    }
  }
  out.push_back(m.role == Role::Assistant && m.recipient ? call_id : end_id);
  return Status();
}

Result<std::vector<TokenId>> HarmonyEncoding::render_message(const Message& message,
                                                              bool conversation_has_function_tools) const {
  std::vector<TokenId> out;
  GPTOSS_TRY(render_message_into(message, conversation_has_function_tools, out));
  return out;
}

Result<std::vector<TokenId>> HarmonyEncoding::render_conversation(const Conversation& conv,
                                                                   bool auto_drop_analysis) const {
  const auto& msgs = conv.messages;
  bool has_function_tools = false;
  for (const Message& m : msgs) {
    for (const Content& c : m.content) {
      if (c.kind != Content::Kind::Developer || !c.developer.tools) continue;
      auto it = c.developer.tools->find("functions");
      if (it != c.developer.tools->end() && !it->second.tools.empty()) has_function_tools = true;
    }
  }
  // Dropping earlier reasoning: only when the conversation ends with an assistant "final" message,
  // and only analysis messages before the first "final" one.
  bool last_assistant_is_final = false;
  for (auto it = msgs.rbegin(); it != msgs.rend(); ++it) {
    if (it->role == Role::Assistant) {
      last_assistant_is_final = it->channel && *it->channel == "final";
      break;
    }
  }
  const bool drop = auto_drop_analysis && last_assistant_is_final;
  size_t first_final = msgs.size();
  for (size_t i = 0; i < msgs.size(); ++i) {
    if (msgs[i].channel && *msgs[i].channel == "final") {
      first_final = i;
      break;
    }
  }
  std::vector<TokenId> out;
  for (size_t i = 0; i < msgs.size(); ++i) {
    if (drop && i < first_final && msgs[i].channel && *msgs[i].channel == "analysis") continue;
    GPTOSS_TRY(render_message_into(msgs[i], has_function_tools, out).with_context(fmt::format("message {}", i)));
  }
  return out;
}

Result<std::vector<TokenId>> HarmonyEncoding::render_for_completion(const Conversation& conv, Role next_role,
                                                                     bool auto_drop_analysis) const {
  GPTOSS_ASSIGN(std::vector<TokenId> out, render_conversation(conv, auto_drop_analysis));
  out.push_back(start_id);
  render_text(role_name(next_role), out);
  return out;
}

Result<std::vector<Message>> HarmonyEncoding::parse_messages(std::span<const TokenId> tokens,
                                                             std::string_view role) const {
  std::optional<Role> start_role;
  if (!role.empty()) {
    start_role = parse_role(role);
    if (!start_role) return Error("unknown role '{}'", role);
  }
  StreamableParser parser(*this, start_role);
  for (size_t i = 0; i < tokens.size(); ++i) {
    GPTOSS_TRY(parser.process(tokens[i]).with_context(fmt::format("token {} (id {})", i, tokens[i])));
  }
  GPTOSS_TRY(parser.process_eos());
  return parser.messages();
}

// ---------------------------------------------------------------------------------------------
// Streaming parser

StreamableParser::StreamableParser(const HarmonyEncoding& encoding, std::optional<Role> role)
    : encoding_(&encoding), next_role_(role), state_(role ? State::Header : State::ExpectStart) {}

Status StreamableParser::process(TokenId token) {
  last_delta_.clear();
  return process_next(token);
}

Status StreamableParser::process_eos() {
  last_delta_.clear();
  return process_next(std::nullopt);
}

std::optional<Role> StreamableParser::current_role() const {
  if (state_ == State::Content) return current_.role;
  return next_role_;
}
std::optional<std::string> StreamableParser::current_channel() const {
  return state_ == State::Content ? current_.channel : std::nullopt;
}
std::optional<std::string> StreamableParser::current_recipient() const {
  return state_ == State::Content ? current_.recipient : std::nullopt;
}
std::optional<std::string> StreamableParser::current_content_type() const {
  return state_ == State::Content ? current_.content_type : std::nullopt;
}

// The header text (specials decoded as their strings) → role/name, channel, recipient, content type.
// Mirrors openai-harmony: the channel is the text after <|channel|> up to whitespace or '<'; a
// <|constrain|> starts its own word; of the remaining words, a last "to=X" is the recipient,
// otherwise the last word is the content type and a word before it the recipient.
Status StreamableParser::finish_header() {
  const Tokenizer& tok = encoding_->tokenizer();
  auto decoded = tok.decode(header_tokens_);
  if (!decoded.ok()) return decoded.status().with_context("could not decode header");
  std::string header = std::move(*decoded);
  if (!utf8::is_valid(header)) return Error("could not decode header: invalid UTF-8");

  Message m;
  if (const size_t idx = header.find(kChannelMarker); idx != std::string::npos) {
    const std::string after = header.substr(idx + kChannelMarker.size());
    size_t end = 0;
    while (end < after.size() && !is_ascii_space(after[end]) && after[end] != '<') ++end;
    if (end == 0) return Error("channel marker present but no channel value found in header");
    m.channel = after.substr(0, end);
    header = header.substr(0, idx) + after.substr(end);
  }
  header = std::string(trim(header));
  if (header.find(kConstrainMarker) != std::string::npos) {
    std::string spaced;
    size_t pos = 0;
    for (size_t at; (at = header.find(kConstrainMarker, pos)) != std::string::npos; pos = at + kConstrainMarker.size()) {
      spaced += header.substr(pos, at - pos);
      spaced += ' ';
      spaced += kConstrainMarker;
    }
    spaced += header.substr(pos);
    header = std::string(trim(spaced));
  }
  std::vector<std::string> parts = split_ascii_whitespace(header);

  Role role;
  std::optional<std::string> role_word;
  if (next_role_) {
    role = *next_role_;
  } else {
    if (parts.empty()) return Error("message header did not contain a role");
    role_word = parts.front();
    if (auto r = parse_role(parts.front())) {
      role = *r;
    } else if (parts.size() > 1 || starts_with(parts.front(), "to=")) {
      // An unknown first word with more header after it: a tool's name.
      parts.erase(parts.begin());
      role = Role::Tool;
    } else {
      return Error("unknown role '{}'", parts.front());
    }
  }
  if (!parts.empty() && parts.front() == role_name(role)) parts.erase(parts.begin());

  if (!parts.empty()) {
    const size_t num_parts = parts.size();
    std::string last = parts.back();
    parts.pop_back();
    if (starts_with(last, "to=")) {
      m.recipient = last.substr(3);
    } else if (num_parts == 1 && !starts_with(last, kConstrainMarker)) {
      m.recipient = last;
    } else {
      m.content_type = last;
      if (!parts.empty()) {
        std::string r = parts.back();
        parts.pop_back();
        m.recipient = starts_with(r, "to=") ? r.substr(3) : r;
      }
    }
    if (!parts.empty()) return Error("unexpected words remaining in message header: '{}'", fmt::join(parts, " "));
  }
  m.role = role;
  if (role == Role::Tool) m.name = role_word;
  current_ = std::move(m);
  return Status();
}

void StreamableParser::finish_message() {
  std::string text = std::move(content_);
  if (!undecoded_tokens_.empty()) text += kReplacement;
  text += utf8_lossy(undecoded_bytes_);
  Message m = std::move(current_);
  Content c;
  c.text = std::move(text);
  m.content = {std::move(c)};
  messages_.push_back(std::move(m));
  current_ = Message();
  content_.clear();
  undecoded_tokens_.clear();
  undecoded_bytes_.clear();
  state_ = State::ExpectStart;
}

Status StreamableParser::process_next(std::optional<TokenId> token) {
  if (token) tokens_.push_back(*token);
  switch (state_) {
    case State::ExpectStart:
      if (token && *token != encoding_->start_id) {
        return Error("unexpected token {} while expecting <|start|> ({})", *token, encoding_->start_id);
      }
      if (token) {
        state_ = State::Header;
        header_tokens_.clear();
      }
      return Status();
    case State::Header:
      if (!token) return Error("end of stream inside a message header");
      if (*token == encoding_->message_id) {
        GPTOSS_TRY(finish_header());
        next_role_.reset();
        header_tokens_.clear();
        state_ = State::Content;
      } else {
        header_tokens_.push_back(*token);
      }
      return Status();
    case State::Content: {
      const bool is_stop = !token || *token == encoding_->end_id || *token == encoding_->return_id ||
                           *token == encoding_->call_id;
      if (is_stop) {
        finish_message();
        return Status();
      }
      const Tokenizer& tok = encoding_->tokenizer();
      undecoded_tokens_.push_back(*token);
      // An id the tokenizer cannot decode stays pending (and ends the message as U+FFFD).
      for (TokenId t : undecoded_tokens_) {
        if (!tok.is_decodable(t)) return Status();
      }
      for (TokenId t : undecoded_tokens_) undecoded_bytes_ += tok.token_bytes(t);
      undecoded_tokens_.clear();
      const size_t valid = utf8::valid_prefix_length(undecoded_bytes_);
      std::string delta = undecoded_bytes_.substr(0, valid);
      undecoded_bytes_.erase(0, valid);
      if (!undecoded_bytes_.empty()) {
        const size_t bad = invalid_sequence_length(undecoded_bytes_, 0);
        if (bad > 0) {
          delta += kReplacement;
          undecoded_bytes_.erase(0, bad);
        }
      }
      content_ += delta;
      last_delta_ = std::move(delta);
      return Status();
    }
  }
  return Status();
}

}  // namespace gptoss::harmony
