// Prometheus counters of `gptoss serve` (GET /metrics, text format 0.0.4).
#pragma once

#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "serve/engine.h"

namespace gptoss::serve {

// A cumulative histogram with fixed upper bounds.
struct Histogram {
  std::vector<double> bounds;
  std::vector<uint64_t> counts;  // per bound, plus +Inf last (not cumulative; summed when written)
  double sum = 0;
  uint64_t count = 0;
  explicit Histogram(std::vector<double> b) : bounds(std::move(b)), counts(bounds.size() + 1, 0) {}
  void observe(double v);
};

class Metrics {
 public:
  Metrics();
  void request(const std::string& endpoint, int status);
  // A finished generation: time to first token (from arrival) and its decode rate.
  void generation(double ttft_s, int completion_tokens, double decode_s);
  std::string prometheus(const EngineStats& engine) const;

 private:
  mutable std::mutex mu_;
  std::map<std::pair<std::string, int>, uint64_t> requests_;
  Histogram ttft_, tps_, tpot_;
};

}  // namespace gptoss::serve
