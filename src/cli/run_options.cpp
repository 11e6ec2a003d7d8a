#include "cli/run_options.h"

#include <cmath>
#include <cstdio>
#include <limits>

#include "model/backend.h"

namespace gptoss::cli {

namespace {
constexpr int64_t kMaxPositions = 1 << 20;  // above every gpt-oss max_position_embeddings (131072)

}  // namespace

// "--opt: 'x' is not ..." comes from CLI11 (it prefixes the option's name); the value is cut by quote_value().
CLI::Validator int_range(int64_t lo, int64_t hi) {
  return CLI::Validator(
      [lo, hi](std::string& s) -> std::string {
        size_t i = s.size() > 1 && (s[0] == '-' || s[0] == '+') ? 1 : 0;
        bool ok = i < s.size();
        int64_t v = 0;
        for (; ok && i < s.size(); ++i) {
          const char c = s[i];
          if (c < '0' || c > '9' || v > (INT64_MAX - 9) / 10) ok = false;
          else v = v * 10 + (c - '0');
        }
        if (ok && s[0] == '-') v = -v;
        if (ok && v >= lo && v <= hi) return {};
        return fmt::format("{} is not an integer in {}..{}", quote_value(s), lo, hi);
      },
      fmt::format("INT in {}..{}", lo, hi));
}

namespace {
CLI::Validator unsigned_64() {
  return CLI::Validator(
      [](std::string& s) -> std::string {
        uint64_t v = 0;
        bool ok = !s.empty();
        for (char c : s) {
          if (c < '0' || c > '9' || v > (UINT64_MAX - uint64_t(c - '0')) / 10) {
            ok = false;
            break;
          }
          v = v * 10 + uint64_t(c - '0');
        }
        return ok ? std::string() : fmt::format("{} is not an integer in 0..2^64-1", quote_value(s));
      },
      "UINT64");
}

// A finite number in [lo, hi] (lo excluded when lo_open).
CLI::Validator finite_range(double lo, bool lo_open, double hi) {
  return CLI::Validator(
      [=](std::string& s) -> std::string {
        char* end = nullptr;
        const double v = s.empty() ? NAN : std::strtod(s.c_str(), &end);
        const bool ok = end && *end == '\0' && std::isfinite(v) && (lo_open ? v > lo : v >= lo) && v <= hi;
        return ok ? std::string()
                  : fmt::format("{} is not a number in {}{}, {}]", quote_value(s), lo_open ? "(" : "[", lo, hi);
      },
      fmt::format("FLOAT in {}{}, {}]", lo_open ? "(" : "[", lo, hi));
}

Status parse_memory(const std::string& s, BackendOptions& b) {
  if (s.empty()) return {};
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  if (end == s.c_str() || !std::isfinite(v))
    return Error("--gpu-memory-limit {}: expected a size like 20GiB or a fraction like 0.5", quote_value(s));
  const std::string unit(end);
  if (unit.empty() && v > 0 && v <= 1) {
    b.gpu_memory_fraction = v;
    return {};
  }
  double mult = 1;
  if (unit == "" || unit == "B") mult = 1;
  else if (unit == "KB") mult = 1e3;
  else if (unit == "MB") mult = 1e6;
  else if (unit == "GB") mult = 1e9;
  else if (unit == "KiB") mult = 1024.0;
  else if (unit == "MiB") mult = 1024.0 * 1024;
  else if (unit == "GiB") mult = 1024.0 * 1024 * 1024;
  else return Error("--gpu-memory-limit {}: unknown unit {} (B, KB, MB, GB, KiB, MiB, GiB)", quote_value(s),
                    quote_value(unit));
  if (v <= 0 || v * mult >= 1e15) return Error("--gpu-memory-limit {} must be positive and below 1 PB", quote_value(s));
  b.gpu_memory_limit = size_t(v * mult);
  return {};
}
}  // namespace

void add_run_options(CLI::App* app, RunOptions& o) {
  app->add_option("--model,-m", o.model, "Model directory: converted, Hugging Face, or original/ layout")
      ->required();
  app->add_option("--device", o.device, "cpu or cuda (default: cuda when a GPU is present, else cpu)")
      ->check(CLI::IsMember({"cpu", "cuda"}));
  app->add_option("--threads", o.threads, "CPU threads (default: all cores)")->default_str("");
  app->add_option("--cpu-math", o.cpu_math,
                  "CPU matrix products: fast (int16 activations for the MXFP4 experts in decode, weights decoded once "
                  "per prefill step; logits within 2e-4 relative of exact on the test models) or exact (float32 "
                  "throughout)")
      ->check(CLI::IsMember({"fast", "exact"}))
      ->capture_default_str();
  app->add_option("--gpu-memory-limit", o.gpu_memory_limit,
                  "Most GPU memory to use: bytes with a unit (20GiB, 500MB) or a fraction of the card (0.5)");
  app->add_option("--gpu-bf16", o.gpu_bf16,
                  "CUDA storage of the bf16 projections and output head: packed (lossless, about 12 bits per weight, "
                  "faster decoding) or plain")
      ->check(CLI::IsMember({"packed", "plain"}));
  app->add_option("--max-context", o.max_context_limit,
                  "Most positions (prompt + generated tokens) the KV cache holds; a request that needs more fails. "
                  "Default: what the request needs (generate --tokens, logits, bench), at least 4096 for chat and "
                  "generate --prompt; never more than the model's max_position_embeddings")
      ->default_str("");
  app->add_option("--kv-precision", o.kv_precision, "KV cache precision: f32 (exact) or bf16 (half the memory)")
      ->check(CLI::IsMember({"f32", "bf16"}));
  app->add_option("--max-batch", o.max_batch,
                  "Tokens per forward step: prompts are prefilled in chunks of this size (default: 128; bench: the "
                  "prompt, up to 2048)")
      ->default_str("");
  app->add_flag("--test-only", o.test_only, "Use only the first 2 layers (quick checks on a full checkpoint)");
}

Status require_context(RunOptions& o, int64_t needed, std::string_view what) {
  if (o.max_context_limit > 0 && needed > o.max_context_limit)
    return Error("{} needs {} positions but --max-context is {}", what, needed, o.max_context_limit);
  if (needed > kMaxPositions)
    return Error("{} needs {} positions, more than any gpt-oss model has ({})", what, needed, kMaxPositions);
  o.context_needed = int(needed);
  o.max_context = int(needed);
  return {};
}

Result<Loaded> load_model(const RunOptions& o) {
  BackendOptions b;
  b.device = o.device.empty() ? (cuda_usable() ? "cuda" : "cpu") : o.device;
  b.threads = o.threads;
  b.gpu_pack_bf16 = o.gpu_bf16 != "plain";
  b.cpu_math = o.cpu_math == "exact" ? CpuMath::Exact : CpuMath::Fast;
  GPTOSS_TRY(parse_memory(o.gpu_memory_limit, b));
  CheckpointOptions co;
  if (o.test_only) co.max_layers = 2;
  Loaded l;
  GPTOSS_ASSIGN(l.model, Model::open(o.model, b, co));
  const int model_max = l.model->config().max_position_embeddings;
  if (o.max_context_limit > model_max)
    return Error("--max-context {} is more than the model's max_position_embeddings ({})", o.max_context_limit,
                 model_max);
  if (o.context_needed > model_max)
    return Error("the request needs {} positions, more than the model's max_position_embeddings ({})",
                 o.context_needed, model_max);
  SessionOptions so;
  so.max_context = o.max_context_limit > 0 ? o.max_context_limit : std::min(o.max_context, model_max);
  so.max_batch = o.max_batch > 0 ? o.max_batch : kDefaultMaxBatch;
  so.kv_precision = o.kv_precision == "bf16" ? KvPrecision::BF16 : KvPrecision::F32;
  GPTOSS_ASSIGN(l.session, Session::create(*l.model, so));
  return l;
}

void apply_option_bounds(CLI::App& app) {
  const std::pair<const char*, CLI::Validator> bounds[] = {
      {"--threads", int_range(1, 1024)},
      {"--max-context", int_range(1, kMaxPositions)},
      {"--max-batch", int_range(1, 8192)},
      {"--max-tokens", int_range(1, kMaxPositions)},
      {"--top-k", int_range(0, 1 << 20)},
      {"--seed", unsigned_64()},
      {"--temperature", finite_range(0, false, 1e6)},
      {"--top-p", finite_range(0, true, 1)},
      {"--prompt-tokens", int_range(1, kMaxPositions)},
      {"--gen-tokens", int_range(1, kMaxPositions)},
      {"--context", int_range(0, kMaxPositions)},
      {"--repeats", int_range(1, 1000)},
  };
  for (CLI::App* sub : app.get_subcommands([](CLI::App*) { return true; })) {
    for (const auto& [name, v] : bounds) {
      if (CLI::Option* opt = sub->get_option_no_throw(name)) opt->check(v);
    }
  }
}

}  // namespace gptoss::cli
