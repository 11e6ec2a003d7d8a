// Text-level options and the `generate --prompt` path (chat-formatted by default, --raw for plain
// completion), shared by cmd_run.cpp (generate) and cmd_chat.cpp (chat).
#pragma once

#include <CLI/CLI.hpp>
#include <string>

#include "cli/chat_runner.h"
#include "cli/run_options.h"
#include "tokenizer/tokenizer.h"

namespace gptoss::cli {

struct TextOptions {
  std::string tokenizer;  // tokenizer.json or .tiktoken; default: the model directory's tokenizer.json
  std::string system;     // developer instructions
  std::string reasoning_effort = "medium";
  bool show_reasoning = false;
  bool raw = false;
  bool json = false;  // generate --json: one JSON object (text, reasoning, token counts, timings), no streaming
  int max_tokens = 2048;
  SamplerOptions sampler{.temperature = 1.0f};
};

void add_text_options(CLI::App* app, TextOptions& t);
Result<Tokenizer> load_tokenizer(const TextOptions& t, const std::string& model_dir);
// The chat settings the options give (chat, and generate --prompt without --raw).
Result<ChatSettings> chat_settings(const TextOptions& t);
// Runs `generate --prompt`: returns the process exit code.
int run_prompt(RunOptions& o, const TextOptions& t, const std::string& prompt);

}  // namespace gptoss::cli
