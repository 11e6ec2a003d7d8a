// gptoss: convert, inspect and run gpt-oss checkpoints. Each subcommand lives in its own cmd_*.cpp.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <new>
#include <system_error>
#include <vector>

#include "cli/command.h"
#include "cli/errors.h"
#include "cli/run_options.h"

namespace gptoss::cli {

namespace {
std::vector<std::pair<int, CommandSetup>>& registry() {
  static std::vector<std::pair<int, CommandSetup>> r;
  return r;
}

// The subcommand the command line named (for "see 'gptoss generate --help'").
std::string parsed_command(const CLI::App& app) {
  const auto subs = app.get_subcommands();
  return subs.empty() ? std::string("gptoss") : "gptoss " + subs.front()->get_name();
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
  app.option_defaults()->always_capture_default();  // --help shows each option's default
  auto& reg = registry();
  std::stable_sort(reg.begin(), reg.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  CommandContext ctx;
  for (auto& [order, setup] : reg) setup(app, ctx);
  apply_option_bounds(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version: stdout, exit 0
    if (app.get_subcommands().empty() && argc > 1 && argv[1][0] != '-')
      return fail_usage("unknown command " + quote_value(argv[1]) + " (see 'gptoss --help')");
    return fail_usage(std::string(e.what()) + " (see '" + parsed_command(app) + " --help')");
  }
  if (!ctx.run) return 0;
  // The library returns Status; what can still throw here is the standard library running out of memory
  // or threads (a huge --threads under a memory limit).
  try {
    return ctx.run();
  } catch (const std::bad_alloc&) {
    return fail(gptoss::Error("out of memory"));
  } catch (const std::system_error& e) {
    return fail(gptoss::Error("the system refused: {} (too many threads for the memory limit? try a smaller --threads)",
                              e.what()));
  } catch (const std::exception& e) {
    return fail(gptoss::Error("{}", e.what()));
  }
}
