// CompletionResult / StreamEvent -> the JSON shapes of chat completions and responses.
#include <random>

#include "serve/openai_api.h"

namespace gptoss::serve {

using ojson = nlohmann::ordered_json;

namespace {

// Item ids ("rs_", "msg_", "fc_" + 24 hex digits); unique enough within a server's lifetime.
std::string random_suffix() {
  static constexpr char kHex[] = "0123456789abcdef";
  thread_local std::mt19937_64 rng{std::random_device{}()};
  std::string s;
  for (int i = 0; i < 24; ++i) s += kHex[rng() % 16];
  return s;
}

}  // namespace

ojson chat_message_json(const CompletionResult& r) {
  ojson m;
  m["role"] = "assistant";
  // Content is null only when the message is all tool calls (the API's shape for a pure call).
  m["content"] = r.content.empty() && !r.tool_calls.empty() ? ojson(nullptr) : ojson(r.content);
  if (!r.reasoning.empty()) {
    m["reasoning_content"] = r.reasoning;
    m["reasoning"] = r.reasoning;
  }
  if (!r.tool_calls.empty()) {
    ojson calls = ojson::array();
    for (const ToolCall& c : r.tool_calls) {
      calls.push_back({{"id", c.id}, {"type", "function"}, {"function", {{"name", c.name}, {"arguments", c.arguments}}}});
    }
    m["tool_calls"] = std::move(calls);
  }
  return m;
}

std::string chat_finish_reason(const CompletionResult& r, bool hit_length) {
  if (hit_length) return "length";
  return r.tool_calls.empty() ? "stop" : "tool_calls";
}

ojson chat_delta_json(const StreamEvent& e, const CompletionResult& r) {
  ojson d = ojson::object();
  switch (e.kind) {
    case StreamEvent::Kind::ReasoningDelta:
      d["reasoning_content"] = e.text;
      d["reasoning"] = e.text;
      break;
    case StreamEvent::Kind::ContentDelta:
      d["content"] = e.text;
      break;
    case StreamEvent::Kind::ToolCallBegin: {
      const bool known = e.tool_index >= 0 && static_cast<size_t>(e.tool_index) < r.tool_calls.size();
      ojson call;
      call["index"] = e.tool_index;
      call["id"] = known ? r.tool_calls[static_cast<size_t>(e.tool_index)].id : "";
      call["type"] = "function";
      call["function"] = {{"name", e.text}, {"arguments", ""}};
      d["tool_calls"] = ojson::array({call});
      break;
    }
    case StreamEvent::Kind::ToolCallArgumentsDelta: {
      ojson call;
      call["index"] = e.tool_index;
      call["function"] = {{"arguments", e.text}};
      d["tool_calls"] = ojson::array({call});
      break;
    }
  }
  return d;
}

ojson responses_output_json(const CompletionResult& r) {
  ojson items = ojson::array();
  if (!r.reasoning.empty()) {
    ojson item;
    item["type"] = "reasoning";
    item["id"] = "rs_" + random_suffix();
    item["summary"] = ojson::array();
    item["content"] = ojson::array({{{"type", "reasoning_text"}, {"text", r.reasoning}}});
    items.push_back(std::move(item));
  }
  if (!r.content.empty() || r.tool_calls.empty()) {
    ojson item;
    item["type"] = "message";
    item["id"] = "msg_" + random_suffix();
    item["status"] = "completed";
    item["role"] = "assistant";
    item["content"] =
        ojson::array({{{"type", "output_text"}, {"text", r.content}, {"annotations", ojson::array()}}});
    items.push_back(std::move(item));
  }
  for (const ToolCall& c : r.tool_calls) {
    ojson item;
    item["type"] = "function_call";
    item["id"] = "fc_" + random_suffix();
    item["call_id"] = c.id;
    item["name"] = c.name;
    item["arguments"] = c.arguments;
    item["status"] = "completed";
    items.push_back(std::move(item));
  }
  return items;
}

}  // namespace gptoss::serve
