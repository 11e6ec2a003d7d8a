#include "serve/request_common.h"

#include <algorithm>
#include <cmath>
#include <ctime>
#include <set>

namespace gptoss::serve::detail {

using harmony::Message;
using harmony::Role;

bool fail(RequestError& error, std::string param, std::string message) {
  error.param = std::move(param);
  error.message = error.param.empty() ? std::move(message) : error.param + ": " + message;
  return false;
}

const ojson* field(const ojson& obj, const char* key) {
  if (!obj.is_object()) return nullptr;
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

std::string type_name(const ojson& v) {
  switch (v.type()) {
    case ojson::value_t::null: return "null";
    case ojson::value_t::object: return "an object";
    case ojson::value_t::array: return "an array";
    case ojson::value_t::string: return "a string";
    case ojson::value_t::boolean: return "a boolean";
    case ojson::value_t::number_integer:
    case ojson::value_t::number_unsigned: return "an integer";
    case ojson::value_t::number_float: return "a number";
    default: return "an unsupported value";
  }
}

std::string param_name(const std::string& prefix, const char* key) {
  return prefix.empty() ? std::string(key) : prefix + "." + key;
}

bool content_text(const ojson& content, const std::string& param, const std::vector<std::string>& part_types,
                  bool allow_null, std::string& out, RequestError& error) {
  out.clear();
  if (content.is_null()) {
    if (allow_null) return true;
    return fail(error, param, "expected a string or an array of text parts, got null");
  }
  if (content.is_string()) {
    out = content.get<std::string>();
    return true;
  }
  if (!content.is_array()) {
    return fail(error, param, "expected a string or an array of text parts, got " + type_name(content));
  }
  for (size_t i = 0; i < content.size(); ++i) {
    const ojson& part = content[i];
    const std::string p = param + "[" + std::to_string(i) + "]";
    if (!part.is_object()) return fail(error, p, "expected a content part object, got " + type_name(part));
    const ojson* type = field(part, "type");
    if (!type || !type->is_string()) return fail(error, p + ".type", "expected a string");
    const std::string t = type->get<std::string>();
    bool known = false;
    for (const std::string& pt : part_types) known = known || pt == t;
    if (!known) {
      std::string allowed;
      for (const std::string& pt : part_types) allowed += (allowed.empty() ? "'" : ", '") + pt + "'";
      return fail(error, p + ".type", "content part type '" + t + "' is not supported (expected " + allowed + ")");
    }
    const char* key = t == "refusal" ? "refusal" : "text";  // {"type": "refusal", "refusal": "..."}
    const ojson* text = field(part, key);
    if (!text || !text->is_string()) return fail(error, p + "." + key, "expected a string");
    out += text->get<std::string>();
  }
  return true;
}

namespace {

// Deepest array/object nesting of a JSON value, without recursion.
size_t json_depth(const ojson& root) {
  size_t deepest = 0;
  std::vector<std::pair<const ojson*, size_t>> stack{{&root, 1}};
  while (!stack.empty()) {
    const auto [v, depth] = stack.back();
    stack.pop_back();
    if (!v->is_structured()) continue;
    deepest = std::max(deepest, depth);
    for (const ojson& child : *v) stack.emplace_back(&child, depth + 1);
  }
  return deepest;
}

bool number_in(const ojson& body, const char* key, double lo, bool lo_open, double hi, std::optional<double>& out,
               RequestError& error) {
  const ojson* v = field(body, key);
  if (!v) return true;
  if (!v->is_number()) return fail(error, key, "expected a number, got " + type_name(*v));
  const double x = v->get<double>();
  const bool low_ok = lo_open ? x > lo : x >= lo;
  if (!std::isfinite(x) || !low_ok || x > hi) {
    return fail(error, key, fmt::format("{} is out of range (expected {}{}, {}])", x, lo_open ? "(" : "[", lo, hi));
  }
  out = x;
  return true;
}

}  // namespace

ojson parse_body(std::string_view text, RequestError& error) {
  // Nesting depth from the brackets outside strings, before the parser builds anything.
  size_t depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxBodyDepth) {
        fail(error, "", fmt::format("the request body nests deeper than {} arrays/objects", kMaxBodyDepth));
        return ojson(ojson::value_t::discarded);
      }
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  ojson body = ojson::parse(text, nullptr, false);
  if (body.is_discarded()) fail(error, "", "the request body is not valid JSON (or not valid UTF-8)");
  return body;
}

bool parse_sampling(const ojson& body, const std::vector<const char*>& max_keys, ApiRequest& req,
                    RequestError& error) {
  std::optional<double> temperature, top_p;
  if (!number_in(body, "temperature", 0.0, false, 2.0, temperature, error)) return false;
  if (!number_in(body, "top_p", 0.0, true, 1.0, top_p, error)) return false;
  if (temperature) req.sampling.temperature = static_cast<float>(*temperature);
  if (top_p) req.sampling.top_p = static_cast<float>(*top_p);

  for (const char* key : max_keys) {
    const ojson* v = field(body, key);
    if (!v) continue;
    if (!v->is_number_integer()) return fail(error, key, "expected an integer, got " + type_name(*v));
    const bool in_range = v->is_number_unsigned() ? v->get<uint64_t>() >= 1 && v->get<uint64_t>() <= 0x7fffffffull
                                                  : v->get<int64_t>() >= 1 && v->get<int64_t>() <= 0x7fffffffll;
    if (!in_range) return fail(error, key, "must be between 1 and 2147483647 (got " + v->dump() + ")");
    if (!req.sampling.max_tokens) req.sampling.max_tokens = static_cast<int>(v->get<int64_t>());
  }

  if (const ojson* v = field(body, "seed")) {
    if (!v->is_number_integer()) return fail(error, "seed", "expected an integer, got " + type_name(*v));
    req.sampling.seed = v->is_number_unsigned() ? v->get<uint64_t>() : static_cast<uint64_t>(v->get<int64_t>());
  }

  if (const ojson* v = field(body, "stop")) {
    if (v->is_string()) {
      if (v->get<std::string>().empty()) return fail(error, "stop", "a stop string must not be empty");
      req.sampling.stop.push_back(v->get<std::string>());
    } else if (v->is_array()) {
      if (v->size() > 4) return fail(error, "stop", fmt::format("at most 4 stop strings (got {})", v->size()));
      for (size_t i = 0; i < v->size(); ++i) {
        const ojson& s = (*v)[i];
        const std::string p = fmt::format("stop[{}]", i);
        if (!s.is_string()) return fail(error, p, "expected a string, got " + type_name(s));
        if (s.get<std::string>().empty()) return fail(error, p, "a stop string must not be empty");
        req.sampling.stop.push_back(s.get<std::string>());
      }
    } else {
      return fail(error, "stop", "expected a string or an array of strings, got " + type_name(*v));
    }
  }

  if (const ojson* v = field(body, "stream")) {
    if (!v->is_boolean()) return fail(error, "stream", "expected a boolean, got " + type_name(*v));
    req.stream = v->get<bool>();
  }
  if (const ojson* v = field(body, "stream_options")) {
    if (!req.stream) return fail(error, "stream_options", "only allowed when stream is true");
    if (!v->is_object()) return fail(error, "stream_options", "expected an object, got " + type_name(*v));
    if (const ojson* u = field(*v, "include_usage")) {
      if (!u->is_boolean()) {
        return fail(error, "stream_options.include_usage", "expected a boolean, got " + type_name(*u));
      }
      req.include_usage = u->get<bool>();
    }
  }
  return true;
}

bool check_function_tool(const ojson* name, const ojson* description, const ojson* parameters,
                         const std::string& param, std::vector<FunctionTool>& tools, RequestError& error) {
  FunctionTool tool;
  if (!name || !name->is_string()) {
    return fail(error, param_name(param, "name"), "expected a string, got " + (name ? type_name(*name) : "nothing"));
  }
  tool.name = name->get<std::string>();
  if (tool.name.empty() || tool.name.size() > 64) {
    return fail(error, param_name(param, "name"), "must be 1 to 64 characters long");
  }
  for (char c : tool.name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
    if (!ok) {
      return fail(error, param_name(param, "name"),
                  "'" + tool.name + "' may contain only letters, digits, '_' and '-'");
    }
  }
  for (const FunctionTool& t : tools) {
    if (t.name == tool.name) return fail(error, param_name(param, "name"), "duplicate tool name '" + tool.name + "'");
  }
  if (description) {
    if (!description->is_string()) {
      return fail(error, param_name(param, "description"), "expected a string, got " + type_name(*description));
    }
    tool.description = description->get<std::string>();
  }
  if (parameters) {
    if (!parameters->is_object()) {
      return fail(error, param_name(param, "parameters"), "expected a JSON schema object, got " + type_name(*parameters));
    }
    if (json_depth(*parameters) > kMaxSchemaDepth) {
      return fail(error, param_name(param, "parameters"),
                  fmt::format("the schema nests deeper than {} levels", kMaxSchemaDepth));
    }
    tool.parameters = *parameters;
  }
  tools.push_back(std::move(tool));
  return true;
}

bool parse_tools(const ojson& body, bool chat_shape, std::vector<FunctionTool>& tools, RequestError& error) {
  const ojson* list = field(body, "tools");
  if (!list) return true;
  if (!list->is_array()) return fail(error, "tools", "expected an array, got " + type_name(*list));
  for (size_t i = 0; i < list->size(); ++i) {
    const ojson& t = (*list)[i];
    std::string param = "tools[" + std::to_string(i) + "]";
    if (!t.is_object()) return fail(error, param, "expected an object, got " + type_name(t));
    const ojson* type = field(t, "type");
    if (!type || !type->is_string() || *type != "function") {
      return fail(error, param + ".type", "only \"function\" tools are supported");
    }
    const ojson* fn = &t;
    if (chat_shape) {
      fn = field(t, "function");
      param += ".function";
      if (!fn || !fn->is_object()) return fail(error, param, "expected an object");
    }
    if (!check_function_tool(field(*fn, "name"), field(*fn, "description"), field(*fn, "parameters"), param, tools,
                             error)) {
      return false;
    }
  }
  return true;
}

bool apply_tool_choice(const ojson* choice, const std::vector<FunctionTool>& tools, bool chat_shape,
                       ApiRequest& req, RequestError& error) {
  if (!choice) return true;
  if (choice->is_string()) {
    const std::string c = choice->get<std::string>();
    if (c == "auto") {
      req.tool_choice = ToolChoice::Auto;
    } else if (c == "none") {
      req.tool_choice = ToolChoice::None;
    } else if (c == "required") {
      if (tools.empty()) return fail(error, "tool_choice", "'required' needs at least one tool in 'tools'");
      req.tool_choice = ToolChoice::Required;
      req.forced_prefix = forced_prefix_required();
    } else {
      return fail(error, "tool_choice", "'" + c + "' is not one of 'none', 'auto', 'required'");
    }
    return true;
  }
  if (!choice->is_object()) {
    return fail(error, "tool_choice", "expected a string or an object, got " + type_name(*choice));
  }
  const ojson* type = field(*choice, "type");
  if (!type || !type->is_string() || type->get<std::string>() != "function") {
    return fail(error, "tool_choice.type", "expected \"function\"");
  }
  // Chat completions: {"type": "function", "function": {"name": X}}; responses: {"type": "function", "name": X}.
  const ojson* holder = choice;
  std::string prefix = "tool_choice";
  if (chat_shape) {
    holder = field(*choice, "function");
    prefix = "tool_choice.function";
    if (!holder || !holder->is_object()) return fail(error, prefix, "expected an object with the function's name");
  }
  const ojson* name = field(*holder, "name");
  if (!name || !name->is_string()) return fail(error, prefix + ".name", "expected a string");
  const std::string n = name->get<std::string>();
  bool found = false;
  for (const FunctionTool& t : tools) found = found || t.name == n;
  if (!found) return fail(error, prefix + ".name", "no tool named '" + n + "' in 'tools'");
  req.tool_choice = ToolChoice::Named;
  req.tool_choice_name = n;
  req.forced_prefix = forced_prefix_named(n);
  return true;
}

bool parse_effort(const ojson* v, const std::string& param, harmony::ReasoningEffort& out, RequestError& error) {
  out = harmony::ReasoningEffort::Medium;
  if (!v) return true;
  if (!v->is_string()) return fail(error, param, "expected \"low\", \"medium\" or \"high\", got " + type_name(*v));
  const std::string e = v->get<std::string>();
  const auto parsed = harmony::parse_reasoning_effort(e);
  if (!parsed) return fail(error, param, "'" + e + "' is not one of 'low', 'medium', 'high'");
  out = *parsed;
  return true;
}

bool parse_request_start(const ojson& body, ApiRequest& req, RequestError& error) {
  if (!body.is_object()) return fail(error, "", "the request body must be a JSON object, got " + type_name(body));
  if (const ojson* model = field(body, "model")) {
    if (!model->is_string()) return fail(error, "model", "expected a string, got " + type_name(*model));
    req.model = model->get<std::string>();
  }
  return true;
}

void set_conversation(ApiRequest& req, harmony::ReasoningEffort effort, const MappingOptions& opts,
                      const std::vector<std::string>& instructions, const std::vector<FunctionTool>& tools,
                      std::vector<Message> turns) {
  harmony::Conversation& conv = req.conversation;
  conv = {};
  Message sys;
  sys.role = Role::System;
  harmony::Content sc;
  sc.kind = harmony::Content::Kind::System;
  sc.system = harmony::SystemContent::defaults();
  sc.system.reasoning_effort = effort;
  sc.system.conversation_start_date = conversation_date(opts);
  sys.content.push_back(std::move(sc));
  conv.messages.push_back(std::move(sys));

  const bool with_tools = req.tool_choice != ToolChoice::None && !tools.empty();
  if (!instructions.empty() || with_tools) {
    Message dev;
    dev.role = Role::Developer;
    harmony::Content dc;
    dc.kind = harmony::Content::Kind::Developer;
    if (!instructions.empty()) {
      // Several system/developer messages: their texts in order, a blank line between.
      std::string joined;
      for (size_t i = 0; i < instructions.size(); ++i) joined += (i ? "\n\n" : "") + instructions[i];
      dc.developer.instructions = std::move(joined);
    }
    if (with_tools) {
      harmony::ToolNamespace ns;
      ns.name = "functions";
      for (const FunctionTool& t : tools) ns.tools.push_back({t.name, t.description, t.parameters});
      dc.developer.tools = harmony::ToolNamespaces{{"functions", std::move(ns)}};
    }
    dev.content.push_back(std::move(dc));
    conv.messages.push_back(std::move(dev));
  }
  for (Message& m : turns) conv.messages.push_back(std::move(m));
}

std::string conversation_date(const MappingOptions& opts) {
  if (!opts.conversation_date.empty()) return opts.conversation_date;
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[16];
  std::strftime(buf, sizeof buf, "%Y-%m-%d", &tm);
  return buf;
}

Message assistant_message(const std::string& channel, std::string text) {
  Message m = Message::from_text(Role::Assistant, std::move(text));
  m.channel = channel;
  return m;
}

Message tool_call_message(const std::string& name, std::string arguments) {
  Message m = assistant_message("commentary", std::move(arguments));
  m.recipient = "functions." + name;
  m.content_type = "<|constrain|>json";
  return m;
}

Message tool_result_message(const std::string& name, std::string output) {
  Message m = Message::from_text(Role::Tool, std::move(output));
  m.name = "functions." + name;
  m.recipient = "assistant";
  m.channel = "commentary";
  return m;
}

// The model writes " to=functions.NAME" as [" to", "=", "functions", ".NAME"...]: forcing up to
// "functions" ends on a token boundary, and the model writes ".NAME <|constrain|>json<|message|>".
std::string forced_prefix_required() { return "<|channel|>commentary to=functions"; }

std::string forced_prefix_named(const std::string& name) {
  return "<|channel|>commentary to=functions." + name + " <|constrain|>json<|message|>";
}

}  // namespace gptoss::serve::detail
