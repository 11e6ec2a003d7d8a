// OpenAI API requests and responses <-> Harmony (src/serve/openai_api.h).
// Chat completions and Responses bodies become a Harmony conversation (openai-harmony's rendering rules),
// and completion tokens become the API's message / output items, streaming or not. Shared by
// `gptoss serve`, `gptoss render --chat-request` and `gptoss parse --chat-response`.
// INTERFACE AGREED BETWEEN THE HELPERS serve-map (owner, implements it) AND serve-http (uses it).
// serve-map may ADD to it; renaming or removing a name needs a note in serve-map's commit message.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "tokenizer/harmony.h"

namespace gptoss::serve {

// How a request becomes a conversation.
struct MappingOptions {
  std::string conversation_date;  // "YYYY-MM-DD" for the system message; empty: today (UTC)
};

// Sampling and stop settings a request asks for.
struct SamplingParams {
  std::optional<int> max_tokens;    // max_tokens / max_completion_tokens / max_output_tokens; nullopt: up to the context
  float temperature = 1.0f;          // 0: greedy
  float top_p = 1.0f;
  std::optional<uint64_t> seed;
  std::vector<std::string> stop;     // stop strings (at most 4, non-empty)
};

enum class ToolChoice { Auto, None, Required, Named };

// A validated request of either API, as the engine runs it.
struct ApiRequest {
  std::string model;
  harmony::Conversation conversation;  // system (SystemContent: effort, date), developer (instructions, tools), turns
  // Header text forced after the prompt's final "<|start|>assistant" (tool_choice required / named:
  // e.g. "<|channel|>commentary to=functions.NAME <|constrain|>json<|message|>"); its tokens are part of the
  // prompt, and CompletionMapper must be constructed with the same text so that it parses from there.
  std::string forced_prefix;
  SamplingParams sampling;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  ToolChoice tool_choice = ToolChoice::Auto;
  std::string tool_choice_name;
};

// A 400: the message, and the request field it is about ("messages[2].role", "temperature").
struct RequestError {
  std::string message;
  std::string param;
};

// Parses and validates a /v1/chat/completions body; on failure fills `error` and returns nullopt.
std::optional<ApiRequest> parse_chat_request(const nlohmann::json& body, const MappingOptions& opts,
                                             RequestError& error);
// The same for a /v1/responses body (input items, instructions, function tools, function_call /
// function_call_output items, reasoning items; previous_response_id is a 400: the server is stateless).
std::optional<ApiRequest> parse_responses_request(const nlohmann::json& body, const MappingOptions& opts,
                                                  RequestError& error);

// The same from ordered_json: tool parameter schemas keep the client's key order, which is the order
// the model reads them in (nlohmann::json sorts keys). The server should parse bodies as ordered_json.
std::optional<ApiRequest> parse_chat_request(const nlohmann::ordered_json& body, const MappingOptions& opts,
                                             RequestError& error);
std::optional<ApiRequest> parse_responses_request(const nlohmann::ordered_json& body, const MappingOptions& opts,
                                                  RequestError& error);
// From the raw body: text that is not JSON (or not UTF-8) is a 400 like any other field error.
std::optional<ApiRequest> parse_chat_request_text(std::string_view body, const MappingOptions& opts,
                                                  RequestError& error);
std::optional<ApiRequest> parse_responses_request_text(std::string_view body, const MappingOptions& opts,
                                                       RequestError& error);
// Whether `date` is a "YYYY-MM-DD" calendar date (for --conversation-date).
bool is_valid_conversation_date(std::string_view date);

// The prompt tokens for a request: render_for_completion(conversation) + tokens of forced_prefix.
Result<std::vector<TokenId>> render_prompt(const harmony::HarmonyEncoding& enc, const ApiRequest& req);

// What the model said, split the way the APIs return it.
struct ToolCall {
  std::string id;         // "call_..." (unique within the response)
  std::string name;       // function name without the "functions." namespace
  std::string arguments;  // the raw JSON text the model wrote
};
struct CompletionResult {
  std::string reasoning;  // analysis channel text
  std::string content;    // final channel text (and commentary without a recipient: preambles)
  std::vector<ToolCall> tool_calls;
};

// An event of a streamed completion, independent of the API that formats it.
struct StreamEvent {
  enum class Kind { ReasoningDelta, ContentDelta, ToolCallBegin, ToolCallArgumentsDelta };
  Kind kind;
  std::string text;   // the delta; the function name for tool_call_begin
  int tool_index = -1;  // index into CompletionResult::tool_calls for tool events
};

// Feeds completion tokens (those sampled after the prompt) and maps them to events and a result.
// Never fails: output that breaks the Harmony grammar (a malformed header, a stray token) is recovered
// (its text kept in the current channel, or the message closed) so a response always completes.
class CompletionMapper {
 public:
  CompletionMapper(const harmony::HarmonyEncoding& enc, const std::string& forced_prefix);
  void push(TokenId token, std::vector<StreamEvent>& events);
  void finish(std::vector<StreamEvent>& events);  // end of generation (stop token, length, cancel)
  const CompletionResult& result() const;
  bool recovered_from_error() const;  // the output broke the grammar somewhere (logged, not returned)

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

// Chat completions shapes.
nlohmann::ordered_json chat_message_json(const CompletionResult& r);      // choices[0].message
std::string chat_finish_reason(const CompletionResult& r, bool hit_length);  // "stop" | "length" | "tool_calls"
nlohmann::ordered_json chat_delta_json(const StreamEvent& e, const CompletionResult& r);  // a chunk's delta
// Responses shapes: the output items (reasoning, message, function_call) of a finished completion.
nlohmann::ordered_json responses_output_json(const CompletionResult& r);

// OpenAI-style error object {"error": {"message", "type", "param", "code"}}.
nlohmann::ordered_json error_json(const std::string& message, const std::string& type, const std::string& param);

}  // namespace gptoss::serve
