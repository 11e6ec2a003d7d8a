// Options shared by every command that runs the model (verify, logits, generate, chat, bench):
// --model, --device, --threads, --gpu-memory-limit, --max-context, --kv-precision.
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <string>

#include "gptoss/gptoss.h"

namespace gptoss::cli {

struct RunOptions {
  std::string model;
  std::string device;  // empty: cuda when available, else cpu
  int threads = 0;
  std::string gpu_memory_limit;
  std::string gpu_bf16 = "packed";
  int max_context = 4096;
  int max_batch = 128;
  std::string kv_precision = "f32";
  bool test_only = false;
};

// Adds the shared options to a subcommand.
void add_run_options(CLI::App* app, RunOptions& o);

// Opens the model and a session from the options; prints a one-line error and returns nullptr on failure.
struct Loaded {
  std::unique_ptr<Model> model;
  std::unique_ptr<Session> session;
};
Result<Loaded> load_model(const RunOptions& o);

// Parses "1,2,3" into token ids.
Result<std::vector<int32_t>> parse_token_list(const std::string& s);

int fail(const Status& s);  // prints "gptoss: error: ..." and returns 1

}  // namespace gptoss::cli
