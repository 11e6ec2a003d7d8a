// gptoss: convert, inspect and run gpt-oss checkpoints. Each subcommand lives in its own cmd_*.cpp.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <vector>

#include "cli/command.h"

namespace gptoss::cli {

namespace {
std::vector<std::pair<int, CommandSetup>>& registry() {
  static std::vector<std::pair<int, CommandSetup>> r;
  return r;
}
}  // namespace

bool register_command(int order, CommandSetup setup) {
  registry().emplace_back(order, std::move(setup));
  return true;
}

bool stderr_is_tty() { return isatty(STDERR_FILENO) == 1; }
bool stdout_is_tty() { return isatty(STDOUT_FILENO) == 1; }

}  // namespace gptoss::cli

int main(int argc, char** argv) {
  using namespace gptoss::cli;
  CLI::App app{
      "gptoss: convert and run OpenAI's gpt-oss models (Hugging Face or original/ checkpoints) on CPU and NVIDIA "
      "GPUs.\nRun 'gptoss COMMAND --help' for a command's options."};
  app.require_subcommand(1);
  app.set_version_flag("--version", "gptoss 0.1.0");
  auto& reg = registry();
  std::stable_sort(reg.begin(), reg.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  CommandContext ctx;
  for (auto& [order, setup] : reg) setup(app, ctx);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return ctx.run ? ctx.run() : 0;
}
