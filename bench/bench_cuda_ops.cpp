// Per-op time split of one batch-1 decode step of a gpt-oss-20b-shaped model on the CUDA backend:
// each op run alone on synthetic weights of the real shapes (MXFP4 experts, bf16 projections and
// head), 300 back-to-back launches timed with a host clock around a final sync, so the figures
// include launch gaps that the recorded step graph removes. Prints µs and GB/s per op and the
// step total assembled from them (24 layers: 12 sliding, 12 full at --context).
// The bf16 projections and head are packed as upload() packs them (normal-like values, so few escapes);
// BENCH_PLAIN_BF16=1 times them plain (GB/s counts the bytes of the format timed: 1.5 or 2 per weight).
//   bench_cuda_ops [context=4096]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

#ifdef GPTOSS_WITH_CUDA
#include "backend/cuda/cuda_backend.h"
#include "model/backend.h"

using namespace gptoss;

namespace {

std::vector<uint8_t> noise(size_t n, uint32_t seed) {
  std::vector<uint8_t> v(n);
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < n; i += 4) {
    x ^= x << 13, x ^= x >> 17, x ^= x << 5;
    std::memcpy(&v[i], &x, std::min<size_t>(4, n - i));
  }
  return v;
}

// n bf16 values ~ 0.02 * (a sum of four uniforms, about normal), as gptoss-make-checkpoint writes them: the
// packed format's escapes depend on the values' spread, so they have to look like weights.
std::vector<uint8_t> normal_bf16(size_t n, uint32_t seed) {
  std::vector<uint8_t> v(2 * n);
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < n; ++i) {
    x ^= x << 13, x ^= x >> 17, x ^= x << 5;  // its four bytes are the four uniforms
    const float sum = float((x & 0xffu) + (x >> 8 & 0xffu) + (x >> 16 & 0xffu) + (x >> 24)) / 256.0f;
    const float f = 0.02f * 1.7320508f * (sum - 2.0f);  // variance 1/3 -> 1
    uint32_t b;
    std::memcpy(&b, &f, 4);
    const uint16_t h = uint16_t((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
    std::memcpy(&v[2 * i], &h, 2);
  }
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  const int ctx = argc > 1 ? std::atoi(argv[1]) : 4096;
  if (!cuda_usable()) {
    std::printf("bench_cuda_ops: no CUDA device, nothing measured\n");
    return 0;
  }
  ModelConfig c;
  c.num_hidden_layers = 24, c.num_local_experts = 32, c.num_experts_per_tok = 4, c.vocab_size = 201088;
  c.hidden_size = 2880, c.intermediate_size = 2880, c.head_dim = 64, c.num_attention_heads = 64;
  c.num_key_value_heads = 8, c.sliding_window = 128, c.max_position_embeddings = 131072;
  c.layer_is_sliding = {true, false};
  auto be_r = create_backend(c, {.device = "cuda"});
  if (!be_r.ok()) return std::fprintf(stderr, "%s\n", be_r.status().message().c_str()), 1;
  Backend& be = **be_r;
  const int H = c.hidden_size, E = c.num_local_experts, I = c.intermediate_size;
  auto dev = [&](const std::vector<uint8_t>& v) { return *cuda_upload_bytes(be, v.data(), v.size()); };
  const bool plain = std::getenv("BENCH_PLAIN_BF16") != nullptr;
  auto bf16m = [&](int rows, int cols, uint32_t seed) {
    const MatrixRef m{WeightType::BF16, dev(normal_bf16(size_t(rows) * cols, seed)), nullptr, rows, cols, false};
    return plain ? m : *cuda_pack_bf16(be, m);
  };
  const double wb = plain ? 2.0 : 1.5;  // bytes per bf16 weight read
  auto floats = [&](size_t n) {
    std::vector<float> v(n, 0.01f);
    return static_cast<const float*>(*cuda_upload_bytes(be, v.data(), n * 4));
  };
  LayerWeights L;
  L.q = bf16m(c.q_dim(), H, 1), L.k = bf16m(c.kv_dim(), H, 2), L.v = bf16m(c.kv_dim(), H, 3);
  L.o = bf16m(H, c.q_dim(), 4);
  L.router = MatrixRef{WeightType::BF16, dev(normal_bf16(size_t(E) * H, 5)), nullptr, E, H, false};  // never packed
  std::vector<uint8_t> gs(size_t(E) * 2 * I * H / 32), ds(size_t(E) * H * I / 32);
  for (auto& s : gs) s = 120;
  for (auto& s : ds) s = 120;
  L.gate_up = {{WeightType::MXFP4, dev(noise(size_t(E) * 2 * I * H / 2, 6)), static_cast<const uint8_t*>(dev(gs)),
                2 * I, H, false},
               size_t(2) * I * H / 2, size_t(2) * I * H / 32, E};
  L.down = {{WeightType::MXFP4, dev(noise(size_t(E) * H * I / 2, 7)), static_cast<const uint8_t*>(dev(ds)), H, I,
             false},
            size_t(H) * I / 2, size_t(H) * I / 32, E};
  L.gate_up_bias = floats(size_t(E) * 2 * I), L.down_bias = floats(size_t(E) * H), L.router_bias = floats(size_t(E));
  const float* norm = floats(size_t(H));
  const float* sinks = floats(size_t(c.num_attention_heads));
  const MatrixRef head = bf16m(c.vocab_size, H, 8);
  float *x = *be.alloc(size_t(H)), *h = *be.alloc(size_t(H)), *q = *be.alloc(size_t(c.q_dim()));
  float *k = *be.alloc(size_t(c.kv_dim())), *v = *be.alloc(size_t(c.kv_dim())), *att = *be.alloc(size_t(c.q_dim()));
  float* logits = *be.alloc(size_t(c.vocab_size));
  for (KvPrecision kvp : {KvPrecision::BF16, KvPrecision::F32}) {
    auto kv = be.create_kv_cache(c, {ctx + 1, 1, kvp});
    if (!kv.ok()) return std::fprintf(stderr, "%s\n", kv.status().message().c_str()), 1;
    const int32_t tok = 1;
    if (!begin_one_sequence_step(be, std::span<const int32_t>(&tok, 1), ctx - 1, kv->get()).ok()) return 1;
    float sink = 0;
    // BENCH_ITERS (e.g. 3 under a kernel profiler): launches per op after 2 warm-ups; default 300 after 20.
    const char* iters_env = std::getenv("BENCH_ITERS");
    const int n = iters_env ? std::max(1, std::atoi(iters_env)) : 300;
    auto time_us = [&](const std::function<void()>& f) {
      for (int i = 0; i < (iters_env ? 2 : 20); ++i) f();
      (void)be.to_host(x, 1, &sink);
      const auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < n; ++i) f();
      (void)be.to_host(x, 1, &sink);
      return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / n;
    };
    struct Row {
      const char* name;
      double us, bytes, per_step;
    };
    const double kvb = kvp == KvPrecision::BF16 ? 2 : 4;
    const double mxfp4_expert = (2.0 * I * H + double(H) * I) * (0.5 + 1.0 / 32);
    std::vector<Row> rows = {
        {"rmsnorm", time_us([&] { be.rmsnorm(x, norm, 1, H, 1e-5, h); }), 2.0 * H * 4, 2.0 * 24 + 1},
        {"matmul q (4096x2880)", time_us([&] { be.matmul(L.q, h, 1, nullptr, q); }), wb * c.q_dim() * H, 24},
        {"matmul k (512x2880)", time_us([&] { be.matmul(L.k, h, 1, nullptr, k); }), wb * c.kv_dim() * H, 24},
        {"matmul v (512x2880)", time_us([&] { be.matmul(L.v, h, 1, nullptr, v); }), wb * c.kv_dim() * H, 24},
        {"attention sliding (128 keys)", time_us([&] { be.attention(0, q, k, v, sinks, 128, att); }),
         2.0 * 128 * c.kv_dim() * kvb, 12},
        {"attention full (context keys)", time_us([&] { be.attention(1, q, k, v, sinks, 0, att); }),
         2.0 * ctx * c.kv_dim() * kvb, 12},
        {"matmul o + residual (fused)", time_us([&] { be.matmul_add(L.o, att, 1, nullptr, x); }), wb * c.q_dim() * H, 24},
        {"(unfused: matmul o)", time_us([&] { be.matmul(L.o, att, 1, nullptr, h); }), wb * c.q_dim() * H, 0},
        {"(unfused: add)", time_us([&] { be.add(x, h, size_t(H)); }), 3.0 * H * 4, 0},
        {"(router alone: bf16 32x2880)", time_us([&] { be.matmul(L.router, h, 1, L.router_bias, logits); }),
         2.0 * E * H, 0},
        {"moe (router+top4+mxfp4 experts)", time_us([&] { be.moe(L, h, 1, x); }), 4 * mxfp4_expert + 2.0 * E * H, 24},
        {"lm_head (201088x2880)", time_us([&] { be.matmul(head, h, 1, nullptr, logits); }),
         wb * c.vocab_size * H, 1},
        {"argmax (greedy, on the device)", time_us([&] { (void)be.argmax(logits, c.vocab_size); }), 4.0 * c.vocab_size, 1},
    };
    double total = 0, total_bytes = 0;
    std::printf("\n%s, KV %s, context %d, bf16 projections and head %s: one op at a time (launch gaps included)\n",
                be.name().c_str(), kvp == KvPrecision::BF16 ? "bf16" : "f32", ctx, plain ? "plain" : "packed");
    std::printf("%-34s %10s %10s %8s %12s\n", "op", "us", "GB/s", "x/step", "us/step");
    for (const Row& r : rows) {
      std::printf("%-34s %10.2f %10.1f %8.0f %12.1f\n", r.name, r.us, r.bytes / (r.us * 1e3), r.per_step,
                  r.us * r.per_step);
      total += r.us * r.per_step;
      total_bytes += r.bytes * r.per_step;
    }
    std::printf("%-34s %10s %10.1f %8s %12.1f  -> %.1f tokens/s\n", "step (sum)", "", total_bytes / (total * 1e3), "",
                total, 1e6 / total);
  }
  return 0;
}
#else
int main() {
  std::printf("bench_cuda_ops: built without CUDA (configure with -DGPTOSS_CUDA=ON)\n");
  return 0;
}
#endif
