// openai-harmony's Conversation JSON (Conversation.to_json / from_json) ⇄ our structs.
// Shape: {"messages": [{"role": "user", "name": null, "content": [{"type": "text", "text": "…"}],
// "channel"?: "…", "recipient"?: "…", "content_type"?: "…"}]}; content items of type
// "system_content" and "developer_content" carry the SystemContent / DeveloperContent fields.
#include <algorithm>
#include <cctype>

#include "tokenizer/harmony.h"

namespace gptoss::harmony {

namespace {

using ojson = nlohmann::ordered_json;

// A string field that may be absent or null.
Result<std::optional<std::string>> opt_string(const ojson& obj, const char* key, std::string_view where) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return std::optional<std::string>();
  if (!it->is_string()) return Error("{}: \"{}\" must be a string or null", where, key);
  return std::optional<std::string>(it->get<std::string>());
}

Result<ToolNamespaces> parse_tools(const ojson& v, std::string_view where) {
  if (!v.is_object()) return Error("{}: \"tools\" must be an object of namespaces", where);
  ToolNamespaces out;
  for (const auto& [key, ns_json] : v.items()) {
    const std::string w = fmt::format("{}: tools.{}", where, key);
    if (!ns_json.is_object()) return Error("{}: expected an object", w);
    ToolNamespace ns;
    GPTOSS_ASSIGN(auto name, opt_string(ns_json, "name", w));
    ns.name = name.value_or(key);
    GPTOSS_ASSIGN(ns.description, opt_string(ns_json, "description", w));
    if (auto t = ns_json.find("tools"); t != ns_json.end() && !t->is_null()) {
      if (!t->is_array()) return Error("{}: \"tools\" must be an array", w);
      for (const ojson& tj : *t) {
        if (!tj.is_object()) return Error("{}: a tool must be an object", w);
        ToolDescription tool;
        GPTOSS_ASSIGN(auto tname, opt_string(tj, "name", w));
        if (!tname) return Error("{}: a tool has no \"name\"", w);
        tool.name = *tname;
        GPTOSS_ASSIGN(auto tdesc, opt_string(tj, "description", w));
        tool.description = tdesc.value_or("");
        if (auto p = tj.find("parameters"); p != tj.end() && !p->is_null()) tool.parameters = *p;
        ns.tools.push_back(std::move(tool));
      }
    }
    out[key] = std::move(ns);
  }
  return out;
}

Result<SystemContent> parse_system_content(const ojson& c, std::string_view where) {
  SystemContent s;
  GPTOSS_ASSIGN(s.model_identity, opt_string(c, "model_identity", where));
  GPTOSS_ASSIGN(s.conversation_start_date, opt_string(c, "conversation_start_date", where));
  GPTOSS_ASSIGN(s.knowledge_cutoff, opt_string(c, "knowledge_cutoff", where));
  GPTOSS_ASSIGN(auto effort, opt_string(c, "reasoning_effort", where));
  if (effort) {
    s.reasoning_effort = parse_reasoning_effort(*effort, /*ignore_case=*/true);
    if (!s.reasoning_effort) return Error("{}: reasoning_effort '{}', expected Low, Medium or High", where, *effort);
  }
  if (auto cc = c.find("channel_config"); cc != c.end() && !cc->is_null()) {
    if (!cc->is_object()) return Error("{}: channel_config must be an object", where);
    ChannelConfig cfg;
    if (auto vc = cc->find("valid_channels"); vc != cc->end() && !vc->is_null()) {
      if (!vc->is_array()) return Error("{}: valid_channels must be an array", where);
      for (const ojson& ch : *vc) {
        if (!ch.is_string()) return Error("{}: valid_channels must hold strings", where);
        cfg.valid_channels.push_back(ch.get<std::string>());
      }
    }
    if (auto req = cc->find("channel_required"); req != cc->end() && !req->is_null()) {
      if (!req->is_boolean()) return Error("{}: channel_required must be a boolean", where);
      cfg.channel_required = req->get<bool>();
    }
    s.channel_config = std::move(cfg);
  }
  if (auto t = c.find("tools"); t != c.end() && !t->is_null()) {
    GPTOSS_ASSIGN(s.tools, parse_tools(*t, where));
  }
  return s;
}

Result<DeveloperContent> parse_developer_content(const ojson& c, std::string_view where) {
  DeveloperContent d;
  GPTOSS_ASSIGN(d.instructions, opt_string(c, "instructions", where));
  if (auto t = c.find("tools"); t != c.end() && !t->is_null()) {
    GPTOSS_ASSIGN(d.tools, parse_tools(*t, where));
  }
  return d;
}

Result<Message> parse_message(const ojson& mj, std::string_view where) {
  if (!mj.is_object()) return Error("{}: expected an object", where);
  Message m;
  GPTOSS_ASSIGN(auto role, opt_string(mj, "role", where));
  if (!role) return Error("{}: no \"role\"", where);
  const auto r = parse_role(*role);
  if (!r) return Error("{}: unknown role '{}', expected user, assistant, system, developer or tool", where, *role);
  m.role = *r;
  GPTOSS_ASSIGN(m.name, opt_string(mj, "name", where));
  GPTOSS_ASSIGN(m.channel, opt_string(mj, "channel", where));
  GPTOSS_ASSIGN(m.recipient, opt_string(mj, "recipient", where));
  GPTOSS_ASSIGN(m.content_type, opt_string(mj, "content_type", where));
  auto content = mj.find("content");
  if (content == mj.end() || content->is_null()) return m;
  if (content->is_string()) {
    Content c;
    c.text = content->get<std::string>();
    m.content.push_back(std::move(c));
    return m;
  }
  if (!content->is_array()) return Error("{}: \"content\" must be an array or a string", where);
  for (size_t i = 0; i < content->size(); ++i) {
    const ojson& cj = (*content)[i];
    const std::string w = fmt::format("{}: content {}", where, i);
    if (!cj.is_object()) return Error("{}: expected an object", w);
    GPTOSS_ASSIGN(auto type, opt_string(cj, "type", w));
    Content c;
    if (!type || *type == "text") {
      GPTOSS_ASSIGN(auto text, opt_string(cj, "text", w));
      if (!text) return Error("{}: text content without \"text\"", w);
      c.text = *text;
    } else if (*type == "system_content") {
      c.kind = Content::Kind::System;
      GPTOSS_ASSIGN(c.system, parse_system_content(cj, w));
    } else if (*type == "developer_content") {
      c.kind = Content::Kind::Developer;
      GPTOSS_ASSIGN(c.developer, parse_developer_content(cj, w));
    } else {
      return Error("{}: unknown content type '{}'", w, *type);
    }
    m.content.push_back(std::move(c));
  }
  return m;
}

ojson tools_to_json(const ToolNamespaces& tools) {
  ojson out = ojson::object();
  for (const auto& [key, ns] : tools) {
    ojson nj = {{"name", ns.name}};
    if (ns.description) nj["description"] = *ns.description;
    ojson arr = ojson::array();
    for (const ToolDescription& t : ns.tools) {
      ojson tj = {{"name", t.name}, {"description", t.description}};
      if (t.parameters) tj["parameters"] = *t.parameters;
      arr.push_back(std::move(tj));
    }
    nj["tools"] = std::move(arr);
    out[key] = std::move(nj);
  }
  return out;
}

}  // namespace

Result<Conversation> Conversation::from_json(const ojson& j) {
  const ojson* msgs = nullptr;
  if (j.is_object()) {
    auto it = j.find("messages");
    if (it == j.end() || !it->is_array()) return Error("conversation: expected a \"messages\" array");
    msgs = &*it;
  } else if (j.is_array()) {
    msgs = &j;  // a bare list of messages
  } else {
    return Error("conversation: expected an object with \"messages\"");
  }
  Conversation conv;
  for (size_t i = 0; i < msgs->size(); ++i) {
    GPTOSS_ASSIGN(Message m, parse_message((*msgs)[i], fmt::format("message {}", i)));
    conv.messages.push_back(std::move(m));
  }
  return conv;
}

Result<Conversation> Conversation::from_json_text(std::string_view json_text) {
  const ojson j = ojson::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Error("conversation: not valid JSON");
  try {
    return from_json(j);
  } catch (const nlohmann::json::exception& e) {
    return Error("conversation: unexpected JSON structure: {}", e.what());
  }
}

ojson Message::to_json() const {
  ojson j;
  j["role"] = std::string(role_name(role));
  j["name"] = name ? ojson(*name) : ojson(nullptr);
  ojson arr = ojson::array();
  for (const Content& c : content) {
    switch (c.kind) {
      case Content::Kind::Text:
        arr.push_back({{"type", "text"}, {"text", c.text}});
        break;
      case Content::Kind::System: {
        const SystemContent& s = c.system;
        ojson sj = ojson::object();
        if (s.model_identity) sj["model_identity"] = *s.model_identity;
        if (s.reasoning_effort) {
          std::string e(reasoning_effort_name(*s.reasoning_effort));
          e[0] = char(std::toupper(static_cast<unsigned char>(e[0])));  // openai-harmony's JSON: "Low"
          sj["reasoning_effort"] = e;
        }
        if (s.conversation_start_date) sj["conversation_start_date"] = *s.conversation_start_date;
        if (s.knowledge_cutoff) sj["knowledge_cutoff"] = *s.knowledge_cutoff;
        if (s.channel_config) {
          sj["channel_config"] = {{"valid_channels", s.channel_config->valid_channels},
                                  {"channel_required", s.channel_config->channel_required}};
        }
        if (s.tools) sj["tools"] = tools_to_json(*s.tools);
        sj["type"] = "system_content";
        arr.push_back(std::move(sj));
        break;
      }
      case Content::Kind::Developer: {
        ojson dj = ojson::object();
        if (c.developer.instructions) dj["instructions"] = *c.developer.instructions;
        if (c.developer.tools) dj["tools"] = tools_to_json(*c.developer.tools);
        dj["type"] = "developer_content";
        arr.push_back(std::move(dj));
        break;
      }
    }
  }
  j["content"] = std::move(arr);
  if (channel) j["channel"] = *channel;
  if (recipient) j["recipient"] = *recipient;
  if (content_type) j["content_type"] = *content_type;
  return j;
}

}  // namespace gptoss::harmony
