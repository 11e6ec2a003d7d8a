// gptoss chat: an interactive Harmony chat REPL (also works with stdin not a terminal: one user
// message per line).
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <iostream>

#include "cli/chat_runner.h"
#include "cli/command.h"
#include "cli/run_options.h"
#include "cli/text_generate.h"
#include "model/model.h"

namespace gptoss::cli {

namespace {

std::atomic<bool> g_interrupt{false};
void on_sigint(int) { g_interrupt.store(true); }

const char* kDim = "\x1b[2m";
const char* kReset = "\x1b[0m";

struct ChatCmd {
  RunOptions o;
  TextOptions t;
  int run() {
    auto l = load_model(o);
    if (!l.ok()) return fail(l.status());
    auto tok = load_tokenizer(t, o.model);
    if (!tok.ok()) return fail(tok.status());
    auto cs = chat_settings(t);
    if (!cs.ok()) return fail(cs.status());
    auto runner = ChatRunner::create(*l->model, *l->session, *tok, *cs);
    if (!runner.ok()) return fail(runner.status());
    const bool tty_in = isatty(0) == 1, tty_out = stdout_is_tty();
    bool show_reasoning = t.show_reasoning || tty_out;
    struct sigaction sa{};
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, nullptr);
    if (tty_in)
      std::fprintf(stderr, "gptoss chat on %s. /reset clears the history, /reasoning shows or hides the reasoning, "
                           "/exit quits; Ctrl-C stops an answer.\n",
                   l->model->backend().name().c_str());
    std::string line;
    for (;;) {
      if (tty_in) std::fprintf(stderr, ">>> "), std::fflush(stderr);
      g_interrupt.store(false);
      if (!std::getline(std::cin, line)) {
        if (std::cin.eof()) break;
        std::cin.clear();  // interrupted read: ask again
        continue;
      }
      if (line.empty()) continue;
      if (line == "/exit" || line == "/quit") break;
      if (line == "/reset") {
        (*runner)->reset();
        std::fprintf(stderr, "(history cleared)\n");
        continue;
      }
      if (line == "/reasoning") {
        show_reasoning = !show_reasoning;
        std::fprintf(stderr, "(reasoning %s)\n", show_reasoning ? "shown" : "hidden");
        continue;
      }
      std::string last_channel;
      auto on_text = [&](const std::string& channel, const std::string& text) {
        const bool reasoning = channel != "final";
        if (reasoning && !show_reasoning) return;
        if (channel != last_channel && !last_channel.empty()) std::fputs("\n", stdout);
        last_channel = channel;
        if (reasoning && tty_out) std::fputs(kDim, stdout);
        std::fwrite(text.data(), 1, text.size(), stdout);
        if (reasoning && tty_out) std::fputs(kReset, stdout);
        std::fflush(stdout);
      };
      auto r = (*runner)->ask(line, on_text, &g_interrupt);
      std::fputs("\n", stdout);
      std::fflush(stdout);
      if (!r.ok()) {
        std::fprintf(stderr, "gptoss: error: %s\n", r.status().message().c_str());
        continue;
      }
      std::string note;
      if (r->interrupted) note += ", stopped";
      if (r->hit_limit) note += ", token limit reached";
      if (!r->parse_error.empty()) note += ", output is not valid Harmony (" + r->parse_error + ")";
      std::fprintf(stderr, "%s[%d tokens, %.1f tokens/s, prompt %d tokens in %.2f s%s]%s\n", tty_out ? kDim : "",
                   r->generated, r->decode_seconds > 0 ? r->generated / r->decode_seconds : 0.0, r->prompt_tokens,
                   r->prefill_seconds, note.c_str(), tty_out ? kReset : "");
    }
    return 0;
  }
};

}  // namespace

GPTOSS_REGISTER_COMMAND(45, [](CLI::App& app, CommandContext& ctx) {
  auto cmd = std::make_shared<ChatCmd>();
  auto* sub = app.add_subcommand("chat", "Interactive chat in the Harmony format (reads lines from stdin)");
  add_run_options(sub, cmd->o);
  add_text_options(sub, cmd->t);
  sub->callback([cmd, &ctx] { ctx.run = [cmd] { return cmd->run(); }; });
});

}  // namespace gptoss::cli
