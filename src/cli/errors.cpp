#include "cli/errors.h"

#include <cstdio>

namespace gptoss::cli {

namespace {
constexpr size_t kMaxDigits = 24, kMaxValue = 64, kMaxLine = 800;

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_space(char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t' || c == '\v' || c == '\f'; }

// Appends s, shortened to its first `keep` characters and a count when longer than `limit`.
void append_cut(std::string& out, std::string_view s, size_t limit, size_t keep, const char* what) {
  if (s.size() <= limit) {
    out += s;
  } else {
    out += s.substr(0, keep);
    out += "... (" + std::to_string(s.size()) + " " + what + ")";
  }
}
}  // namespace

std::string one_line(std::string_view m) {
  std::string out;
  size_t i = 0;
  while (i < m.size()) {
    if (is_space(m[i])) {
      if (!out.empty() && out.back() != ' ') out += ' ';
      ++i;
      continue;
    }
    size_t j = i;
    while (j < m.size() && !is_space(m[j])) ++j;
    // Long digit runs, also inside a word ("'1234...'," or "=1234...").
    std::string_view word = m.substr(i, j - i);
    size_t k = 0;
    while (k < word.size()) {
      size_t d = k;
      while (d < word.size() && is_digit(word[d])) ++d;
      if (d > k) {
        append_cut(out, word.substr(k, d - k), kMaxDigits, 12, "digits");
        k = d;
      } else {
        out += word[k++];
      }
    }
    i = j;
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  if (out.size() > kMaxLine) out = out.substr(0, kMaxLine - 3) + "...";
  return out;
}

std::string quote_value(std::string_view value) {
  std::string v;
  append_cut(v, value, kMaxValue, 32, "characters");
  std::string out(1, '\'');
  out += one_line(v);
  out += '\'';
  return out;
}

int fail(const Status& s) {
  std::fprintf(stderr, "%.*s%s\n", int(kErrorPrefix.size()), kErrorPrefix.data(), one_line(s.message()).c_str());
  return kExitFailure;
}

int fail_usage(std::string_view message) {
  std::fprintf(stderr, "%.*s%s\n", int(kErrorPrefix.size()), kErrorPrefix.data(), one_line(message).c_str());
  return kExitUsage;
}

}  // namespace gptoss::cli
