// Pieces shared by the chat-completions and responses request parsers (src/serve/*_request.cpp):
// field checks that fill a RequestError naming the field, and the conversation scaffold that both
// APIs build (system message, developer message with instructions and function tools).
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "serve/openai_api.h"

namespace gptoss::serve::detail {

using ojson = nlohmann::ordered_json;

// Sets `error` and returns false, so that checks read `if (...) return fail(...)`.
bool fail(RequestError& error, std::string param, std::string message);

// The field's value, or nullptr when absent or JSON null (absent and null mean the same to the API).
const ojson* field(const ojson& obj, const char* key);
// A JSON value's type in messages: "a string", "an array", ...
std::string type_name(const ojson& v);
std::string param_name(const std::string& prefix, const char* key);

// Text of a content field: a string, or an array of {"type": one of `part_types`, "text": "..."}
// parts ("refusal" parts hold it in "refusal") joined without a separator. Null content is "" when `allow_null`.
bool content_text(const ojson& content, const std::string& param, const std::vector<std::string>& part_types,
                  bool allow_null, std::string& out, RequestError& error);

// Bodies nest at most kMaxBodyDepth arrays/objects, tool schemas kMaxSchemaDepth: the schema
// renderer and JSON copies recurse, so depth from an untrusted body must be bounded.
constexpr size_t kMaxBodyDepth = 128;
constexpr size_t kMaxSchemaDepth = 64;
// Parses a body, or fills `error` (not JSON, not UTF-8, or nested too deep) and returns a discarded value.
ojson parse_body(std::string_view text, RequestError& error);

// Sampling fields: temperature [0,2], top_p (0,1], max tokens >= 1 (the first of `max_keys` present),
// seed (an integer), stop (a string or at most 4 non-empty strings), stream, stream_options.
bool parse_sampling(const ojson& body, const std::vector<const char*>& max_keys, ApiRequest& req,
                    RequestError& error);

// A function tool already checked: name, description, parameters (object key order kept).
struct FunctionTool {
  std::string name;
  std::string description;
  std::optional<ojson> parameters;
};
// Checks a tool's name ([A-Za-z0-9_-], 1..64 characters), description and parameters.
bool check_function_tool(const ojson* name, const ojson* description, const ojson* parameters,
                         const std::string& param, std::vector<FunctionTool>& tools, RequestError& error);
// "tools": function tools, {"type": "function", "function": {name, description, parameters}} in the chat shape,
// {"type": "function", name, description, parameters} in the responses shape.
bool parse_tools(const ojson& body, bool chat_shape, std::vector<FunctionTool>& tools, RequestError& error);

// tool_choice: "auto" | "none" | "required" | a named function (`named_function` reads its name).
// Sets req.tool_choice / tool_choice_name / forced_prefix; checks the name against `tools`.
bool apply_tool_choice(const ojson* choice, const std::vector<FunctionTool>& tools, bool chat_shape,
                       ApiRequest& req, RequestError& error);

// "low" | "medium" | "high" (null: medium).
bool parse_effort(const ojson* v, const std::string& param, harmony::ReasoningEffort& out, RequestError& error);

// The opening checks of both APIs: the body is a JSON object, its "model" (optional) a string, kept in req.
bool parse_request_start(const ojson& body, ApiRequest& req, RequestError& error);

// req.conversation: the system message (`effort`, the date of `opts`) and, when there are instructions or
// function tools to render (tool_choice not "none"), the developer message, followed by `turns`.
void set_conversation(ApiRequest& req, harmony::ReasoningEffort effort, const MappingOptions& opts,
                      const std::vector<std::string>& instructions, const std::vector<FunctionTool>& tools,
                      std::vector<harmony::Message> turns);

// The "YYYY-MM-DD" to render: opts.conversation_date, or today in UTC.
std::string conversation_date(const MappingOptions& opts);

// Assistant messages of a turn, as the model writes them.
harmony::Message assistant_message(const std::string& channel, std::string text);
harmony::Message tool_call_message(const std::string& name, std::string arguments);
harmony::Message tool_result_message(const std::string& name, std::string output);

// The forced header prefixes (after the prompt's "<|start|>assistant").
std::string forced_prefix_required();
std::string forced_prefix_named(const std::string& name);

}  // namespace gptoss::serve::detail
