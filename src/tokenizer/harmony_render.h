// Text of the system and developer messages of the Harmony format, as openai-harmony writes them
// (sections joined by a blank line; function tools as a TypeScript-like namespace).
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "tokenizer/harmony.h"

namespace gptoss::harmony {

std::string render_system_content(const SystemContent& sys, bool conversation_has_function_tools);
std::string render_developer_content(const DeveloperContent& dev);
// "# Tools" and one "## namespace" section per namespace, in key order.
std::string render_tools_section(const ToolNamespaces& tools);
// A JSON schema as a TypeScript type; `indent` prefixes nested lines.
std::string json_schema_to_typescript(const nlohmann::ordered_json& schema, const std::string& indent);

}  // namespace gptoss::harmony
