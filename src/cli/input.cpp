#include "cli/input.h"

#include <iostream>
#include <sstream>

#include "cli/errors.h"
#include "core/file_io.h"

namespace gptoss::cli {

namespace {
bool is_space(char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }
}  // namespace

Result<std::vector<int32_t>> parse_token_list(std::string_view s, std::string_view what) {
  auto skip_space = [&](size_t i) {
    while (i < s.size() && is_space(s[i])) ++i;
    return i;
  };
  size_t i = skip_space(0), end = s.size();
  while (end > i && is_space(s[end - 1])) --end;
  if (i < end && s[i] == '[') {
    if (s[end - 1] != ']') return Error("{}: '[' without a closing ']'", what);
    i = skip_space(i + 1);
    --end;
  }
  std::vector<int32_t> ids;
  bool need_id = false;  // after a comma
  while (true) {
    i = skip_space(i);
    if (i >= end) break;
    size_t j = i;
    while (j < end && !is_space(s[j]) && s[j] != ',') ++j;
    const std::string_view item = s.substr(i, j - i);
    if (item.empty())
      return Error("{}: empty item at offset {} (expected token ids separated by commas or spaces)", what, i);
    int64_t v = 0;
    for (char c : item) {
      if (c < '0' || c > '9' || v > INT32_MAX)
        return Error("{}: {} is not a token id (expected non-negative integers below 2^31, separated by commas or "
                     "spaces)",
                     what, quote_value(item));
      v = v * 10 + (c - '0');
    }
    if (v > INT32_MAX) return Error("{}: {} is not a token id (larger than 2^31 - 1)", what, quote_value(item));
    ids.push_back(int32_t(v));
    need_id = false;
    i = skip_space(j);
    if (i < end && s[i] == ',') {
      need_id = true;
      ++i;
    }
  }
  if (need_id) return Error("{}: a comma is not followed by a token id", what);
  return ids;
}

Result<std::string> read_input(const std::string& path) {
  if (!path.empty() && path != "-") return read_file(path);
  std::ostringstream ss;
  ss << std::cin.rdbuf();
  if (std::cin.bad()) return Error("standard input: read error");
  return ss.str();
}

}  // namespace gptoss::cli
