// Options shared by every command that runs the model (verify, logits, generate, chat, bench):
// --model, --device, --threads, --cpu-math, --gpu-memory-limit, --max-context, --kv-precision, and the bounds every
// numeric option of the CLI is held to (apply_option_bounds).
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <string>

#include "cli/errors.h"
#include "cli/input.h"
#include "gptoss/gptoss.h"

namespace gptoss::cli {

inline constexpr int kDefaultContext = 4096;  // chat's KV cache when --max-context is not given

struct RunOptions {
  std::string model;
  std::string device;  // empty: cuda when available, else cpu
  int threads = 0;     // 0: all cores
  std::string gpu_memory_limit;
  std::string gpu_bf16 = "packed";
  std::string cpu_math = "fast";
  // --max-context as given; 0 when not given. A limit: a request that needs more fails.
  int max_context_limit = 0;
  // What the command asks for without a limit (require_context sets it); load_model caps it at the
  // model's max_position_embeddings.
  int max_context = kDefaultContext;
  int max_batch = 0;  // 0: not given (kDefaultMaxBatch; bench: the prompt, up to 2048)
  std::string kv_precision = "f32";
  bool test_only = false;
  int context_needed = 0;  // exact positions the request needs (require_context); checked against the model
};

// Adds the shared options to a subcommand.
void add_run_options(CLI::App* app, RunOptions& o);

// The request needs `needed` positions (prompt + generated tokens): an error naming `what` when that is
// more than --max-context allows; otherwise the KV cache is sized to it when --max-context was not given.
Status require_context(RunOptions& o, int64_t needed, std::string_view what);

// Opens the model and a session from the options.
struct Loaded {
  std::unique_ptr<Model> model;
  std::unique_ptr<Session> session;
};
Result<Loaded> load_model(const RunOptions& o);

// One range per option name, the same in every command that has the option (--threads 1..1024,
// --max-context, --max-batch, --max-tokens/-n, --top-k, --seed, bench's sizes; --temperature and --top-p
// finite), applied to all of app's subcommands; called once after every command has registered.
void apply_option_bounds(CLI::App& app);
// An integer option in [lo, hi], its value cut in the error message.
CLI::Validator int_range(int64_t lo, int64_t hi);

}  // namespace gptoss::cli
