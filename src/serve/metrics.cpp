#include "serve/metrics.h"

#include <fmt/format.h>

namespace gptoss::serve {

void Histogram::observe(double v) {
  size_t i = 0;
  while (i < bounds.size() && v > bounds[i]) ++i;
  ++counts[i];
  sum += v;
  ++count;
}

Metrics::Metrics()
    : ttft_({0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}),
      tps_({1, 2, 5, 10, 20, 50, 100, 200, 300, 400, 500, 750, 1000}),
      tpot_({0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1}) {}

void Metrics::request(const std::string& endpoint, int status) {
  std::lock_guard lk(mu_);
  ++requests_[{endpoint, status}];
}

void Metrics::generation(double ttft_s, int completion_tokens, double decode_s) {
  std::lock_guard lk(mu_);
  if (completion_tokens > 0) ttft_.observe(ttft_s);
  if (completion_tokens > 1 && decode_s > 0) {
    tps_.observe((completion_tokens - 1) / decode_s);
    tpot_.observe(decode_s / (completion_tokens - 1));
  }
}

namespace {
void write_histogram(std::string& out, const char* name, const char* help, const Histogram& h) {
  out += fmt::format("# HELP {} {}\n# TYPE {} histogram\n", name, help, name);
  uint64_t cum = 0;
  for (size_t i = 0; i < h.bounds.size(); ++i) {
    cum += h.counts[i];
    out += fmt::format("{}_bucket{{le=\"{}\"}} {}\n", name, h.bounds[i], cum);
  }
  cum += h.counts.back();
  out += fmt::format("{}_bucket{{le=\"+Inf\"}} {}\n{}_sum {}\n{}_count {}\n", name, cum, name, h.sum, name, h.count);
}
}  // namespace

std::string Metrics::prometheus(const EngineStats& e) const {
  std::lock_guard lk(mu_);
  std::string out;
  out += "# HELP gptoss_requests_total HTTP requests by endpoint and status.\n# TYPE gptoss_requests_total counter\n";
  for (const auto& [k, n] : requests_)
    out += fmt::format("gptoss_requests_total{{endpoint=\"{}\",status=\"{}\"}} {}\n", k.first, k.second, n);
  out += fmt::format(
      "# HELP gptoss_prompt_tokens_total Prompt tokens of the requests run.\n# TYPE gptoss_prompt_tokens_total "
      "counter\ngptoss_prompt_tokens_total {}\n"
      "# HELP gptoss_prompt_tokens_reused_total Prompt tokens taken from a slot's cache.\n"
      "# TYPE gptoss_prompt_tokens_reused_total counter\ngptoss_prompt_tokens_reused_total {}\n"
      "# HELP gptoss_completion_tokens_total Tokens generated.\n# TYPE gptoss_completion_tokens_total "
      "counter\ngptoss_completion_tokens_total {}\n"
      "# HELP gptoss_queue_depth Requests waiting for a slot.\n# TYPE gptoss_queue_depth gauge\ngptoss_queue_depth {}\n"
      "# HELP gptoss_requests_running Requests holding a slot.\n# TYPE gptoss_requests_running gauge\n"
      "gptoss_requests_running {}\n"
      "# HELP gptoss_slots Slots (sessions with their own KV cache).\n# TYPE gptoss_slots gauge\ngptoss_slots {}\n",
      e.prompt_tokens, e.reused_tokens, e.completion_tokens, e.queued, e.running, e.slots);
  write_histogram(out, "gptoss_time_to_first_token_seconds", "From a request's arrival to its first token.", ttft_);
  write_histogram(out, "gptoss_decode_tokens_per_second", "Per request: tokens after the first per second.", tps_);
  write_histogram(out, "gptoss_time_per_output_token_seconds", "Per request: seconds per token after the first.",
                  tpot_);
  return out;
}

}  // namespace gptoss::serve
