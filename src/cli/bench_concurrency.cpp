// gptoss bench --concurrency N: serving throughput at the engine level (the serve engine's batched steps, no
// HTTP). Two workloads: fixed lengths (N clients, each sending --requests / N requests of --prompt-tokens and
// exactly --gen-tokens back to back), or --workload sharegpt (prompt and output lengths drawn from fixed
// log-normal distributions, all requests released at once, N slots serving them). Random prompt ids; outputs
// never stop early (no stop tokens), so every request produces exactly its output length.
#include "cli/bench_concurrency.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "model/model.h"
#include "serve/engine.h"

namespace gptoss::cli {

namespace {

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const double idx = p / 100.0 * double(v.size() - 1);
  const size_t lo = size_t(std::floor(idx)), hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (idx - double(lo));
}

struct Request {
  std::vector<int32_t> prompt;
  int gen = 0;
};

// ShareGPT-like lengths: log-normal prompt and output lengths. The parameters give medians of about 160
// prompt and 140 output tokens with long tails (means near 230 and 200), an approximation of the conversation
// lengths published for ShareGPT-based serving benchmarks; fixed here so runs compare across builds and engines.
std::vector<Request> sharegpt_like(int n, int vocab, int max_total, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::lognormal_distribution<double> plen(std::log(160.0), 0.85), glen(std::log(140.0), 0.85);
  std::uniform_int_distribution<int32_t> tok(0, vocab - 1);
  std::vector<Request> r(static_cast<size_t>(n));
  for (auto& q : r) {
    const int p = std::clamp(int(std::lround(plen(rng))), 4, std::max(4, max_total / 2));
    const int g = std::clamp(int(std::lround(glen(rng))), 1, std::max(1, max_total - p - 1));
    q.prompt.resize(size_t(p));
    for (auto& t : q.prompt) t = tok(rng);
    q.gen = g;
  }
  return r;
}

}  // namespace

int run_concurrency_bench(RunOptions& o, const ConcurrencyBench& b) {
  const bool sharegpt = b.workload == "sharegpt";
  if (!sharegpt && b.workload != "fixed")
    return fail(Error("--workload '{}': expected fixed or sharegpt", b.workload));
  const int requests = b.requests > 0 ? b.requests : sharegpt ? 1000 : b.concurrency;
  if (!sharegpt) {
    if (auto st = require_context(o, int64_t(b.prompt_tokens) + b.gen_tokens + 1, "bench --concurrency"); !st.ok())
      return fail(st);
  } else if (o.max_context_limit == 0) {
    o.max_context = 2048;  // room for the drawn lengths (clipped to it)
  }
  auto l = load_model(o);
  if (!l.ok()) return fail(l.status());
  Model& m = *l->model;
  const SessionOptions so = l->session->options();
  const int vocab = m.config().vocab_size;

  std::vector<Request> work;
  if (sharegpt) {
    work = sharegpt_like(requests, vocab, so.max_context, b.seed);
  } else {
    std::mt19937_64 rng(b.seed);
    std::uniform_int_distribution<int32_t> tok(0, vocab - 1);
    work.resize(size_t(requests));
    for (auto& q : work) {
      q.prompt.resize(size_t(b.prompt_tokens));
      for (auto& t : q.prompt) t = tok(rng);
      q.gen = b.gen_tokens;
    }
  }

  std::vector<std::unique_ptr<Session>> sessions;
  sessions.push_back(std::move(l->session));
  for (int i = 1; i < b.concurrency; ++i) {
    auto s = Session::create(m, so);
    if (!s.ok()) return fail(s.status().with_context(fmt::format("session {} of --concurrency {}", i + 1, b.concurrency)));
    sessions.push_back(std::move(*s));
  }
  size_t kv_bytes = 0;
  for (const auto& s : sessions) kv_bytes += s->kv_bytes();
  std::unique_ptr<Batch> batch;
  if (!b.no_batching) {
    auto bt = Batch::create(m, {.max_rows = std::max(b.batch_tokens, b.concurrency), .max_seqs = b.concurrency});
    if (!bt.ok()) return fail(bt.status());
    batch = std::move(*bt);
  }
  serve::Engine engine(std::move(sessions), std::make_unique<serve::RoundRobinScheduler>(), std::move(batch));

  auto make_job = [&](const Request& q) {
    auto j = std::make_shared<serve::Job>();
    j->prompt = q.prompt;
    j->gen.sampler.temperature = 0;
    j->gen.max_tokens = q.gen;
    return j;
  };
  std::vector<std::shared_ptr<serve::Job>> jobs;
  const double t0 = serve::engine_clock();
  if (sharegpt) {  // all released at once; the engine queues what the slots cannot hold
    for (const auto& q : work) {
      jobs.push_back(make_job(q));
      engine.submit(jobs.back());
    }
    for (auto& j : jobs) {
      std::vector<int32_t> sink;
      while (!j->wait_tokens(size_t(-1), 60.0, sink)) {
      }
    }
  } else {  // N clients, each sending its requests back to back
    jobs.resize(work.size());
    std::vector<std::thread> clients;
    for (int c = 0; c < b.concurrency; ++c)
      clients.emplace_back([&, c] {
        for (size_t i = size_t(c); i < work.size(); i += size_t(b.concurrency)) {
          jobs[i] = make_job(work[i]);
          engine.submit(jobs[i]);
          std::vector<int32_t> sink;
          while (!jobs[i]->wait_tokens(size_t(-1), 60.0, sink)) {
          }
        }
      });
    for (auto& t : clients) t.join();
  }
  const double wall = serve::engine_clock() - t0;
  engine.shutdown();

  uint64_t in_tokens = 0, out_tokens = 0;
  int errors = 0;
  std::vector<double> ttft, tpot;
  std::string first_error;
  for (const auto& j : jobs) {
    if (!j->error.empty()) {
      if (!errors++) first_error = j->error;
      continue;
    }
    in_tokens += j->prompt.size();
    out_tokens += j->tokens.size();
    ttft.push_back((j->first_token_at - j->queued_at) * 1e3);
    if (j->tokens.size() > 1) tpot.push_back((j->finished_at - j->first_token_at) * 1e3 / double(j->tokens.size() - 1));
  }
  const nlohmann::json r = {
      {"device", m.backend().name()},
      {"workload", b.workload},
      {"concurrency", b.concurrency},
      {"batching", !b.no_batching},
      {"requests", requests},
      {"errors", errors},
      {"wall_seconds", wall},
      {"input_tokens", in_tokens},
      {"output_tokens", out_tokens},
      {"output_tokens_per_s", double(out_tokens) / wall},
      {"total_tokens_per_s", double(in_tokens + out_tokens) / wall},
      {"requests_per_s", double(requests - errors) / wall},
      {"ttft_ms_p50", percentile(ttft, 50)},
      {"ttft_ms_p99", percentile(ttft, 99)},
      {"tpot_ms_p50", percentile(tpot, 50)},
      {"tpot_ms_p99", percentile(tpot, 99)},
      {"kv_bytes", kv_bytes},
  };
  if (b.json) {
    std::printf("%s\n", r.dump().c_str());
  } else {
    std::printf("%s, %s workload, %d requests, concurrency %d%s\n", m.backend().name().c_str(), b.workload.c_str(),
                requests, b.concurrency, b.no_batching ? " (no batching: one sequence per step)" : "");
    std::printf("  output %.1f tokens/s, total %.1f tokens/s (%llu in, %llu out in %.2f s)\n",
                double(out_tokens) / wall, double(in_tokens + out_tokens) / wall, (unsigned long long)in_tokens,
                (unsigned long long)out_tokens, wall);
    std::printf("  TTFT p50 %.1f ms, p99 %.1f ms; TPOT p50 %.2f ms, p99 %.2f ms; KV cache %.1f MiB\n",
                percentile(ttft, 50), percentile(ttft, 99), percentile(tpot, 50), percentile(tpot, 99),
                double(kv_bytes) / (1 << 20));
  }
  if (errors) return fail(Error("{} of {} requests failed; the first: {}", errors, requests, first_error));
  return 0;
}

}  // namespace gptoss::cli
