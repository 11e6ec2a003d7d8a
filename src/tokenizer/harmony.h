// The Harmony chat format of gpt-oss: conversations → tokens (rendering) and completion tokens →
// messages (a streaming parser). Token-for-token compatible with the openai-harmony package
// (HarmonyEncodingName.HARMONY_GPT_OSS); tests/py/test_harmony.py checks it.
//
// Grammar of one message: <|start|>{header}<|message|>{content}<|end|>, where header is the role
// (or a tool's name), optional " to={recipient}", optional "<|channel|>{channel}" and an optional
// content type (" json" or " <|constrain|>json"). Assistant tool calls end with <|call|>, a sampled
// final answer with <|return|>. Conversations are read from openai-harmony's Conversation JSON
// (Conversation.to_json()).
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "tokenizer/tokenizer.h"

namespace gptoss::harmony {

enum class Role { User, Assistant, System, Developer, Tool };
std::string_view role_name(Role role);
std::optional<Role> parse_role(std::string_view name);

enum class ReasoningEffort { Low, Medium, High };
// "low", "medium", "high": the words the rendered system message, the CLI and the OpenAI APIs use.
std::string_view reasoning_effort_name(ReasoningEffort effort);
// The inverse of reasoning_effort_name; with ignore_case also openai-harmony's JSON spelling ("Low").
std::optional<ReasoningEffort> parse_reasoning_effort(std::string_view name, bool ignore_case = false);

struct ToolDescription {
  std::string name;
  std::string description;
  // JSON schema of the arguments (object key order is kept: it is the rendered order).
  std::optional<nlohmann::ordered_json> parameters;
};

struct ToolNamespace {
  std::string name;
  std::optional<std::string> description;
  std::vector<ToolDescription> tools;
};

// Namespaces keyed by name; rendered in key order.
using ToolNamespaces = std::map<std::string, ToolNamespace>;

struct ChannelConfig {
  std::vector<std::string> valid_channels;
  bool channel_required = false;
};

struct SystemContent {
  std::optional<std::string> model_identity;
  std::optional<ReasoningEffort> reasoning_effort;
  std::optional<std::string> conversation_start_date;  // "2025-06-28"
  std::optional<std::string> knowledge_cutoff;         // "2024-06"
  std::optional<ChannelConfig> channel_config;
  std::optional<ToolNamespaces> tools;
  // openai-harmony's SystemContent.new(): ChatGPT identity, medium effort, cutoff 2024-06,
  // channels analysis/commentary/final required, no date, no tools.
  static SystemContent defaults();
};

struct DeveloperContent {
  std::optional<std::string> instructions;
  std::optional<ToolNamespaces> tools;
};

struct Content {
  enum class Kind { Text, System, Developer };
  Kind kind = Kind::Text;
  std::string text;
  SystemContent system;
  DeveloperContent developer;
};

struct Message {
  Role role = Role::User;
  std::optional<std::string> name;  // the tool's name ("functions.get_weather") for tool messages
  std::vector<Content> content;
  std::optional<std::string> channel;
  std::optional<std::string> recipient;
  std::optional<std::string> content_type;  // "json", "<|constrain|>json"

  static Message from_text(Role role, std::string text);
  // The text contents concatenated.
  std::string text() const;
  // openai-harmony's Message.to_dict() shape (text contents only are written for system and
  // developer contents too, in their JSON shape).
  nlohmann::ordered_json to_json() const;
};

struct Conversation {
  std::vector<Message> messages;
  static Result<Conversation> from_json_text(std::string_view json_text);
  static Result<Conversation> from_json(const nlohmann::ordered_json& json);
};

class HarmonyEncoding {
 public:
  // Fails when the tokenizer lacks one of the Harmony formatting tokens.
  static Result<HarmonyEncoding> create(const Tokenizer& tokenizer);

  // Renders every message; with auto_drop_analysis (openai-harmony's default), when the last
  // assistant message is on "final", analysis messages before the first "final" are dropped.
  Result<std::vector<TokenId>> render_conversation(const Conversation& conv, bool auto_drop_analysis = true) const;
  // render_conversation + <|start|>{next role}: the prompt for sampling the next message.
  Result<std::vector<TokenId>> render_for_completion(const Conversation& conv, Role next_role = Role::Assistant,
                                                     bool auto_drop_analysis = true) const;
  Result<std::vector<TokenId>> render_message(const Message& message, bool conversation_has_function_tools) const;

  // Parses completion tokens (as the parser below, then end of stream). `role` is the role the
  // completion starts in (the prompt ended with <|start|>{role}); empty = tokens start at <|start|>.
  Result<std::vector<Message>> parse_messages(std::span<const TokenId> tokens, std::string_view role) const;

  // Stop tokens while sampling an assistant turn: <|return|>, <|call|>.
  std::vector<TokenId> stop_tokens_for_assistant_actions() const { return {return_id, call_id}; }
  // Tokens that end a message: <|return|>, <|call|>, <|end|>.
  std::vector<TokenId> stop_tokens() const { return {return_id, call_id, end_id}; }

  const Tokenizer& tokenizer() const { return tokenizer_; }

  TokenId start_id = 0, message_id = 0, end_id = 0, return_id = 0, call_id = 0, channel_id = 0, constrain_id = 0;

 private:
  explicit HarmonyEncoding(Tokenizer t) : tokenizer_(std::move(t)) {}
  Status render_message_into(const Message& m, bool has_function_tools, std::vector<TokenId>& out) const;
  void render_text(std::string_view text, std::vector<TokenId>& out) const;
  Tokenizer tokenizer_;
};

// Feeds completion tokens one at a time (as they are sampled) and splits them into messages.
// Content text is decoded incrementally: last_content_delta() is the text the last token added
// (complete UTF-8 only), so a REPL can print the final channel as it comes.
class StreamableParser {
 public:
  enum class State { ExpectStart, Header, Content };

  // `role`: the role the stream starts in (header state), or nullopt to expect <|start|> first.
  StreamableParser(const HarmonyEncoding& encoding, std::optional<Role> role);

  // Errors on a token that breaks the grammar (e.g. not <|start|> between messages, a header that
  // does not parse); the parser should not be fed further after an error.
  Status process(TokenId token);
  // End of stream: finishes a message in progress (error when inside a header).
  Status process_eos();

  const std::vector<Message>& messages() const { return messages_; }
  State state() const { return state_; }
  // The text of the current message so far.
  const std::string& current_content() const { return content_; }
  std::optional<Role> current_role() const;
  std::optional<std::string> current_channel() const;
  std::optional<std::string> current_recipient() const;
  std::optional<std::string> current_content_type() const;
  // Text added by the last process() call; empty when it added none.
  const std::string& last_content_delta() const { return last_delta_; }
  const std::vector<TokenId>& tokens() const { return tokens_; }

 private:
  Status process_next(std::optional<TokenId> token);
  Status finish_header();
  void finish_message();

  const HarmonyEncoding* encoding_;
  std::optional<Role> next_role_;
  State state_;
  std::vector<TokenId> tokens_;
  std::vector<Message> messages_;
  std::vector<TokenId> header_tokens_;
  Message current_;  // header fields of the message being parsed
  std::string content_;
  std::vector<TokenId> undecoded_tokens_;
  std::string undecoded_bytes_;
  std::string last_delta_;
};

}  // namespace gptoss::harmony
