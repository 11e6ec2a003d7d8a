#include "tokenizer/harmony_render.h"

#include <fmt/ranges.h>

#include <set>
#include <vector>

namespace gptoss::harmony {

namespace {

using ojson = nlohmann::ordered_json;

std::string join(const std::vector<std::string>& parts, std::string_view sep) {
  return fmt::format("{}", fmt::join(parts, sep));
}

// Rust's str::lines(): split on '\n', drop one trailing '\r' per line, no final empty line.
std::vector<std::string> lines(std::string_view s) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < s.size()) {
    size_t eol = s.find('\n', pos);
    if (eol == std::string_view::npos) eol = s.size();
    std::string_view line = s.substr(pos, eol - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    out.emplace_back(line);
    pos = eol + 1;
  }
  return out;
}

const ojson* get(const ojson& v, const char* key) {
  if (!v.is_object()) return nullptr;
  auto it = v.find(key);
  return it == v.end() ? nullptr : &*it;
}

const std::string* get_string(const ojson& v, const char* key) {
  const ojson* f = get(v, key);
  return f && f->is_string() ? f->get_ptr<const std::string*>() : nullptr;
}

// serde_json's Display: compact JSON, non-ASCII kept as is.
std::string display(const ojson& v) { return v.dump(-1, ' ', false, ojson::error_handler_t::replace); }

bool is_enum(const ojson& schema) {
  const ojson* e = get(schema, "enum");
  return e && e->is_array() && !e->empty();
}

bool is_nullable(const ojson& schema) {
  const ojson* n = get(schema, "nullable");
  return n && n->is_boolean() && n->get<bool>();
}

void add_nullable(const ojson& schema, std::string& type_str) {
  if (is_nullable(schema) && type_str.find("null") == std::string::npos) type_str += " | null";
}

// The default value in a trailing comment: a plain string quoted, an enum's string bare,
// anything else as JSON.
std::string default_comment(const ojson& schema, const ojson& def) {
  if (def.is_string() && !is_enum(schema)) return "default: \"" + def.get<std::string>() + "\"";
  if (def.is_string()) return "default: " + def.get<std::string>();
  return "default: " + display(def);
}

std::string render_object(const ojson& schema, const std::string& indent) {
  std::string out;
  if (const std::string* desc = get_string(schema, "description")) out += indent + "// " + *desc + "\n";
  out += "{\n";
  const ojson* props = get(schema, "properties");
  if (props && props->is_object()) {
    std::set<std::string> required;
    if (const ojson* req = get(schema, "required"); req && req->is_array()) {
      for (const ojson& r : *req) {
        if (r.is_string()) required.insert(r.get<std::string>());
      }
    }
    for (const auto& [key, val] : props->items()) {
      const std::string opt = required.count(key) ? "" : "?";
      if (const std::string* title = get_string(val, "title")) {
        out += indent + "// " + *title + "\n" + indent + "//\n";
      }
      const ojson* one_of = get(val, "oneOf");
      if (!one_of) {
        if (const std::string* desc = get_string(val, "description")) out += indent + "// " + *desc + "\n";
      }
      if (const ojson* ex = get(val, "examples"); ex && ex->is_array() && !ex->empty()) {
        out += indent + "// Examples:\n";
        for (const ojson& e : *ex) {
          if (e.is_string()) out += indent + "// - \"" + e.get<std::string>() + "\"\n";
        }
      }
      if (one_of && one_of->is_array()) {
        // A union property: its description above the name (unless the first variant repeats it),
        // then one "| type" line per variant.
        const std::string* prop_desc = get_string(val, "description");
        bool skip_prop_desc = false;
        if (prop_desc && !one_of->empty()) {
          const std::string* first_desc = get_string((*one_of)[0], "description");
          skip_prop_desc = first_desc && *first_desc == *prop_desc;
        }
        bool desc_above = false;
        if (!skip_prop_desc && prop_desc) {
          out += indent + "// " + *prop_desc + "\n";
          desc_above = true;
        }
        if (const ojson* def = get(val, "default")) out += indent + "// " + default_comment(val, *def) + "\n";
        out += indent + key + opt + ":\n";
        for (size_t i = 0; i < one_of->size(); ++i) {
          const ojson& variant = (*one_of)[i];
          out += indent + " | ";
          std::string type_str = json_schema_to_typescript(variant, indent + "   ");
          add_nullable(variant, type_str);
          out += type_str;
          std::vector<std::string> trailing;
          if (!(i == 0 && desc_above)) {
            const std::string* vdesc = get_string(variant, "description");
            if (vdesc && (!prop_desc || *vdesc != *prop_desc)) trailing.push_back(*vdesc);
          }
          if (const ojson* def = get(variant, "default")) trailing.push_back(default_comment(variant, *def));
          if (!trailing.empty()) out += " // " + join(trailing, " ");
          out += "\n";
        }
        out += indent + ",\n";
        continue;
      }
      out += indent + key + opt + ": ";
      std::string type_str = json_schema_to_typescript(val, indent + "    ");
      add_nullable(val, type_str);
      out += type_str + ",";
      if (!one_of) {
        if (const ojson* def = get(val, "default")) out += " // " + default_comment(val, *def);
      }
      out += "\n";
    }
  }
  out += indent + "}";
  return out;
}

}  // namespace

std::string json_schema_to_typescript(const ojson& schema, const std::string& indent) {
  if (const ojson* one_of = get(schema, "oneOf"); one_of && one_of->is_array()) {
    std::string out;
    for (const ojson& variant : *one_of) {
      out += "\n" + indent + " | ";
      std::string type_str = json_schema_to_typescript(variant, indent + "   ");
      add_nullable(variant, type_str);
      out += type_str;
      std::vector<std::string> trailing;
      if (const std::string* desc = get_string(variant, "description")) trailing.push_back(*desc);
      if (const ojson* def = get(variant, "default")) {
        // Here an enum's string default is written as JSON (quoted).
        if (def->is_string() && !is_enum(variant)) {
          trailing.push_back("default: \"" + def->get<std::string>() + "\"");
        } else {
          trailing.push_back("default: " + display(*def));
        }
      }
      if (!trailing.empty()) out += " // " + join(trailing, " ");
    }
    return out;
  }
  const ojson* type = get(schema, "type");
  if (type && type->is_array()) {
    std::vector<std::string> types;
    for (const ojson& t : *type) {
      if (!t.is_string()) continue;
      const std::string s = t.get<std::string>();
      types.push_back(s == "integer" ? "number" : s);
    }
    if (!types.empty()) return join(types, " | ");
  }
  if (type && type->is_string()) {
    const std::string t = type->get<std::string>();
    if (t == "object") return render_object(schema, indent);
    if (t == "string") {
      if (const ojson* e = get(schema, "enum"); e && e->is_array()) {
        std::vector<std::string> vals;
        for (const ojson& v : *e) {
          if (v.is_string()) vals.push_back("\"" + v.get<std::string>() + "\"");
        }
        if (!vals.empty()) return join(vals, " | ");
      }
      return "string";
    }
    if (t == "number" || t == "integer") return "number";
    if (t == "boolean") return "boolean";
    if (t == "array") {
      if (const ojson* items = get(schema, "items")) return json_schema_to_typescript(*items, indent) + "[]";
      return "Array<any>";
    }
    return "any";
  }
  return "any";
}

std::string render_tools_section(const ToolNamespaces& tools) {
  std::vector<std::string> sections{"# Tools"};
  for (const auto& [key, ns] : tools) {
    std::vector<std::string> content{"## " + ns.name + "\n"};
    if (ns.description) {
      for (const std::string& line : lines(*ns.description)) {
        content.push_back(ns.tools.empty() ? line : "// " + line);
      }
    }
    if (!ns.tools.empty()) {
      content.push_back("namespace " + ns.name + " {\n");
      for (const ToolDescription& tool : ns.tools) {
        for (const std::string& line : lines(tool.description)) content.push_back("// " + line);
        if (tool.parameters) {
          content.push_back("type " + tool.name + " = (_: " + json_schema_to_typescript(*tool.parameters, "") +
                            ") => any;\n");
        } else {
          content.push_back("type " + tool.name + " = () => any;\n");
        }
      }
      content.push_back("} // namespace " + ns.name);
    }
    sections.push_back(join(content, "\n"));
  }
  return join(sections, "\n\n");
}

std::string render_system_content(const SystemContent& sys, bool conversation_has_function_tools) {
  std::vector<std::string> sections;
  std::vector<std::string> top;
  if (sys.model_identity) top.push_back(*sys.model_identity);
  if (sys.knowledge_cutoff) top.push_back("Knowledge cutoff: " + *sys.knowledge_cutoff);
  if (sys.conversation_start_date) top.push_back("Current date: " + *sys.conversation_start_date);
  if (!top.empty()) sections.push_back(join(top, "\n"));
  if (sys.reasoning_effort) {
    sections.push_back("Reasoning: " + std::string(reasoning_effort_name(*sys.reasoning_effort)));
  }
  if (sys.tools && !sys.tools->empty()) sections.push_back(render_tools_section(*sys.tools));
  if (sys.channel_config && !sys.channel_config->valid_channels.empty()) {
    std::string header = "# Valid channels: " + join(sys.channel_config->valid_channels, ", ") + ".";
    if (sys.channel_config->channel_required) header += " Channel must be included for every message.";
    if (conversation_has_function_tools) {
      header += "\nCalls to these tools must go to the commentary channel: 'functions'.";
    }
    sections.push_back(header);
  }
  return join(sections, "\n\n");
}

std::string render_developer_content(const DeveloperContent& dev) {
  std::vector<std::string> sections;
  if (dev.instructions) {
    sections.push_back("# Instructions");
    sections.push_back(*dev.instructions);
  }
  if (dev.tools && !dev.tools->empty()) sections.push_back(render_tools_section(*dev.tools));
  return join(sections, "\n\n");
}

}  // namespace gptoss::harmony
