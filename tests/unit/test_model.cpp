// The CPU engine against transformers' float32 goldens (tests/data/golden), and the KV cache against
// a single full forward.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <fstream>
#include <functional>
#include <sstream>

#include "core/npy.h"
#include "format/checkpoint.h"
#include "model/model.h"
#include "model/op_knockout.h"
#include "model/weights.h"
#include "test_util.h"

using namespace gptoss;
using gptoss::test::golden_dir;
using gptoss::test::read_tokens;
using gptoss::test::rel_err;

namespace {

size_t argmax(const float* p, size_t n) { return size_t(std::max_element(p, p + n) - p); }

class Golden : public ::testing::TestWithParam<std::tuple<std::string, int>> {};

}  // namespace

TEST_P(Golden, MatchesTransformersFloat32) {
  const auto& [name, max_batch] = GetParam();
  auto model = Model::open(golden_dir(name), {.device = "cpu", .threads = 2, .cpu_math = CpuMath::Exact});
  ASSERT_TRUE(model.ok()) << model.status().message();
  auto golden = npy_read_f32(golden_dir(name) + "/logits_hf_f32.npy");
  ASSERT_TRUE(golden.ok()) << golden.status().message();
  auto tokens = read_tokens(golden_dir(name) + "/tokens.txt");
  ASSERT_EQ(size_t(golden->shape[0]), tokens.size());
  const size_t V = size_t((*model)->config().vocab_size);
  auto session = Session::create(**model, {.max_context = 256, .max_batch = max_batch});
  ASSERT_TRUE(session.ok()) << session.status().message();
  std::vector<float> logits;
  auto r = (*session)->forward(tokens, &logits);
  ASSERT_TRUE(r.ok()) << r.status().message();
  double worst = 0;
  for (size_t t = 0; t < tokens.size(); ++t) {
    const float* a = logits.data() + t * V;
    const float* b = golden->data.data() + t * V;
    worst = std::max(worst, rel_err(a, b, V));
    EXPECT_LE(rel_err(a, b, V), 1e-4) << name << " token " << t;
    EXPECT_EQ(argmax(a, V), argmax(b, V)) << name << " token " << t;
  }
  std::printf("%s max_batch %d: worst relative error vs transformers f32 = %.3g\n", name.c_str(), max_batch, worst);
}

// Whole prompt in one step, in chunks smaller than the window, and one token at a time.
INSTANTIATE_TEST_SUITE_P(Engine, Golden,
                         ::testing::Combine(::testing::Values("tiny_a", "tiny_b"), ::testing::Values(128, 5, 1)));

TEST(Engine, BF16KvCacheStaysClose) {
  auto model = Model::open(golden_dir("tiny_a"), {.device = "cpu", .cpu_math = CpuMath::Exact});
  ASSERT_TRUE(model.ok()) << model.status().message();
  auto golden = npy_read_f32(golden_dir("tiny_a") + "/logits_hf_f32.npy");
  ASSERT_TRUE(golden.ok());
  auto tokens = read_tokens(golden_dir("tiny_a") + "/tokens.txt");
  auto session = Session::create(**model, {.max_context = 128, .max_batch = 16, .kv_precision = KvPrecision::BF16});
  ASSERT_TRUE(session.ok());
  std::vector<float> logits;
  ASSERT_TRUE((*session)->forward(tokens, &logits).ok());
  const size_t V = 1024;
  double worst = 0;
  for (size_t t = 0; t < tokens.size(); ++t)
    worst = std::max(worst, rel_err(logits.data() + t * V, golden->data.data() + t * V, V));
  EXPECT_LE(worst, 2e-2);
  EXPECT_GT(worst, 0.0);  // bf16 storage really is in use
}

// --cpu-math fast (int16 activations for the MXFP4 experts in steps of fewer than 8 tokens, rows decoded once
// for longer steps) against the exact path on both goldens, token by token and in chunks (max_batch 16: both
// kernels, as each expert gets a share of the 16 tokens). The error is per token row:
// max |fast - exact| / max |exact| over the vocabulary; top-1 must agree wherever the exact top-2 gap is more
// than twice that row's largest difference (elsewhere the two are a near-tie that rounding may flip).
TEST(Engine, FastMathStaysCloseToExact) {
  for (const char* name : {"tiny_a", "tiny_b"}) {
    auto exact = Model::open(golden_dir(name), {.device = "cpu", .threads = 2, .cpu_math = CpuMath::Exact});
    auto fast = Model::open(golden_dir(name), {.device = "cpu", .threads = 2, .cpu_math = CpuMath::Fast});
    ASSERT_TRUE(exact.ok() && fast.ok());
    auto tokens = read_tokens(golden_dir(name) + "/tokens.txt");
    const size_t V = size_t((*exact)->config().vocab_size);
    for (int max_batch : {1, 16}) {
      auto se = Session::create(**exact, {.max_context = 256, .max_batch = max_batch});
      auto sf = Session::create(**fast, {.max_context = 256, .max_batch = max_batch});
      ASSERT_TRUE(se.ok() && sf.ok());
      std::vector<float> le, lf;
      ASSERT_TRUE((*se)->forward(tokens, &le).ok());
      ASSERT_TRUE((*sf)->forward(tokens, &lf).ok());
      double worst = 0;
      int agree = 0, ties = 0;
      for (size_t t = 0; t < tokens.size(); ++t) {
        const float* a = lf.data() + t * V;
        const float* b = le.data() + t * V;
        const double err = rel_err(a, b, V);
        worst = std::max(worst, err);
        EXPECT_LE(err, 1e-2) << name << " max_batch " << max_batch << " token " << t;
        std::vector<float> sorted(b, b + V);
        std::partial_sort(sorted.begin(), sorted.begin() + 2, sorted.end(), std::greater<float>());
        double max_abs = 0;
        for (size_t i = 0; i < V; ++i) max_abs = std::max(max_abs, std::fabs(double(a[i]) - double(b[i])));
        if (double(sorted[0]) - double(sorted[1]) <= 2 * max_abs) {
          ++ties;
          continue;
        }
        agree += argmax(a, V) == argmax(b, V);
        EXPECT_EQ(argmax(a, V), argmax(b, V)) << name << " max_batch " << max_batch << " token " << t;
      }
      EXPECT_GT(worst, 0.0) << "the fast path really is in use";
      std::printf("%s max_batch %d: fast vs exact worst per-row relative error %.3g, top-1 %d/%zu (%d near-ties "
                  "left out)\n",
                  name, max_batch, worst, agree, tokens.size() - size_t(ties), ties);
    }
  }
}

TEST(Engine, RejectsBadTokensAndFullContext) {
  auto model = Model::open(golden_dir("tiny_b"), {.device = "cpu"});
  ASSERT_TRUE(model.ok());
  auto session = Session::create(**model, {.max_context = 8, .max_batch = 4});
  ASSERT_TRUE(session.ok());
  std::vector<int32_t> bad = {1, 512};
  auto r = (*session)->forward(bad);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("out of range"), std::string::npos);
  std::vector<int32_t> nine(9, 1);
  r = (*session)->forward(nine);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("context full"), std::string::npos);
  EXPECT_EQ((*session)->position(), 0);
  auto too_long = Session::create(**model, {.max_context = 1 << 30});
  EXPECT_FALSE(too_long.ok());
}

// The profiling hook of `bench --op-costs`: one-token steps leave the masked ops out (lm_head skipped: the
// previous logits stay; MoE skipped: other logits), longer steps never do.
TEST(Engine, SkipOpsOnlyInOneTokenSteps) {
  auto model = Model::open(golden_dir("tiny_b"), {.device = "cpu"});
  ASSERT_TRUE(model.ok()) << model.status().message();
  auto a = Session::create(**model, {.max_context = 32, .max_batch = 8});
  auto b = Session::create(**model, {.max_context = 32, .max_batch = 8});
  ASSERT_TRUE(a.ok() && b.ok());
  const std::vector<int32_t> prompt = {1, 2, 3, 4}, one = {5}, two = {6, 7};
  auto copy = [](Result<std::span<const float>> r) { return std::vector<float>(r->begin(), r->end()); };
  const auto a0 = copy((*a)->forward(prompt)), a1 = copy((*a)->forward(one)), a2 = copy((*a)->forward(two));
  Model& m = **model;
  using namespace op_group;
  ASSERT_TRUE(m.set_op_knockout(qkv | attention | o_proj | moe | lm_head).ok());
  EXPECT_EQ(copy((*b)->forward(prompt)), a0);  // 4 tokens: nothing skipped
  ASSERT_TRUE(m.set_op_knockout(lm_head).ok());
  EXPECT_EQ(copy((*b)->forward(one)), a0);  // the logits of the step before
  (*b)->reset();
  ASSERT_TRUE(m.set_op_knockout(0).ok());
  ASSERT_TRUE((*b)->forward(prompt).ok());
  ASSERT_TRUE(m.set_op_knockout(moe).ok());
  EXPECT_NE(copy((*b)->forward(one)), a1);
  ASSERT_TRUE(m.set_op_knockout(0).ok());
  (*b)->reset();
  ASSERT_TRUE((*b)->forward(prompt).ok());
  ASSERT_TRUE((*b)->forward(one).ok());
  EXPECT_EQ(copy((*b)->forward(two)), a2);
}

// Each layer's experts as one stack: E matrices, expert e at e strides from the first (blocks and scales), the
// last one ending where the checkpoint's tensor ends.
TEST(Weights, ExpertStacksCoverTheirTensors) {
  auto ck = Checkpoint::open(golden_dir("tiny_a"));
  ASSERT_TRUE(ck.ok()) << ck.status().message();
  auto hw = build_host_weights(*ck);
  ASSERT_TRUE(hw.ok()) << hw.status().message();
  const int E = ck->config().num_local_experts;
  ASSERT_EQ(ck->experts(), ExpertStorage::Mxfp4);
  for (size_t l = 0; l < (*hw)->w.layers.size(); ++l) {
    const LayerWeights& L = (*hw)->w.layers[l];
    const std::string p = "model.layers." + std::to_string(l) + ".mlp.experts.";
    for (const auto& [s, name] : {std::pair{&L.gate_up, p + "gate_up_proj"}, std::pair{&L.down, p + "down_proj"}}) {
      const TensorData* blocks = ck->find(name + "_blocks");
      const TensorData* scales = ck->find(name + "_scales");
      ASSERT_TRUE(blocks && scales) << name;
      ASSERT_EQ(s->count, E) << name;
      EXPECT_EQ(s->first.data, blocks->bytes.data()) << name;
      EXPECT_EQ(s->first.scales, scales->bytes.data()) << name;
      const MatrixRef last = s->expert(E - 1);
      const auto* end = static_cast<const uint8_t*>(last.data) + s->stride;
      EXPECT_EQ(end, blocks->bytes.data() + blocks->bytes.size()) << name;
      EXPECT_EQ(last.scales + s->scales_stride, scales->bytes.data() + scales->bytes.size()) << name;
      EXPECT_EQ(s->stride, size_t(s->first.rows * s->first.cols / 2)) << name;
      EXPECT_EQ(last.rows, s->first.rows);
    }
  }
}

TEST(Engine, UnknownDevice) {
  auto model = Model::open(golden_dir("tiny_b"), {.device = "tpu"});
  ASSERT_FALSE(model.ok());
  EXPECT_NE(model.status().message().find("unknown device"), std::string::npos);
}

// Sampling against the plain definition: softmax frequencies without cuts; with top-k / top-p every draw
// lies in the set a full sort would keep (flat logits force the nucleus past the first sorted prefix).
TEST(Sampler, MatchesDefinition) {
  std::vector<float> small = {0.0f, 1.0f, 2.0f, 0.5f};
  Sampler s({.temperature = 1.0f, .seed = 11});
  std::vector<int> count(4, 0);
  const int n = 40000;
  for (int i = 0; i < n; ++i) count[size_t(s.sample(small))]++;
  double z = 0;
  for (float l : small) z += std::exp(double(l));
  for (size_t i = 0; i < 4; ++i) EXPECT_NEAR(double(count[i]) / n, std::exp(double(small[i])) / z, 0.01) << i;

  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.0f, 0.05f);
  std::vector<float> flat(5000);
  for (auto& x : flat) x = nd(rng);
  std::vector<int32_t> order(flat.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = int32_t(i);
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return flat[size_t(a)] > flat[size_t(b)]; });
  std::vector<double> w(flat.size());
  double total = 0;
  for (size_t i = 0; i < flat.size(); ++i) total += (w[i] = std::exp(double(flat[i] - flat[size_t(order[0])])));
  size_t keep = 0;
  for (double acc = 0; acc < 0.9 * total;) acc += w[size_t(order[keep++])];
  ASSERT_GT(keep, size_t(1000));  // the nucleus spans several sorted prefixes
  std::vector<char> in_nucleus(flat.size(), 0);
  for (size_t i = 0; i < keep; ++i) in_nucleus[size_t(order[i])] = 1;
  Sampler p({.temperature = 1.0f, .top_p = 0.9f, .seed = 2});
  Sampler k({.temperature = 1.0f, .top_k = 10, .seed = 2});
  for (int i = 0; i < 500; ++i) {
    EXPECT_TRUE(in_nucleus[size_t(p.sample(flat))]);
    const int32_t t = k.sample(flat);
    EXPECT_LT(std::find(order.begin(), order.end(), t) - order.begin(), 10);
  }
}

// The nucleus exactly: every draw inside the set a full sort keeps (ties: lower id first), and that set's
// last member drawn too (not one short). Nearly flat logits give each member ~1/keep of the draws, and
// 100 top_p values move the boundary through every position the selection may end on (a pivot included).
TEST(Sampler, NucleusIsExact) {
  auto check = [](const std::vector<float>& logits, float top_p, int draws, uint64_t seed) {
    std::vector<int32_t> order(logits.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = int32_t(i);
    std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
      return logits[size_t(a)] != logits[size_t(b)] ? logits[size_t(a)] > logits[size_t(b)] : a < b;
    });
    const double m = logits[size_t(order[0])];
    double total = 0;
    for (float l : logits) total += std::exp(double(l) - m);
    size_t keep = 0;
    double kept = 0;
    while (kept < top_p * total) kept += std::exp(double(logits[size_t(order[keep++])]) - m);
    std::vector<int> count(logits.size(), 0);
    Sampler s({.temperature = 1.0f, .top_p = top_p, .seed = seed});
    for (int i = 0; i < draws; ++i) count[size_t(s.sample(logits))]++;
    int inside = 0;
    for (size_t i = 0; i < keep; ++i) inside += count[size_t(order[i])];
    EXPECT_EQ(inside, draws) << "top_p " << top_p << ": draws outside the nucleus of " << keep;
    const int32_t last = order[keep - 1];
    if (std::exp(double(logits[size_t(last)]) - m) / kept * draws >= 20) {  // P(no draw) < 1e-8
      EXPECT_GT(count[size_t(last)], 0) << "top_p " << top_p << ": the nucleus of " << keep << " drawn one short";
    }
  };
  std::mt19937 rng(9);
  std::uniform_real_distribution<float> flat(0.0f, 1.0f);
  std::vector<float> small(200);
  for (auto& x : small) x = flat(rng);
  small[3] = small[4] = small[5] = small[150];  // ties
  for (int i = 1; i <= 100; ++i) check(small, 0.0099f * float(i), 4000, uint64_t(i));
  std::normal_distribution<float> nd(0.0f, 2.0f);
  std::vector<float> big(3000);
  for (auto& x : big) x = nd(rng);
  big[7] = big[8] = big[9] = big[10] = 9.0f;  // ties at the top
  for (float top_p : {0.3f, 0.8f, 0.97f}) check(big, top_p, 5000, 4);
  // Equal weights: the fewest reaching half are the two lowest ids.
  std::vector<float> flat4 = {1.0f, 1.0f, 1.0f, 1.0f};
  Sampler h({.temperature = 1.0f, .top_p = 0.5f, .seed = 6});
  std::vector<int> c4(4, 0);
  for (int i = 0; i < 2000; ++i) c4[size_t(h.sample(flat4))]++;
  EXPECT_GT(c4[0], 0);
  EXPECT_GT(c4[1], 0);
  EXPECT_EQ(c4[2] + c4[3], 0);
}

TEST(Sampler, GreedyAndSeeded) {
  std::vector<float> logits = {0.1f, 2.0f, 1.9f, -1.0f};
  Sampler greedy({.temperature = 0});
  EXPECT_EQ(greedy.sample(logits), 1);
  Sampler a({.temperature = 1.0f, .seed = 7}), b({.temperature = 1.0f, .seed = 7});
  for (int i = 0; i < 20; ++i) EXPECT_EQ(a.sample(logits), b.sample(logits));
  Sampler k1({.temperature = 5.0f, .top_k = 1, .seed = 3});
  for (int i = 0; i < 20; ++i) EXPECT_EQ(k1.sample(logits), 1);
  Sampler p({.temperature = 1.0f, .top_p = 0.5f, .seed = 3});  // top token alone holds < 0.5: two candidates
  for (int i = 0; i < 50; ++i) {
    int s = p.sample(logits);
    EXPECT_TRUE(s == 1 || s == 2);
  }
}
