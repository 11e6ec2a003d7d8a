// JSON from untrusted files (config.json, index, manifest, safetensors headers): parsed strictly, and
// described briefly in error messages.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "core/status.h"

namespace gptoss {

// Deeper nesting than any of our files has; it keeps every later walk (dump, compare, copy, all
// recursive in nlohmann) far from the stack's end.
inline constexpr int kMaxJsonDepth = 64;

// Parses text that must be one JSON value, rejecting what nlohmann would accept silently: a key
// repeated in one object (nlohmann keeps one of them; the safetensors format forbids it) and nesting
// deeper than kMaxJsonDepth. `what` names the file in messages.
Result<nlohmann::json> parse_json_strict(std::string_view text, const std::string& what);

// A short, one-line description of a value for an error message, never more than about 80
// characters, computed without recursion: scalars as JSON text (long strings cut), containers by
// their kind and size ("an array of 3 elements").
std::string describe_json(const nlohmann::json& v);

}  // namespace gptoss
