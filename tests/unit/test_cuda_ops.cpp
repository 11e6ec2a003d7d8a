// The CUDA backend against the CPU backend, op by op over a sweep of shapes (test-backend-ops style),
// and end to end against transformers' float32 goldens. Built only with GPTOSS_CUDA; skipped with a
// visible notice where no CUDA device is present (CI compiles it but has no GPU).
#ifdef GPTOSS_WITH_CUDA

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <cstring>
#include <fstream>
#include <random>
#include <tuple>

#include "backend/cuda/cuda_backend.h"
#include "core/dtype.h"
#include "core/npy.h"
#include "model/model.h"
#include "test_util.h"

using namespace gptoss;

namespace {

#define REQUIRE_CUDA()                                                              \
  do {                                                                              \
    if (!cuda_usable()) GTEST_SKIP() << "no CUDA device: CUDA test skipped"; \
  } while (0)

using gptoss::test::golden_dir;
using gptoss::test::read_tokens;
using gptoss::test::rel_err;

ModelConfig small_config(int H, int nh, int nkv, int d, int E, int k, int I, int window) {
  ModelConfig c;
  c.num_hidden_layers = 2;
  c.num_local_experts = E;
  c.num_experts_per_tok = k;
  c.vocab_size = 300;
  c.hidden_size = H;
  c.intermediate_size = I;
  c.head_dim = d;
  c.num_attention_heads = nh;
  c.num_key_value_heads = nkv;
  c.sliding_window = window;
  c.max_position_embeddings = 4096;
  c.rope_original_max_position = 64;
  c.layer_is_sliding = {true, false};
  return c;
}

// Both backends with device copies of host data.
struct Pair {
  std::unique_ptr<Backend> cpu, gpu;
  std::mt19937 rng{1234};
  std::vector<std::unique_ptr<uint8_t[]>> host;  // storage the CPU backend uses in place

  explicit Pair(const ModelConfig& c) {
    auto a = create_backend(c, {.device = "cpu", .threads = 2, .cpu_math = CpuMath::Exact});
    auto b = create_backend(c, {.device = "cuda"});
    EXPECT_TRUE(a.ok() && b.ok()) << (b.ok() ? a.status().message() : b.status().message());
    if (a.ok()) cpu = std::move(*a);
    if (b.ok()) gpu = std::move(*b);
  }
  std::vector<float> randn(size_t n, float scale = 1.0f) {
    std::normal_distribution<float> nd(0.0f, scale);
    std::vector<float> v(n);
    for (auto& x : v) x = nd(rng);
    return v;
  }
  const void* keep(const void* p, size_t bytes) {
    host.push_back(std::make_unique<uint8_t[]>(bytes));
    std::memcpy(host.back().get(), p, bytes);
    return host.back().get();
  }
  void* dev(const void* p, size_t bytes) {
    auto r = cuda_upload_bytes(*gpu, p, bytes);
    EXPECT_TRUE(r.ok()) << r.status().message();
    return r.ok() ? *r : nullptr;
  }
  float* dev_f(const std::vector<float>& v) { return static_cast<float*>(dev(v.data(), v.size() * 4)); }
  std::vector<float> get(const float* d, size_t n) {
    std::vector<float> out(n);
    Status s = gpu->to_host(d, n, out.data());
    EXPECT_TRUE(s.ok()) << s.message();
    return out;
  }
  // `count` random [rows x cols] matrices in `type`, one after another; host and device stacks (same layout).
  std::pair<ExpertStack, ExpertStack> experts(WeightType type, int64_t rows, int64_t cols, bool transposed,
                                              int count) {
    MatrixRef h{type, nullptr, nullptr, rows, cols, transposed};
    const size_t n = size_t(rows * cols);
    std::vector<uint8_t> data, scales;
    if (type == WeightType::F32) {
      auto v = randn(n * size_t(count), 1.0f / std::sqrt(float(cols)));
      data.resize(v.size() * 4);
      std::memcpy(data.data(), v.data(), data.size());
    } else if (type == WeightType::BF16) {
      auto v = randn(n * size_t(count), 1.0f / std::sqrt(float(cols)));
      data.resize(v.size() * 2);
      for (size_t i = 0; i < v.size(); ++i) {
        const uint16_t b = f32_to_bf16(v[i]);
        std::memcpy(&data[2 * i], &b, 2);
      }
    } else {
      data.resize(n / 2 * size_t(count));
      scales.resize(n / 32 * size_t(count));
      for (auto& b : data) b = uint8_t(rng());
      for (auto& s : scales) s = uint8_t(127 - 5 + int(rng() % 4));  // 2^-5 .. 2^-2
    }
    const size_t stride = data.size() / size_t(count), sstride = scales.size() / size_t(count);
    MatrixRef d = h;
    h.data = keep(data.data(), data.size());
    d.data = dev(data.data(), data.size());
    if (!scales.empty()) {
      h.scales = static_cast<const uint8_t*>(keep(scales.data(), scales.size()));
      d.scales = static_cast<const uint8_t*>(dev(scales.data(), scales.size()));
    }
    return {ExpertStack{h, stride, sstride, count}, ExpertStack{d, stride, sstride, count}};
  }
  std::pair<MatrixRef, MatrixRef> matrix(WeightType type, int64_t rows, int64_t cols, bool transposed) {
    auto [h, d] = experts(type, rows, cols, transposed, 1);
    return {h.first, d.first};
  }
};

struct MatmulCase {
  WeightType type;
  bool transposed;
  int rows, cols, T;
  bool packed = false;  // bf16 packed on the device (cuda_pack_bf16), as upload() stores the projections
};

class CudaMatmul : public ::testing::TestWithParam<MatmulCase> {};

TEST_P(CudaMatmul, MatchesCpu) {
  REQUIRE_CUDA();
  const MatmulCase p = GetParam();
  Pair b(small_config(64, 4, 2, 16, 4, 2, 64, 8));
  ASSERT_TRUE(b.gpu);
  auto [hw, dw] = b.matrix(p.type, p.rows, p.cols, p.transposed);
  if (p.packed) {
    auto r = cuda_pack_bf16(*b.gpu, dw);
    ASSERT_TRUE(r.ok()) << r.status().message();
    dw = *r;
  }
  auto x = b.randn(size_t(p.T) * size_t(p.cols));
  auto bias = b.randn(size_t(p.rows));
  std::vector<float> ref(size_t(p.T) * size_t(p.rows));
  b.cpu->matmul(hw, x.data(), p.T, bias.data(), ref.data());
  float* dy = *b.gpu->alloc(ref.size());
  b.gpu->matmul(dw, b.dev_f(x), p.T, b.dev_f(bias), dy);
  auto out = b.get(dy, ref.size());
  // Few tokens: f32 matvec kernels; many: tensor-core GEMMs on hi/lo bf16 activation pairs (f32 weights: SGEMM).
  const double tol = (p.T <= 8 || p.type == WeightType::F32) ? 1e-4 : 1e-3;
  EXPECT_LE(rel_err(out.data(), ref.data(), ref.size()), tol);
}

std::vector<MatmulCase> matmul_cases() {
  std::vector<MatmulCase> v;
  for (WeightType t : {WeightType::F32, WeightType::BF16, WeightType::MXFP4})
    for (bool tr : {false, true})
      for (int T : {1, 3, 8, 33})
        for (auto [r, c] : {std::pair{64, 128}, std::pair{197, 2880}, std::pair{2880, 64}}) {
          if (t == WeightType::MXFP4 && tr) continue;
          v.push_back({t, tr, r, c, T});
          if (t == WeightType::BF16 && !tr) v.push_back({t, tr, r, c, T, true});
        }
  return v;
}
INSTANTIATE_TEST_SUITE_P(Sweep, CudaMatmul, ::testing::ValuesIn(matmul_cases()));

TEST(CudaOps, RmsnormAddEmbed) {
  REQUIRE_CUDA();
  Pair b(small_config(64, 4, 2, 16, 4, 2, 64, 8));
  ASSERT_TRUE(b.gpu);
  for (int n : {64, 2880}) {
    const int T = 5;
    auto x = b.randn(size_t(T * n)), w = b.randn(size_t(n)), y = b.randn(size_t(T * n));
    std::vector<float> ref(x.size());
    b.cpu->rmsnorm(x.data(), w.data(), T, n, 1e-5, ref.data());
    float* dx = b.dev_f(x);
    float* dout = *b.gpu->alloc(x.size());
    b.gpu->rmsnorm(dx, b.dev_f(w), T, n, 1e-5, dout);
    EXPECT_LE(rel_err(b.get(dout, ref.size()).data(), ref.data(), ref.size()), 1e-5) << "rmsnorm n=" << n;
    std::vector<float> sum = x;
    b.cpu->add(sum.data(), y.data(), sum.size());
    b.gpu->add(dx, b.dev_f(y), x.size());
    EXPECT_LE(rel_err(b.get(dx, sum.size()).data(), sum.data(), sum.size()), 1e-6) << "add n=" << n;
  }
  for (WeightType t : {WeightType::F32, WeightType::BF16}) {
    auto [ht, dt] = b.matrix(t, 300, 64, false);
    const std::vector<int32_t> toks = {0, 299, 17, 17};
    ASSERT_TRUE(begin_one_sequence_step(*b.cpu, toks, 0).ok());
    ASSERT_TRUE(begin_one_sequence_step(*b.gpu, toks, 0).ok());
    std::vector<float> ref(4 * 64);
    b.cpu->embed(ht, ref.data());
    float* dx = *b.gpu->alloc(ref.size());
    b.gpu->embed(dt, dx);
    EXPECT_EQ(b.get(dx, ref.size()), ref);
  }
}

// The fused residual product (decode) and the device argmax.
TEST(CudaOps, MatmulAddAndArgmax) {
  REQUIRE_CUDA();
  Pair b(small_config(64, 4, 2, 16, 4, 2, 64, 8));
  ASSERT_TRUE(b.gpu);
  for (int variant = 0; variant < 3; ++variant) {  // bf16, bf16 packed, MXFP4
    const WeightType t = variant == 2 ? WeightType::MXFP4 : WeightType::BF16;
    for (int T : {1, 4}) {
      auto [hw, dw] = b.matrix(t, 2880, 4096, false);
      if (variant == 1) dw = *cuda_pack_bf16(*b.gpu, dw);
      auto x = b.randn(size_t(T) * 4096), bias = b.randn(2880), y = b.randn(size_t(T) * 2880);
      std::vector<float> ref(y.size());
      b.cpu->matmul(hw, x.data(), T, bias.data(), ref.data());
      b.cpu->add(ref.data(), y.data(), ref.size());
      float* dy = b.dev_f(y);
      ASSERT_TRUE(b.gpu->matmul_add(dw, b.dev_f(x), T, b.dev_f(bias), dy));
      EXPECT_LE(rel_err(b.get(dy, ref.size()).data(), ref.data(), ref.size()), 1e-4) << "T=" << T << " variant " << variant;
    }
  }
  for (int n : {1, 300, 201088}) {
    auto x = b.randn(size_t(n));
    const int want = int(std::max_element(x.begin(), x.end()) - x.begin());
    auto got = b.gpu->argmax(b.dev_f(x), n);
    ASSERT_TRUE(got.ok()) << got.status().message();
    EXPECT_EQ(*got, want) << "n=" << n;
    std::vector<float> ties(size_t(n), 1.0f);  // first index on ties
    EXPECT_EQ(*b.gpu->argmax(b.dev_f(ties), n), 0);
  }
}

// Packed bf16 (packed_bf16.cu) with every kind of escape: zeros, values far below their row's largest,
// subnormals, rows of zeros, rows whose largest is huge. The prefill path decodes the planes back to bf16
// (its GEMM must give the plain matrix's output bit for bit); the decode kernels apply the
// escapes as corrections (against the CPU's product of the same weights, to f32 rounding).
TEST(CudaOps, PackedBf16IsLossless) {
  REQUIRE_CUDA();
  Pair b(small_config(64, 4, 2, 16, 4, 2, 64, 8));
  ASSERT_TRUE(b.gpu);
  for (int cols : {64, 2880}) {
    const int rows = 41;
    std::vector<uint16_t> w(size_t(rows) * size_t(cols));
    std::normal_distribution<float> nd(0.0f, 1.0f);
    size_t planted = 0;
    for (int r = 0; r < rows; ++r) {
      const float scale = std::ldexp(1.0f, r % 24 - 12);
      for (int c = 0; c < cols; ++c) {
        float v = nd(b.rng) * scale;
        if (r == 3) v = 0.0f;                                  // a row of zeros
        if (r == 4) v = c == 5 ? 1.5f : 0.0f;                  // one nonzero
        if (r == 5) v = nd(b.rng) * 1e30f;                     // huge values (exponent field > 200)
        if (r != 3 && r != 4 && c % 7 == 3) v = 0.0f, ++planted;           // zeros among normal values
        if (r != 3 && r != 4 && c % 11 == 6) v = scale * 1e-7f, ++planted;  // far below the row's largest
        uint16_t bits = f32_to_bf16(v);
        if (r == 6 && c % 5 == 0) bits = uint16_t(1 + c % 120), ++planted;  // subnormals
        w[size_t(r) * size_t(cols) + size_t(c)] = bits;
      }
    }
    MatrixRef hw{WeightType::BF16, nullptr, nullptr, rows, cols, false};
    hw.data = b.keep(w.data(), w.size() * 2);
    MatrixRef dw = hw;
    dw.data = b.dev(w.data(), w.size() * 2);
    const CudaPackStats before = cuda_pack_stats(*b.gpu);
    auto packed = cuda_pack_bf16(*b.gpu, dw);
    ASSERT_TRUE(packed.ok()) << packed.status().message();
    const CudaPackStats after = cuda_pack_stats(*b.gpu);
    EXPECT_EQ(after.weights - before.weights, w.size());
    EXPECT_GE(after.escapes - before.escapes, planted) << "cols " << cols;
    EXPECT_LT(after.escapes - before.escapes, w.size() / 2) << "cols " << cols;

    // Exact: the prefill path decodes the planes to bf16 and patches the escapes in, then runs the same GEMM as
    // for the plain matrix: the outputs must agree bit for bit.
    {
      const int T = 33;
      auto x = b.randn(size_t(T) * size_t(cols));
      float* dx = b.dev_f(x);
      float* dp = *b.gpu->alloc(size_t(T) * size_t(rows));
      float* dq = *b.gpu->alloc(size_t(T) * size_t(rows));
      b.gpu->matmul(*packed, dx, T, nullptr, dp);
      b.gpu->matmul(dw, dx, T, nullptr, dq);
      const auto yp = b.get(dp, size_t(T) * size_t(rows)), yq = b.get(dq, size_t(T) * size_t(rows));
      EXPECT_EQ(std::memcmp(yp.data(), yq.data(), yp.size() * 4), 0) << "cols " << cols;
    }
    // The decode kernels (1 and 4 tokens, the fused residual add) against the CPU and the plain bf16 kernels.
    for (int Td : {1, 4}) {
      auto x = b.randn(size_t(Td) * size_t(cols));
      std::vector<float> ref(size_t(Td) * size_t(rows));
      b.cpu->matmul(hw, x.data(), Td, nullptr, ref.data());
      float* dp = *b.gpu->alloc(ref.size());
      float* dq = *b.gpu->alloc(ref.size());
      float* dx = b.dev_f(x);
      b.gpu->matmul(*packed, dx, Td, nullptr, dp);
      b.gpu->matmul(dw, dx, Td, nullptr, dq);
      const auto yp = b.get(dp, ref.size()), yq = b.get(dq, ref.size());
      for (int t = 0; t < Td; ++t) {  // per token and row: rows span 2^-12 .. 2^30 in scale
        for (int r = 0; r < rows; ++r) {
          const size_t i = size_t(t) * size_t(rows) + size_t(r);
          double mag = 0;
          for (int c = 0; c < cols; ++c)
            mag += std::fabs(double(bf16_to_f32(w[size_t(r) * size_t(cols) + size_t(c)])) * x[size_t(t) * size_t(cols) + size_t(c)]);
          EXPECT_LE(std::fabs(double(yp[i]) - ref[i]), 1e-6 * mag + 1e-30) << "r " << r << " T " << Td;
          EXPECT_LE(std::fabs(double(yp[i]) - yq[i]), 1e-6 * mag + 1e-30) << "r " << r << " T " << Td;
        }
      }
      std::vector<float> acc = b.randn(ref.size());
      float* da = b.dev_f(acc);
      ASSERT_TRUE(b.gpu->matmul_add(*packed, dx, Td, nullptr, da));
      const auto ya = b.get(da, ref.size());
      for (size_t i = 0; i < ref.size(); ++i) EXPECT_NEAR(ya[i] - acc[i], yp[i], 1e-5 * (std::fabs(yp[i]) + std::fabs(acc[i])) + 1e-30);
    }
  }
}

// Packed bf16 with many rows (the output head's shape class: a grid of many waves, launched as a programmatic
// dependent of the kernel before it). Against the CPU, rows of every scale, escapes in some rows.
TEST(CudaOps, PackedBf16ManyRows) {
  REQUIRE_CUDA();
  Pair b(small_config(64, 4, 2, 16, 4, 2, 64, 8));
  ASSERT_TRUE(b.gpu);
  for (int cols : {256, 2880}) {
    const int rows = 25411;
    std::vector<uint16_t> w(size_t(rows) * size_t(cols));
    std::normal_distribution<float> nd(0.0f, 1.0f);
    for (int r = 0; r < rows; ++r) {
      const float scale = std::ldexp(1.0f, r % 24 - 12);
      for (int c = 0; c < cols; ++c) {
        float v = nd(b.rng) * scale;
        if ((r * 7 + c) % 97 == 5) v = 0.0f;                     // escapes: zeros
        if (r % 13 == 0 && c % 31 == 1) v = scale * 1e-7f;      // and values far below the row's largest
        w[size_t(r) * size_t(cols) + size_t(c)] = f32_to_bf16(v);
      }
    }
    MatrixRef hw{WeightType::BF16, nullptr, nullptr, rows, cols, false};
    hw.data = b.keep(w.data(), w.size() * 2);
    MatrixRef dw = hw;
    dw.data = b.dev(w.data(), w.size() * 2);
    auto packed = cuda_pack_bf16(*b.gpu, dw);
    ASSERT_TRUE(packed.ok()) << packed.status().message();
    auto x = b.randn(size_t(cols));
    std::vector<float> ref(static_cast<size_t>(rows));
    b.cpu->matmul(hw, x.data(), 1, nullptr, ref.data());
    float* dp = *b.gpu->alloc(ref.size());
    b.gpu->matmul(*packed, b.dev_f(x), 1, nullptr, dp);
    const auto yp = b.get(dp, ref.size());
    int bad = 0;
    for (int r = 0; r < rows; ++r) {
      double mag = 0;
      for (int c = 0; c < cols; ++c)
        mag += std::fabs(double(bf16_to_f32(w[size_t(r) * size_t(cols) + size_t(c)])) * x[size_t(c)]);
      if (!(std::fabs(double(yp[size_t(r)]) - ref[size_t(r)]) <= 1e-6 * mag + 1e-30) && bad++ < 5)
        ADD_FAILURE() << "cols " << cols << " row " << r << ": " << yp[size_t(r)] << " vs " << ref[size_t(r)];
    }
    EXPECT_EQ(bad, 0) << "cols " << cols;
  }
}

// Decode fusions: RMSNorm + q/k/v in one launch, RMSNorm + router + top-k (then the experts) in one;
// against the CPU's rmsnorm + matmul / rmsnorm + moe.
TEST(CudaOps, FusedNormQkv) {
  REQUIRE_CUDA();
  for (auto [H, nh, nkv, d] : {std::tuple{64, 4, 2, 16}, std::tuple{2880, 64, 8, 64}}) {
    Pair b(small_config(H, nh, nkv, d, 4, 2, 64, 8));
    ASSERT_TRUE(b.gpu);
    for (int variant = 0; variant < 3; ++variant) {  // f32, bf16, bf16 packed
      const WeightType t = variant == 0 ? WeightType::F32 : WeightType::BF16;
      LayerWeights hl, dl;
      std::tie(hl.q, dl.q) = b.matrix(t, nh * d, H, false);
      std::tie(hl.k, dl.k) = b.matrix(t, nkv * d, H, false);
      std::tie(hl.v, dl.v) = b.matrix(t, nkv * d, H, false);
      if (variant == 2)
        for (MatrixRef* m : {&dl.q, &dl.k, &dl.v}) *m = *cuda_pack_bf16(*b.gpu, *m);
      auto qb = b.randn(size_t(nh * d)), kb = b.randn(size_t(nkv * d)), vb = b.randn(size_t(nkv * d));
      auto nw = b.randn(size_t(H));
      hl.q_bias = qb.data(), hl.k_bias = kb.data(), hl.v_bias = vb.data(), hl.attn_norm = nw.data();
      dl.q_bias = b.dev_f(qb), dl.k_bias = b.dev_f(kb), dl.v_bias = b.dev_f(vb), dl.attn_norm = b.dev_f(nw);
      for (int T : {1, 3, 4, 5}) {
        auto x = b.randn(size_t(T * H), 3.0f);
        std::vector<float> h(x.size()), q(size_t(T * nh * d)), k(size_t(T * nkv * d)), v(k.size());
        b.cpu->rmsnorm(x.data(), nw.data(), T, H, 1e-5, h.data());
        b.cpu->matmul(hl.q, h.data(), T, hl.q_bias, q.data());
        b.cpu->matmul(hl.k, h.data(), T, hl.k_bias, k.data());
        b.cpu->matmul(hl.v, h.data(), T, hl.v_bias, v.data());
        float *dq = *b.gpu->alloc(q.size()), *dk = *b.gpu->alloc(k.size()), *dv = *b.gpu->alloc(v.size());
        const bool fused = b.gpu->norm_qkv(dl, b.dev_f(x), T, 1e-5, dq, dk, dv);
        EXPECT_EQ(fused, T <= 4) << "T=" << T;  // larger steps go the unfused way
        if (!fused) continue;
        EXPECT_LE(rel_err(b.get(dq, q.size()).data(), q.data(), q.size()), 1e-4) << "q H=" << H << " T=" << T;
        EXPECT_LE(rel_err(b.get(dk, k.size()).data(), k.data(), k.size()), 1e-4) << "k H=" << H << " T=" << T;
        EXPECT_LE(rel_err(b.get(dv, v.size()).data(), v.data(), v.size()), 1e-4) << "v H=" << H << " T=" << T;
      }
    }
  }
}

TEST(CudaOps, FusedNormMoe) {
  REQUIRE_CUDA();
  for (auto [H, I, E, k] : {std::tuple{64, 64, 4, 2}, std::tuple{2880, 2880, 32, 4}, std::tuple{256, 64, 128, 4}}) {
    Pair b(small_config(H, 4, 2, 16, E, k, I, 8));
    ASSERT_TRUE(b.gpu);
    LayerWeights hl, dl;
    std::tie(hl.router, dl.router) = b.matrix(WeightType::BF16, E, H, false);
    std::tie(hl.gate_up, dl.gate_up) = b.experts(WeightType::MXFP4, 2 * I, H, false, E);
    std::tie(hl.down, dl.down) = b.experts(WeightType::MXFP4, H, I, false, E);
    auto rb = b.randn(size_t(E)), gb = b.randn(size_t(E * 2 * I)), db = b.randn(size_t(E * H)), nw = b.randn(size_t(H));
    hl.router_bias = rb.data(), dl.router_bias = b.dev_f(rb);
    hl.gate_up_bias = gb.data(), dl.gate_up_bias = b.dev_f(gb);
    hl.down_bias = db.data(), dl.down_bias = b.dev_f(db);
    hl.mlp_norm = nw.data(), dl.mlp_norm = b.dev_f(nw);
    for (int T : {1, 4, 1, 2}) {  // repeated launches: the kernel's last-block counter must reset itself
      std::vector<int32_t> toks(size_t(T), 0);
      ASSERT_TRUE(begin_one_sequence_step(*b.cpu, toks, 0).ok());
      ASSERT_TRUE(begin_one_sequence_step(*b.gpu, toks, 0).ok());
      auto x = b.randn(size_t(T * H), 3.0f);
      std::vector<float> h(x.size()), ref = x;
      b.cpu->rmsnorm(x.data(), nw.data(), T, H, 1e-5, h.data());
      b.cpu->moe(hl, h.data(), T, ref.data());
      float* dx = b.dev_f(x);
      float* dh = *b.gpu->alloc(x.size());
      ASSERT_TRUE(b.gpu->norm_moe(dl, dx, T, 1e-5, dh)) << "T=" << T;
      EXPECT_LE(rel_err(b.get(dh, h.size()).data(), h.data(), h.size()), 1e-5) << "h E=" << E << " T=" << T;
      EXPECT_LE(rel_err(b.get(dx, ref.size()).data(), ref.data(), ref.size()), 1e-4) << "x E=" << E << " T=" << T;
    }
  }
}

// The device draw against Sampler::sample_at on the host at the same u: the same token (a mismatch needs u
// within float rounding of a boundary between two tokens' probability mass).
TEST(CudaOps, SampleMatchesHostDraw) {
  REQUIRE_CUDA();
  Pair b(small_config(64, 4, 2, 16, 4, 2, 64, 8));
  ASSERT_TRUE(b.gpu);
  for (int n : {300, 201088}) {
    for (float temp : {0.7f, 1.0f}) {
      auto x = b.randn(size_t(n), 3.0f);
      float* dx = b.dev_f(x);
      Sampler host({.temperature = temp, .seed = 1});
      std::mt19937_64 rng(9);
      int mismatches = 0;
      for (int i = 0; i < 100; ++i) {
        const double u = std::uniform_real_distribution<double>(0.0, 1.0)(rng);
        auto got = b.gpu->sample(dx, n, temp, u);
        ASSERT_TRUE(got.ok()) << got.status().message();
        ASSERT_GE(*got, 0);
        ASSERT_LT(*got, n);
        mismatches += *got != host.sample_at(x, u);
      }
      EXPECT_LE(mismatches, 1) << "n=" << n << " T=" << temp;
    }
  }
}

// A batched step's draws (one launch for the greedy rows, a sampling launch per sampled row) against each
// row drawn alone: greedy rows the host's argmax (first index on ties: one row is all equal), sampled rows the
// single-row device draw at the same u.
TEST(CudaOps, DrawRowsMatchOneRowDraws) {
  REQUIRE_CUDA();
  Pair b(small_config(64, 4, 2, 16, 4, 2, 64, 8));
  ASSERT_TRUE(b.gpu);
  for (int n : {1001, 201088}) {
    const int R = 37;
    auto x = b.randn(size_t(R) * size_t(n), 3.0f);
    std::fill(x.begin() + 5 * n, x.begin() + 6 * n, 1.5f);
    float* dx = b.dev_f(x);
    std::vector<float> temps(static_cast<size_t>(R));
    std::vector<double> us(static_cast<size_t>(R));
    for (int r = 0; r < R; ++r) temps[size_t(r)] = r % 3 == 2 ? 0.8f : 0.0f, us[size_t(r)] = (r + 0.5) / R;
    std::vector<int32_t> got(static_cast<size_t>(R), -1);
    auto ok = b.gpu->draw_rows(dx, R, n, temps, us, got.data());
    ASSERT_TRUE(ok.ok()) << ok.status().message();
    for (int r = 0; r < R; ++r) {
      const float* row = x.data() + size_t(r) * size_t(n);
      if (temps[size_t(r)] <= 0.0f) {
        EXPECT_EQ(got[size_t(r)], int32_t(std::max_element(row, row + n) - row)) << "n=" << n << " row " << r;
      } else {
        auto one = b.gpu->sample(dx + size_t(r) * size_t(n), n, temps[size_t(r)], us[size_t(r)]);
        ASSERT_TRUE(one.ok());
        EXPECT_EQ(got[size_t(r)], *one) << "n=" << n << " row " << r;
      }
    }
  }
}

struct AttnCase {
  int nh, nkv, d, window;
  KvPrecision kv;
  int max_context = 512;  // the full layers' cache: it sets the number of decode splits (one per 128 keys)
};
class CudaAttention : public ::testing::TestWithParam<AttnCase> {};

// A prefill chunk, more chunks, then single-token decode steps, comparing every step's output.
TEST_P(CudaAttention, MatchesCpuOverSteps) {
  REQUIRE_CUDA();
  const AttnCase p = GetParam();
  ModelConfig c = small_config(64, p.nh, p.nkv, p.d, 4, 2, 64, p.window > 0 ? p.window : 8);
  c.max_position_embeddings = std::max(c.max_position_embeddings, p.max_context);
  Pair b(c);
  ASSERT_TRUE(b.gpu);
  const KvCacheOptions ko{p.max_context, 40, p.kv};
  auto kc = b.cpu->create_kv_cache(c, ko);
  auto kg = b.gpu->create_kv_cache(c, ko);
  ASSERT_TRUE(kc.ok() && kg.ok());
  const int layer = p.window > 0 ? 0 : 1;
  auto sinks = b.randn(size_t(p.nh));
  float* dsinks = b.dev_f(sinks);
  const size_t qd = size_t(p.nh * p.d), kd = size_t(p.nkv * p.d);
  float* dout = *b.gpu->alloc(40 * qd);
  int pos = 0;
  for (int T : {40, 17, 1, 1, 3, 1, 40, 40, 1, 1, 1, 1, 1}) {
    std::vector<int32_t> toks(size_t(T), 1);
    ASSERT_TRUE(begin_one_sequence_step(*b.cpu, toks, pos, kc->get()).ok());
    ASSERT_TRUE(begin_one_sequence_step(*b.gpu, toks, pos, kg->get()).ok());
    auto q = b.randn(size_t(T) * qd), k = b.randn(size_t(T) * kd), v = b.randn(size_t(T) * kd);
    std::vector<float> out(size_t(T) * qd);
    float* dv = b.dev_f(v);
    std::vector<float> qc = q, kcpy = k;
    // device copies of q and k (scratch of attention: RoPE may rotate them in place)
    float* q0 = b.dev_f(q);
    float* k0 = b.dev_f(k);
    b.cpu->attention(layer, qc.data(), kcpy.data(), v.data(), sinks.data(), p.window, out.data());
    b.gpu->attention(layer, q0, k0, dv, dsinks, p.window, dout);
    const double tol = p.kv == KvPrecision::F32 ? 1e-4 : 1e-2;
    EXPECT_LE(rel_err(b.get(dout, out.size()).data(), out.data(), out.size()), tol) << "step at pos " << pos;
    pos += T;
  }
}
INSTANTIATE_TEST_SUITE_P(Sweep, CudaAttention,
                         ::testing::Values(AttnCase{4, 1, 16, 16, KvPrecision::F32}, AttnCase{8, 2, 32, 0, KvPrecision::F32},
                                           AttnCase{8, 1, 64, 8, KvPrecision::F32}, AttnCase{16, 2, 64, 0, KvPrecision::BF16},
                                           AttnCase{64, 8, 64, 128, KvPrecision::F32}, AttnCase{6, 6, 128, 0, KvPrecision::F32},
                                           AttnCase{64, 8, 64, 0, KvPrecision::BF16},
                                           AttnCase{64, 8, 64, 128, KvPrecision::BF16}, AttnCase{4, 1, 16, 16, KvPrecision::BF16},
                                           AttnCase{6, 6, 128, 0, KvPrecision::BF16}, AttnCase{8, 2, 32, 8, KvPrecision::BF16},
                                           // decode with several splits (merged in the kernel): the 20b
                                           // head shape, and d = 16 with as many splits as fit the merge
                                           AttnCase{64, 8, 64, 0, KvPrecision::BF16, 4096},
                                           AttnCase{4, 1, 16, 0, KvPrecision::BF16, 131072}));

// A step of many sequences, each with its own cache (backend.h's Step): most decode one token (on a bf16 cache
// the CUDA backend attends to all of them in one launch), some run chunks (2..8 rows: the decode kernel apart;
// more: the prefill kernel), one has an f32 cache; caches of different sizes (different split counts in one
// launch), positions past the window. Every row against the CPU backend over several steps.
class CudaAttentionSteps : public ::testing::TestWithParam<AttnCase> {};
TEST_P(CudaAttentionSteps, ManySequencesMatchCpu) {
  REQUIRE_CUDA();
  const AttnCase p = GetParam();
  ModelConfig c = small_config(64, p.nh, p.nkv, p.d, 4, 2, 64, p.window > 0 ? p.window : 8);
  c.max_position_embeddings = 4096;
  Pair b(c);
  ASSERT_TRUE(b.gpu);
  constexpr int kSeqs = 12, kMaxBatch = 40;
  const int layer = p.window > 0 ? 0 : 1;  // the window small_config gives that layer
  std::vector<std::unique_ptr<KvCache>> kc, kg;
  std::vector<bool> f32;
  for (int i = 0; i < kSeqs; ++i) {
    // Full layers: 4096 positions (8 decode splits of 512 keys), 1100 (3), 300 (1).
    const int ctx = i % 3 == 0 ? 4096 : i % 3 == 1 ? 1100 : 300;
    f32.push_back(i == 5);
    const KvCacheOptions ko{ctx, kMaxBatch, f32.back() ? KvPrecision::F32 : KvPrecision::BF16};
    auto a = b.cpu->create_kv_cache(c, ko);
    auto g = b.gpu->create_kv_cache(c, ko);
    ASSERT_TRUE(a.ok() && g.ok());
    kc.push_back(std::move(*a));
    kg.push_back(std::move(*g));
  }
  auto sinks = b.randn(size_t(p.nh));
  float* dsinks = b.dev_f(sinks);
  const size_t qd = size_t(p.nh * p.d), kd = size_t(p.nkv * p.d);
  std::vector<int> pos(kSeqs, 0);
  // Prompts of 1..kMaxBatch rows in turns until each sequence has its own length (up to 230: past the
  // windows), then decode steps where a few sequences still run chunks.
  std::vector<int> prompt(kSeqs);
  for (int i = 0; i < kSeqs; ++i) prompt[size_t(i)] = 1 + (i * 83) % 230;
  for (int step = 0; step < 14; ++step) {
    std::vector<StepSeq> cs, gs;
    int T = 0;
    for (int i = 0; i < kSeqs; ++i) {
      const int left = prompt[size_t(i)] - pos[size_t(i)];
      int n = left > 0 ? std::min(left, kMaxBatch) : 1;
      if (step >= 8 && i % 4 == 1) n = 2 + (step + i) % 14;  // chunks beside the decode rows: 2..15 rows
      if (step == 10 && i == 7) continue;                     // sits a step out
      cs.push_back(StepSeq{kc[size_t(i)].get(), T, n, pos[size_t(i)]});
      gs.push_back(StepSeq{kg[size_t(i)].get(), T, n, pos[size_t(i)]});
      T += n;
    }
    std::vector<int32_t> toks(size_t(T), 1);
    const int32_t last = T - 1;
    ASSERT_TRUE(b.cpu->begin_step(Step{toks, cs, std::span<const int32_t>(&last, 1), 0}).ok());
    ASSERT_TRUE(b.gpu->begin_step(Step{toks, gs, std::span<const int32_t>(&last, 1), 0}).ok());
    auto q = b.randn(size_t(T) * qd), k = b.randn(size_t(T) * kd), v = b.randn(size_t(T) * kd);
    std::vector<float> out(size_t(T) * qd);
    float* q0 = b.dev_f(q);
    float* k0 = b.dev_f(k);
    float* dv = b.dev_f(v);
    float* dout = *b.gpu->alloc(size_t(T) * qd);
    b.cpu->attention(layer, q.data(), k.data(), v.data(), sinks.data(), p.window, out.data());
    b.gpu->attention(layer, q0, k0, dv, dsinks, p.window, dout);
    const std::vector<float> got = b.get(dout, out.size());
    int e = 0;
    for (int i = 0; i < kSeqs; ++i) {
      if (step == 10 && i == 7) continue;
      const StepSeq& sq = cs[size_t(e++)];
      const size_t o = size_t(sq.row0) * qd, n = size_t(sq.n) * qd;
      EXPECT_LE(rel_err(got.data() + o, out.data() + o, n), f32[size_t(i)] ? 1e-4 : 1e-2)
          << "step " << step << ", sequence " << i << ": " << sq.n << " rows at position " << sq.pos0;
      pos[size_t(i)] += sq.n;
    }
  }
}
INSTANTIATE_TEST_SUITE_P(Sweep, CudaAttentionSteps,
                         ::testing::Values(AttnCase{64, 8, 64, 128, KvPrecision::BF16},
                                           AttnCase{64, 8, 64, 0, KvPrecision::BF16},
                                           AttnCase{4, 1, 16, 16, KvPrecision::BF16},
                                           AttnCase{8, 2, 32, 8, KvPrecision::BF16},
                                           AttnCase{6, 6, 128, 0, KvPrecision::BF16}));

struct MoeCase {
  WeightType type;
  bool transposed;
  int H, I, E, k, T;
};
class CudaMoe : public ::testing::TestWithParam<MoeCase> {};

TEST_P(CudaMoe, MatchesCpu) {
  REQUIRE_CUDA();
  const MoeCase p = GetParam();
  ModelConfig c = small_config(p.H, 4, 2, 16, p.E, p.k, p.I, 8);
  Pair b(c);
  ASSERT_TRUE(b.gpu);
  LayerWeights hl, dl;
  auto [hr, dr] = b.matrix(WeightType::BF16, p.E, p.H, false);
  hl.router = hr, dl.router = dr;
  std::tie(hl.gate_up, dl.gate_up) = b.experts(p.type, 2 * p.I, p.H, p.transposed, p.E);
  std::tie(hl.down, dl.down) = b.experts(p.type, p.H, p.I, p.transposed, p.E);
  auto rb = b.randn(size_t(p.E)), gb = b.randn(size_t(p.E * 2 * p.I)), db = b.randn(size_t(p.E * p.H));
  hl.router_bias = rb.data(), dl.router_bias = b.dev_f(rb);
  hl.gate_up_bias = gb.data(), dl.gate_up_bias = b.dev_f(gb);
  hl.down_bias = db.data(), dl.down_bias = b.dev_f(db);
  auto h = b.randn(size_t(p.T * p.H)), x = b.randn(size_t(p.T * p.H));
  std::vector<int32_t> toks(size_t(p.T), 0);
  ASSERT_TRUE(begin_one_sequence_step(*b.cpu, toks, 0).ok());
  ASSERT_TRUE(begin_one_sequence_step(*b.gpu, toks, 0).ok());
  std::vector<float> ref = x;
  b.cpu->moe(hl, h.data(), p.T, ref.data());
  float* dx = b.dev_f(x);
  b.gpu->moe(dl, b.dev_f(h), p.T, dx);
  // Many rows: MXFP4 experts on the tensor cores with f16 hi/lo inputs (as decode); other types through the
  // cuBLAS path, where f32 expert weights are rounded to bf16.
  const bool grouped_tc = p.type == WeightType::MXFP4 && !p.transposed && p.T * p.k <= 64 * p.E;
  const double tol = p.T <= 8 || grouped_tc ? 1e-4 : p.type == WeightType::F32 ? 1e-2 : 1e-3;
  const std::vector<float> got = b.get(dx, ref.size());
  EXPECT_LE(rel_err(got.data(), ref.data(), ref.size()), tol);
  // Again on a fresh copy of x: the same bits (the first call also computed the row-scale maxima that the
  // tensor-core gate_up kernel keeps; the second reuses them).
  float* dx2 = b.dev_f(x);
  b.gpu->moe(dl, b.dev_f(h), p.T, dx2);
  EXPECT_EQ(b.get(dx2, ref.size()), got);
}

std::vector<MoeCase> moe_cases() {
  std::vector<MoeCase> v;
  for (int T : {1, 2, 8, 37})
    for (auto [t, tr] : {std::pair{WeightType::MXFP4, false}, std::pair{WeightType::BF16, false},
                         std::pair{WeightType::BF16, true}, std::pair{WeightType::F32, true}}) {
      v.push_back({t, tr, 64, 64, 4, 2, T});
      v.push_back({t, tr, 128, 96, 32, 4, T});
    }
  // gpt-oss-20b expert shapes through the MXFP4 decode kernels (two passes of blocks per row at H = 4096).
  for (int T : {1, 3}) {
    v.push_back({WeightType::MXFP4, false, 2880, 2880, 32, 4, T});
    v.push_back({WeightType::MXFP4, false, 4096, 160, 8, 8, T});
    v.push_back({WeightType::MXFP4, false, 160, 4096, 8, 4, T});  // two passes of blocks per down row
  }
  // Many rows through the grouped tensor-core kernels: tiles of 4 inputs (37 x 4 assignments over 32 experts),
  // of 8 (200 x 4), staging past 48 KB of shared memory (H or I = 4096), 64 assignments per expert (the most
  // it takes), and 2048 rows (past that: the cuBLAS path).
  for (int T : {37, 200}) v.push_back({WeightType::MXFP4, false, 2880, 2880, 32, 4, T});
  v.push_back({WeightType::MXFP4, false, 4096, 160, 8, 8, 37});
  v.push_back({WeightType::MXFP4, false, 160, 4096, 8, 4, 37});
  v.push_back({WeightType::MXFP4, false, 64, 64, 4, 2, 128});
  v.push_back({WeightType::MXFP4, false, 64, 64, 4, 2, 2048});
  return v;
}
INSTANTIATE_TEST_SUITE_P(Sweep, CudaMoe, ::testing::ValuesIn(moe_cases()));

// End to end: the tiny golden checkpoints on the CUDA backend against transformers float32.

class CudaGolden : public ::testing::TestWithParam<std::tuple<std::string, int, KvPrecision>> {};

TEST_P(CudaGolden, MatchesTransformersFloat32) {
  REQUIRE_CUDA();
  const auto& [name, max_batch, kvp] = GetParam();
  auto model = Model::open(golden_dir(name), {.device = "cuda"});
  ASSERT_TRUE(model.ok()) << model.status().message();
  auto golden = npy_read_f32(golden_dir(name) + "/logits_hf_f32.npy");
  ASSERT_TRUE(golden.ok()) << golden.status().message();
  auto tokens = read_tokens(golden_dir(name) + "/tokens.txt");
  const size_t V = size_t((*model)->config().vocab_size);
  auto session = Session::create(**model, {.max_context = 256, .max_batch = max_batch, .kv_precision = kvp});
  ASSERT_TRUE(session.ok()) << session.status().message();
  std::vector<float> logits;
  if (max_batch == 1) {
    // Token by token through forward(): the decode path (and its recorded graph).
    for (size_t t = 0; t < tokens.size(); ++t) {
      auto r = (*session)->forward(std::span<const int32_t>(&tokens[t], 1));
      ASSERT_TRUE(r.ok()) << r.status().message();
      logits.insert(logits.end(), r->begin(), r->end());
    }
  } else {
    auto r = (*session)->forward(tokens, &logits);
    ASSERT_TRUE(r.ok()) << r.status().message();
  }
  double worst = 0;
  int agree = 0, counted = 0;
  for (size_t t = 0; t < tokens.size(); ++t) {
    const float* a = logits.data() + t * V;
    const float* g = golden->data.data() + t * V;
    const double e = rel_err(a, g, V);
    worst = std::max(worst, e);
    EXPECT_LE(e, 1e-2) << name << " token " << t;
    // Top-1 agreement outside near-ties (golden top-2 gap under 1% of the logit range).
    std::vector<float> s(g, g + V);
    std::partial_sort(s.begin(), s.begin() + 2, s.end(), std::greater<float>());
    const float range = *std::max_element(g, g + V) - *std::min_element(g, g + V);
    if (s[0] - s[1] < 0.01f * range) continue;
    ++counted;
    agree += std::max_element(a, a + V) - a == std::max_element(g, g + V) - g;
  }
  EXPECT_GE(agree, int(std::ceil(0.99 * counted))) << agree << " of " << counted;
  if (max_batch == 1) {
    // Greedy decoding with the device argmax picks the argmax of the same logits.
    auto s2 = Session::create(**model, {.max_context = 256, .max_batch = 1, .kv_precision = kvp});
    ASSERT_TRUE(s2.ok());
    for (size_t t = 0; t < tokens.size(); ++t) {
      auto id = (*s2)->forward_greedy(std::span<const int32_t>(&tokens[t], 1));
      ASSERT_TRUE(id.ok()) << id.status().message();
      const float* a = logits.data() + t * V;
      EXPECT_EQ(a[*id], *std::max_element(a, a + V)) << "token " << t;
    }
  }
  std::printf("cuda %s max_batch %d kv %s: worst relative error vs transformers f32 = %.3g, top-1 %d/%d\n",
              name.c_str(), max_batch, kvp == KvPrecision::F32 ? "f32" : "bf16", worst, agree, counted);
}

INSTANTIATE_TEST_SUITE_P(Engine, CudaGolden,
                         ::testing::Combine(::testing::Values("tiny_a", "tiny_b"), ::testing::Values(128, 5, 1),
                                            ::testing::Values(KvPrecision::F32, KvPrecision::BF16)));

// forward_greedy starts the next step with its own argmax before returning it (chained greedy decoding):
// fed back, the tokens equal those of plain forward() steps with the argmax taken on the host; fed another
// token, or interrupted by forward / truncate / reset, the started step is discarded without a trace
// except the one ring slot truncate then keeps out of reach. Sliding window 8 on tiny_a: 40 tokens wrap it.
TEST(CudaBackend, ChainedGreedyDecoding) {
  REQUIRE_CUDA();
  auto model = Model::open(golden_dir("tiny_a"), {.device = "cuda"});
  ASSERT_TRUE(model.ok()) << model.status().message();
  const size_t V = size_t((*model)->config().vocab_size);
  for (const int max_batch : {1, 4}) {
    const SessionOptions so{.max_context = 64, .max_batch = max_batch, .kv_precision = KvPrecision::BF16};
    auto plain = Session::create(**model, so), chained = Session::create(**model, so);
    ASSERT_TRUE(plain.ok() && chained.ok());
    auto host_argmax = [&](std::span<const float> l) { return int32_t(std::max_element(l.begin(), l.end()) - l.begin()); };
    std::vector<int32_t> want, got;
    int32_t a = 7, b = 7;
    for (int i = 0; i < 40; ++i) {
      auto l = (*plain)->forward(std::span<const int32_t>(&a, 1));
      ASSERT_TRUE(l.ok()) << l.status().message();
      ASSERT_EQ(l->size(), V);
      want.push_back(a = host_argmax(*l));
      auto id = (*chained)->forward_greedy(std::span<const int32_t>(&b, 1));
      ASSERT_TRUE(id.ok()) << id.status().message();
      got.push_back(b = *id);
      EXPECT_EQ((*chained)->position(), (*plain)->position());
    }
    EXPECT_EQ(got, want) << "max_batch " << max_batch;
    // Another token than the started step's: discarded, and the result is that of the plain session.
    const int32_t other = (b + 1) % int32_t(V);
    auto l = (*plain)->forward(std::span<const int32_t>(&other, 1));
    auto id = (*chained)->forward_greedy(std::span<const int32_t>(&other, 1));
    ASSERT_TRUE(l.ok() && id.ok());
    EXPECT_EQ(*id, host_argmax(*l));
    // A discarded step wrote the sliding rings' oldest slot: truncate keeps one token less within reach.
    ASSERT_TRUE((*chained)->forward(std::span<const int32_t>(&other, 1)).ok());  // discards the started step
    ASSERT_TRUE((*plain)->forward(std::span<const int32_t>(&other, 1)).ok());
    ASSERT_TRUE((*chained)->forward_greedy(std::span<const int32_t>(&other, 1)).ok());  // starts one more
    ASSERT_TRUE((*plain)->forward(std::span<const int32_t>(&other, 1)).ok());
    const int pos = (*chained)->position();
    EXPECT_EQ(pos, (*plain)->position());
    EXPECT_FALSE((*chained)->truncate(pos - max_batch).ok());
    if (max_batch > 1) {
      ASSERT_TRUE((*chained)->truncate(pos - max_batch + 1).ok());
      ASSERT_TRUE((*plain)->truncate(pos - max_batch + 1).ok());
      std::vector<int32_t> again(size_t(max_batch - 1), 3);
      auto la = (*chained)->forward(again), lb = (*plain)->forward(again);
      ASSERT_TRUE(la.ok() && lb.ok());
      EXPECT_LE(rel_err(la->data(), lb->data(), V), 1e-6);
    }
    (*chained)->reset();
    auto first = (*chained)->forward_greedy(std::span<const int32_t>(&a, 1));  // after reset: a fresh session
    ASSERT_TRUE(first.ok());
  }
}

TEST(CudaBackend, ClearErrorWhenTheModelDoesNotFit) {
  REQUIRE_CUDA();
  auto model = Model::open(golden_dir("tiny_a"), {.device = "cuda", .gpu_memory_limit = 1 << 20});
  ASSERT_FALSE(model.ok());
  EXPECT_NE(model.status().message().find("GiB"), std::string::npos) << model.status().message();
}

}  // namespace

#endif  // GPTOSS_WITH_CUDA
