#include "cli/run_options.h"

#include <cstdio>

namespace gptoss::cli {

void add_run_options(CLI::App* app, RunOptions& o) {
  app->add_option("--model,-m", o.model, "Model directory: converted, Hugging Face, or original/ layout")
      ->required();
  app->add_option("--device", o.device, "cpu or cuda (default: cuda when a GPU is present, else cpu)")
      ->check(CLI::IsMember({"cpu", "cuda"}));
  app->add_option("--threads", o.threads, "CPU threads (default: all cores)")->check(CLI::NonNegativeNumber);
  app->add_option("--gpu-memory-limit", o.gpu_memory_limit,
                  "Most GPU memory to use: bytes with a unit (20GiB, 500MB) or a fraction of the card (0.5)");
  app->add_option("--gpu-bf16", o.gpu_bf16,
                  "CUDA storage of the bf16 projections and output head: packed (lossless, about 12 bits per weight, "
                  "faster decoding) or plain")
      ->check(CLI::IsMember({"packed", "plain"}));
  app->add_option("--max-context", o.max_context, "Context length the KV cache is sized for")
      ->check(CLI::PositiveNumber);
  app->add_option("--kv-precision", o.kv_precision, "KV cache precision: f32 (exact) or bf16 (half the memory)")
      ->check(CLI::IsMember({"f32", "bf16"}));
  app->add_option("--max-batch", o.max_batch, "Tokens per forward step: prompts are prefilled in chunks of this size")
      ->check(CLI::Range(1, 8192));
  app->add_flag("--test-only", o.test_only, "Use only the first 2 layers (quick checks on a full checkpoint)");
}

namespace {
Status parse_memory(const std::string& s, BackendOptions& b) {
  if (s.empty()) return {};
  size_t used = 0;
  double v = 0;
  try {
    v = std::stod(s, &used);
  } catch (...) {
    return Error("--gpu-memory-limit '{}': expected a size like 20GiB or a fraction like 0.5", s);
  }
  std::string unit = s.substr(used);
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
  else return Error("--gpu-memory-limit '{}': unknown unit '{}' (B, MB, GB, MiB, GiB)", s, unit);
  if (v <= 0) return Error("--gpu-memory-limit '{}' must be positive", s);
  b.gpu_memory_limit = size_t(v * mult);
  return {};
}
}  // namespace

Result<Loaded> load_model(const RunOptions& o) {
  BackendOptions b;
  b.device = o.device.empty() ? (cuda_available() ? "cuda" : "cpu") : o.device;
  b.threads = o.threads;
  b.gpu_pack_bf16 = o.gpu_bf16 != "plain";
  GPTOSS_TRY(parse_memory(o.gpu_memory_limit, b));
  CheckpointOptions co;
  if (o.test_only) co.max_layers = 2;
  Loaded l;
  GPTOSS_ASSIGN(l.model, Model::open(o.model, b, co));
  SessionOptions so;
  so.max_context = std::min(o.max_context, l.model->config().max_position_embeddings);
  so.max_batch = o.max_batch;
  so.kv_precision = o.kv_precision == "bf16" ? KvPrecision::BF16 : KvPrecision::F32;
  GPTOSS_ASSIGN(l.session, Session::create(*l.model, so));
  return l;
}

Result<std::vector<int32_t>> parse_token_list(const std::string& s) {
  std::vector<int32_t> out;
  size_t i = 0;
  while (i < s.size()) {
    size_t j = s.find(',', i);
    std::string tok = s.substr(i, j == std::string::npos ? std::string::npos : j - i);
    while (!tok.empty() && tok.front() == ' ') tok.erase(tok.begin());
    while (!tok.empty() && tok.back() == ' ') tok.pop_back();
    char* end = nullptr;
    long long v = std::strtoll(tok.c_str(), &end, 10);
    if (tok.empty() || *end != '\0' || v < 0 || v > INT32_MAX)
      return Error("--tokens: '{}' is not a token id (expected comma-separated non-negative integers)", tok);
    out.push_back(int32_t(v));
    if (j == std::string::npos) break;
    i = j + 1;
  }
  if (out.empty()) return Error("--tokens: no token ids given");
  return out;
}

int fail(const Status& s) {
  std::fprintf(stderr, "gptoss: error: %s\n", s.message().c_str());
  return 1;
}

}  // namespace gptoss::cli
