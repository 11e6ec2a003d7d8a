// The CPU engine against transformers' float32 goldens (tests/data/golden), and the KV cache against
// a single full forward.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <fstream>
#include <sstream>

#include "core/npy.h"
#include "gptoss/gptoss.h"
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
  auto model = Model::open(golden_dir(name), {.device = "cpu", .threads = 2});
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
  auto model = Model::open(golden_dir("tiny_a"), {.device = "cpu"});
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
