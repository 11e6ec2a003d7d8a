// CLI subcommands register themselves here, one file per command group (cmd_*.cpp), so that adding
// a command touches no shared file. main.cpp builds the CLI11 app from the registry.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <string>

namespace gptoss::cli {

// A command's setup adds its subcommand to `app` and sets `run` to what executes it; `run` returns
// the process exit code.
struct CommandContext {
  std::function<int()> run;
};

using CommandSetup = std::function<void(CLI::App& app, CommandContext& ctx)>;

// `order` sorts the subcommands in --help (convert=10, inspect=20, verify=30, ...).
bool register_command(int order, CommandSetup setup);

// True when stderr is a terminal (progress bars, colours).
bool stderr_is_tty();
bool stdout_is_tty();

}  // namespace gptoss::cli

#define GPTOSS_CLI_CONCAT_(a, b) a##b
#define GPTOSS_CLI_CONCAT(a, b) GPTOSS_CLI_CONCAT_(a, b)
#define GPTOSS_REGISTER_COMMAND(order, fn) \
  static const bool GPTOSS_CLI_CONCAT(gptoss_cmd_registered_, __LINE__) = ::gptoss::cli::register_command(order, fn)
