// The CLI's one error path. Every failure a user sees is one line on stderr, "gptoss: error: ...",
// with exit code 1 (a run failed) or 2 (the command line is wrong); numbers and names echoed from the
// input are shortened so that a 300-digit argument does not come back whole.
#pragma once

#include <string>
#include <string_view>

#include "core/status.h"

namespace gptoss::cli {

inline constexpr std::string_view kErrorPrefix = "gptoss: error: ";
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;

// Prints "gptoss: error: <message>" as one line and returns kExitFailure.
int fail(const Status& s);
// The same for a wrong command line; returns kExitUsage.
int fail_usage(std::string_view message);

// `message` on one line (newlines and tabs become spaces), each run of more than 24 digits cut to its start
// and a count, the whole at most 800 characters.
std::string one_line(std::string_view message);
// A user-given value for an error message, in quotes: at most 64 characters, then cut like one_line.
std::string quote_value(std::string_view value);

}  // namespace gptoss::cli
