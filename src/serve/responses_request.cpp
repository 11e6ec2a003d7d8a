// /v1/responses body -> ApiRequest. Input is a string (one user message) or a list of items:
// message items (user / system / developer / assistant with input_text or output_text parts),
// function_call and function_call_output items, reasoning items. `instructions` and system /
// developer messages become the developer message's instructions. The server keeps no state:
// previous_response_id is a 400.
#include <map>

#include "serve/openai_api.h"
#include "serve/request_common.h"

namespace gptoss::serve {

using namespace detail;  // NOLINT: this file is the responses half of the detail helpers
using harmony::Message;
using harmony::Role;

namespace {

const std::vector<std::string> kPartTypes = {"input_text", "output_text", "text"};

struct ResponsesParse {
  std::vector<std::string> instructions;
  std::vector<Message> turns;
  std::map<std::string, std::string> call_names;  // call_id -> function name
};

bool string_field(const ojson& item, const char* key, const std::string& param, bool required, std::string& out,
                  RequestError& error) {
  const ojson* v = field(item, key);
  if (!v) return required ? fail(error, param_name(param, key), "required") : true;
  if (!v->is_string()) return fail(error, param_name(param, key), "expected a string, got " + type_name(*v));
  out = v->get<std::string>();
  return true;
}

bool parse_message_item(const ojson& item, const std::string& param, ResponsesParse& st, RequestError& error) {
  std::string role;
  if (!string_field(item, "role", param, true, role, error)) return false;
  const ojson* content = field(item, "content");
  if (!content) return fail(error, param + ".content", "required");
  std::string text;
  if (!content_text(*content, param + ".content", kPartTypes, false, text, error)) return false;
  if (role == "user") {
    st.turns.push_back(Message::from_text(Role::User, std::move(text)));
  } else if (role == "system" || role == "developer") {
    st.instructions.push_back(std::move(text));
  } else if (role == "assistant") {
    st.turns.push_back(assistant_message("final", std::move(text)));
  } else {
    return fail(error, param + ".role", "unknown role '" + role + "' (expected user, system, developer or assistant)");
  }
  return true;
}

bool parse_reasoning_item(const ojson& item, const std::string& param, ResponsesParse& st, RequestError& error) {
  // The full text (content, reasoning_text parts) when given, else the summary's text.
  std::string text;
  for (const char* key : {"content", "summary"}) {
    const ojson* parts = field(item, key);
    if (!parts) continue;
    std::string t;
    if (!content_text(*parts, param + "." + key, {"reasoning_text", "summary_text", "text"}, true, t, error)) {
      return false;
    }
    if (text.empty()) text = std::move(t);
  }
  if (!text.empty()) st.turns.push_back(assistant_message("analysis", std::move(text)));
  return true;
}

bool parse_input(const ojson& body, ResponsesParse& st, RequestError& error) {
  const ojson* input = field(body, "input");
  if (!input) return fail(error, "input", "required");
  if (input->is_string()) {
    st.turns.push_back(Message::from_text(Role::User, input->get<std::string>()));
    return true;
  }
  if (!input->is_array()) return fail(error, "input", "expected a string or an array of items, got " + type_name(*input));
  if (input->empty()) return fail(error, "input", "must contain at least one item");
  for (size_t i = 0; i < input->size(); ++i) {
    const ojson& item = (*input)[i];
    const std::string param = "input[" + std::to_string(i) + "]";
    if (!item.is_object()) return fail(error, param, "expected an object, got " + type_name(item));
    std::string type = "message";  // an item with a role and no type is a message
    if (!string_field(item, "type", param, false, type, error)) return false;
    if (type == "message") {
      if (!parse_message_item(item, param, st, error)) return false;
    } else if (type == "function_call") {
      std::string call_id, name, arguments;
      if (!string_field(item, "name", param, true, name, error)) return false;
      if (name.empty()) return fail(error, param + ".name", "must not be empty");
      if (!string_field(item, "arguments", param, false, arguments, error)) return false;
      if (!string_field(item, "call_id", param, false, call_id, error)) return false;
      if (!call_id.empty()) st.call_names[call_id] = name;
      // A text message right before the call is its preamble (commentary), as the model writes it.
      if (!st.turns.empty() && st.turns.back().role == Role::Assistant && st.turns.back().channel == "final") {
        st.turns.back().channel = "commentary";
      }
      st.turns.push_back(tool_call_message(name, std::move(arguments)));
    } else if (type == "function_call_output") {
      std::string call_id;
      if (!string_field(item, "call_id", param, true, call_id, error)) return false;
      auto it = st.call_names.find(call_id);
      if (it == st.call_names.end()) {
        return fail(error, param + ".call_id", "no earlier function_call item has call_id '" + call_id + "'");
      }
      const ojson* output = field(item, "output");
      if (!output) return fail(error, param + ".output", "required");
      std::string text;
      if (!content_text(*output, param + ".output", kPartTypes, false, text, error)) return false;
      st.turns.push_back(tool_result_message(it->second, std::move(text)));
    } else if (type == "reasoning") {
      if (!parse_reasoning_item(item, param, st, error)) return false;
    } else {
      return fail(error, param + ".type",
                  "item type '" + type + "' is not supported (expected message, function_call, "
                  "function_call_output or reasoning)");
    }
  }
  return true;
}

}  // namespace

std::optional<ApiRequest> parse_responses_request(const nlohmann::ordered_json& body, const MappingOptions& opts,
                                                  RequestError& error) {
  ApiRequest req;
  if (!parse_request_start(body, req, error)) return std::nullopt;
  if (field(body, "previous_response_id")) {
    fail(error, "previous_response_id",
         "not supported: the server is stateless; send the whole conversation in 'input'");
    return std::nullopt;
  }
  if (!parse_sampling(body, {"max_output_tokens"}, req, error)) return std::nullopt;
  harmony::ReasoningEffort effort = harmony::ReasoningEffort::Medium;
  if (const ojson* reasoning = field(body, "reasoning")) {
    if (!reasoning->is_object()) {
      fail(error, "reasoning", "expected an object, got " + type_name(*reasoning));
      return std::nullopt;
    }
    if (!parse_effort(field(*reasoning, "effort"), "reasoning.effort", effort, error)) return std::nullopt;
  }
  ResponsesParse st;
  if (const ojson* instructions = field(body, "instructions")) {
    if (!instructions->is_string()) {
      fail(error, "instructions", "expected a string, got " + type_name(*instructions));
      return std::nullopt;
    }
    st.instructions.push_back(instructions->get<std::string>());
  }
  std::vector<FunctionTool> tools;
  if (!parse_tools(body, false, tools, error)) return std::nullopt;
  if (!apply_tool_choice(field(body, "tool_choice"), tools, false, req, error)) return std::nullopt;
  if (!parse_input(body, st, error)) return std::nullopt;
  set_conversation(req, effort, opts, st.instructions, tools, std::move(st.turns));
  return req;
}

}  // namespace gptoss::serve
