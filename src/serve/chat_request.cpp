// /v1/chat/completions body -> ApiRequest (a Harmony conversation and sampling settings).
// Message mapping: system and developer messages -> the developer message's instructions; user ->
// user; assistant reasoning (reasoning_content or reasoning) -> analysis, content -> final (or a
// commentary preamble when the message also calls tools), each tool call -> commentary to
// functions.NAME <|constrain|>json; tool -> functions.NAME to assistant on commentary.
#include <map>

#include "serve/openai_api.h"
#include "serve/request_common.h"

namespace gptoss::serve {

using namespace detail;  // NOLINT: this file is the chat half of the detail helpers
using harmony::Message;
using harmony::Role;

namespace {

const std::vector<std::string> kChatPartTypes = {"text"};

struct ChatParse {
  std::vector<std::string> instructions;
  std::vector<Message> turns;
  std::map<std::string, std::string> call_names;  // tool_call id -> function name
};

bool parse_tool_calls(const ojson& calls, const std::string& param, ChatParse& st, std::vector<Message>& out,
                      RequestError& error) {
  if (!calls.is_array()) return fail(error, param, "expected an array, got " + type_name(calls));
  for (size_t i = 0; i < calls.size(); ++i) {
    const ojson& call = calls[i];
    const std::string p = param + "[" + std::to_string(i) + "]";
    if (!call.is_object()) return fail(error, p, "expected an object, got " + type_name(call));
    if (const ojson* type = field(call, "type"); type && (!type->is_string() || *type != "function")) {
      return fail(error, p + ".type", "expected \"function\"");
    }
    const ojson* fn = field(call, "function");
    if (!fn || !fn->is_object()) return fail(error, p + ".function", "expected an object with name and arguments");
    const ojson* name = field(*fn, "name");
    if (!name || !name->is_string() || name->get<std::string>().empty()) {
      return fail(error, p + ".function.name", "expected a non-empty string");
    }
    // The API says a string of JSON; some clients send the object itself.
    std::string arguments;
    if (const ojson* args = field(*fn, "arguments")) {
      arguments = args->is_string() ? args->get<std::string>() : args->dump();
    }
    if (const ojson* id = field(call, "id")) {
      if (!id->is_string()) return fail(error, p + ".id", "expected a string, got " + type_name(*id));
      st.call_names[id->get<std::string>()] = name->get<std::string>();
    }
    out.push_back(tool_call_message(name->get<std::string>(), std::move(arguments)));
  }
  return true;
}

bool parse_assistant(const ojson& msg, const std::string& param, ChatParse& st, RequestError& error) {
  std::string reasoning;
  for (const char* key : {"reasoning_content", "reasoning"}) {
    const ojson* r = field(msg, key);
    if (!r) continue;
    if (!r->is_string()) return fail(error, param_name(param, key), "expected a string, got " + type_name(*r));
    if (reasoning.empty()) reasoning = r->get<std::string>();
  }
  std::string content;
  const ojson* content_field = field(msg, "content");
  if (content_field &&
      !content_text(*content_field, param + ".content", {"text", "output_text", "refusal"}, true, content, error)) {
    return false;
  }
  std::vector<Message> calls;
  if (const ojson* tc = field(msg, "tool_calls")) {
    if (!parse_tool_calls(*tc, param + ".tool_calls", st, calls, error)) return false;
  }
  if (!content_field && calls.empty() && reasoning.empty()) {
    return fail(error, param + ".content", "an assistant message needs content, reasoning or tool_calls");
  }
  if (!reasoning.empty()) st.turns.push_back(assistant_message("analysis", std::move(reasoning)));
  // Text beside tool calls is what the model writes before calling: a commentary preamble.
  if (!calls.empty()) {
    if (!content.empty()) st.turns.push_back(assistant_message("commentary", std::move(content)));
  } else if (content_field) {
    st.turns.push_back(assistant_message("final", std::move(content)));
  }
  for (Message& m : calls) st.turns.push_back(std::move(m));
  return true;
}

bool parse_tool_result(const ojson& msg, const std::string& param, ChatParse& st, RequestError& error) {
  std::string name;
  if (const ojson* id = field(msg, "tool_call_id")) {
    if (!id->is_string()) return fail(error, param + ".tool_call_id", "expected a string, got " + type_name(*id));
    auto it = st.call_names.find(id->get<std::string>());
    if (it != st.call_names.end()) name = it->second;
  }
  if (name.empty()) {
    if (const ojson* n = field(msg, "name"); n && n->is_string() && !n->get<std::string>().empty()) {
      name = n->get<std::string>();
    }
  }
  if (name.empty()) {
    if (field(msg, "tool_call_id")) {
      return fail(error, param + ".tool_call_id",
                  "no earlier assistant tool call has id '" + field(msg, "tool_call_id")->get<std::string>() + "'");
    }
    return fail(error, param + ".tool_call_id", "a tool message needs the tool_call_id of an earlier tool call");
  }
  const ojson* content = field(msg, "content");
  if (!content) return fail(error, param + ".content", "a tool message needs content");
  std::string text;
  if (!content_text(*content, param + ".content", kChatPartTypes, false, text, error)) return false;
  st.turns.push_back(tool_result_message(name, std::move(text)));
  return true;
}

bool parse_messages(const ojson& body, ChatParse& st, RequestError& error) {
  const ojson* messages = field(body, "messages");
  if (!messages) return fail(error, "messages", "required");
  if (!messages->is_array()) return fail(error, "messages", "expected an array, got " + type_name(*messages));
  if (messages->empty()) return fail(error, "messages", "must contain at least one message");
  for (size_t i = 0; i < messages->size(); ++i) {
    const ojson& msg = (*messages)[i];
    const std::string param = "messages[" + std::to_string(i) + "]";
    if (!msg.is_object()) return fail(error, param, "expected an object, got " + type_name(msg));
    const ojson* role_field = field(msg, "role");
    if (!role_field || !role_field->is_string()) return fail(error, param + ".role", "expected a string");
    const std::string role = role_field->get<std::string>();
    if (role == "system" || role == "developer" || role == "user") {
      const ojson* content = field(msg, "content");
      if (!content) return fail(error, param + ".content", "a " + role + " message needs content");
      std::string text;
      if (!content_text(*content, param + ".content", kChatPartTypes, false, text, error)) return false;
      if (role == "user") {
        st.turns.push_back(Message::from_text(Role::User, std::move(text)));
      } else {
        st.instructions.push_back(std::move(text));
      }
    } else if (role == "assistant") {
      if (!parse_assistant(msg, param, st, error)) return false;
    } else if (role == "tool") {
      if (!parse_tool_result(msg, param, st, error)) return false;
    } else {
      return fail(error, param + ".role",
                  "unknown role '" + role + "' (expected system, developer, user, assistant or tool)");
    }
  }
  return true;
}

}  // namespace

std::optional<ApiRequest> parse_chat_request(const nlohmann::ordered_json& body, const MappingOptions& opts,
                                             RequestError& error) {
  ApiRequest req;
  if (!parse_request_start(body, req, error)) return std::nullopt;
  if (const ojson* n = field(body, "n"); n && (!n->is_number_integer() || n->get<int64_t>() != 1)) {
    fail(error, "n", "only n = 1 is supported (got " + n->dump() + ")");
    return std::nullopt;
  }
  if (!parse_sampling(body, {"max_completion_tokens", "max_tokens"}, req, error)) return std::nullopt;
  harmony::ReasoningEffort effort;
  if (!parse_effort(field(body, "reasoning_effort"), "reasoning_effort", effort, error)) return std::nullopt;
  std::vector<FunctionTool> tools;
  if (!parse_tools(body, true, tools, error)) return std::nullopt;
  if (!apply_tool_choice(field(body, "tool_choice"), tools, true, req, error)) return std::nullopt;
  ChatParse st;
  if (!parse_messages(body, st, error)) return std::nullopt;
  set_conversation(req, effort, opts, st.instructions, tools, std::move(st.turns));
  return req;
}

}  // namespace gptoss::serve
