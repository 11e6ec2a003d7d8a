// What the commands read from the user besides options: token-id lists and text from a file or stdin.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace gptoss::cli {

// The one token-list syntax of every command: non-negative ids separated by commas and/or whitespace,
// optionally inside [ ] (so that tokenize's output reads back): "1,2,3", "1 2 3", "[1, 2, 3]". An empty
// list is valid here; `what` names the source in errors ("--tokens", a file name).
Result<std::vector<int32_t>> parse_token_list(std::string_view s, std::string_view what = "--tokens");

// A file's bytes, or standard input for "-" or an empty path.
Result<std::string> read_input(const std::string& path);

}  // namespace gptoss::cli
