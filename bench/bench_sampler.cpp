// Host sampling cost per token over the gpt-oss vocabulary (201,088 logits), by settings and by how flat the
// logits are (the nucleus of top-p grows as they flatten). The baseline printed beside each row is the
// plain softmax draw of the same logits (what every truncation needs at least: one exp per candidate).
//   bench_sampler [draws]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "gptoss/gptoss.h"

namespace {

double ms_per_draw(gptoss::Sampler& s, const std::vector<float>& logits, int draws) {
  volatile int32_t sink = 0;
  sink = sink + s.sample(logits);  // first call sizes the buffers
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < draws; ++i) sink = sink + s.sample(logits);
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / draws;
}

}  // namespace

int main(int argc, char** argv) {
  const int draws = argc > 1 ? std::atoi(argv[1]) : 30;
  constexpr int V = 201088;
  std::printf("Sampler::sample, %d logits, mean of %d draws, one thread\n", V, draws);
  std::printf("%-10s %-34s %12s %16s %8s\n", "logits", "settings", "ms / draw", "softmax draw ms", "ratio");
  for (float sd : {3.0f, 1.0f, 0.3f}) {
    std::mt19937 rng(1);
    std::normal_distribution<float> nd(0.0f, sd);
    std::vector<float> logits(V);
    for (auto& x : logits) x = nd(rng);
    gptoss::Sampler base({.temperature = 1.0f, .seed = 1});
    const double b = ms_per_draw(base, logits, draws);
    struct Row {
      const char* name;
      gptoss::SamplerOptions o;
    };
    const Row rows[] = {{"temperature 1, top-p 0.9", {.temperature = 1.0f, .top_p = 0.9f, .seed = 1}},
                        {"temperature 0.8, top-k 50", {.temperature = 0.8f, .top_k = 50, .seed = 1}},
                        {"temperature 1, top-k 1000, top-p 0.95", {.temperature = 1.0f, .top_k = 1000, .top_p = 0.95f, .seed = 1}}};
    for (const Row& r : rows) {
      gptoss::Sampler s(r.o);
      const double t = ms_per_draw(s, logits, draws);
      std::printf("N(0, %-4.1f) %-34s %12.3f %16.3f %8.2f\n", double(sd), r.name, t, b, t / b);
    }
  }
  return 0;
}
