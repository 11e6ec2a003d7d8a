// gptoss bench --concurrency N: serving throughput through the serve engine's batched steps (no HTTP).
#pragma once

#include <cstdint>
#include <string>

#include "cli/run_options.h"

namespace gptoss::cli {

struct ConcurrencyBench {
  int concurrency = 0;   // clients (fixed) or slots (sharegpt); 0: not this benchmark
  int requests = 0;      // 0: one per client (fixed), 1000 (sharegpt)
  int prompt_tokens = 512, gen_tokens = 256;  // fixed workload
  std::string workload = "fixed";             // fixed | sharegpt
  uint64_t seed = 1;
  int batch_tokens = 256;  // tokens one batched step carries
  bool no_batching = false;
  bool json = false;
};

int run_concurrency_bench(RunOptions& o, const ConcurrencyBench& b);

}  // namespace gptoss::cli
