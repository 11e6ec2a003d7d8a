// Every matmul kernel family available on this CPU against a float64 reference, over formats, layouts,
// shapes (ragged rows/cols where the format allows), token counts, bias and thread counts.
#include "backend/cpu/matmul.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/mxfp4.h"

namespace gptoss::cpu {
namespace {

struct TestWeights {
  MatrixRef ref;
  std::vector<float> f32;
  std::vector<uint16_t> bf16;
  std::vector<uint8_t> blocks, scales;
  std::vector<double> dense;  // decoded W[r, c] row-major, for the reference
};

TestWeights make_weights(WeightType type, bool transposed, int64_t rows, int64_t cols, std::mt19937& rng,
                         bool full_scale_range = false) {
  TestWeights w;
  w.dense.resize(size_t(rows * cols));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  w.ref.type = type;
  w.ref.rows = rows;
  w.ref.cols = cols;
  w.ref.transposed = transposed;
  auto stored_index = [&](int64_t r, int64_t c) { return size_t(transposed ? c * rows + r : r * cols + c); };
  if (type == WeightType::F32) {
    w.f32.resize(w.dense.size());
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) {
        const float v = normal(rng);
        w.f32[stored_index(r, c)] = v;
        w.dense[size_t(r * cols + c)] = v;
      }
    w.ref.data = w.f32.data();
  } else if (type == WeightType::BF16) {
    w.bf16.resize(w.dense.size());
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) {
        const uint16_t h = f32_to_bf16(normal(rng));
        w.bf16[stored_index(r, c)] = h;
        w.dense[size_t(r * cols + c)] = bf16_to_f32(h);
      }
    w.ref.data = w.bf16.data();
  } else {
    const int64_t nb = cols / 32;
    w.blocks.resize(size_t(rows * nb * 16));
    w.scales.resize(size_t(rows * nb));
    std::uniform_int_distribution<int> byte(0, 255);
    // Real checkpoints use scales around 118..136; the wide range checks exponent handling (s = 1..254).
    std::uniform_int_distribution<int> scale(full_scale_range ? 1 : 118, full_scale_range ? 200 : 136);
    for (auto& b : w.blocks) b = uint8_t(byte(rng));
    for (auto& s : w.scales) s = uint8_t(scale(rng));
    std::vector<float> row(static_cast<size_t>(cols));
    for (int64_t r = 0; r < rows; ++r) {
      mxfp4_decode_row(w.blocks.data() + r * nb * 16, w.scales.data() + r * nb, int(cols), row.data());
      for (int64_t c = 0; c < cols; ++c) w.dense[size_t(r * cols + c)] = row[size_t(c)];
    }
    w.ref.data = w.blocks.data();
    w.ref.scales = w.scales.data();
  }
  return w;
}

// ||y - ref||_inf / ||ref||_inf over all [T, rows] outputs (per-element relative error is meaningless
// where a sum cancels).
double max_rel_error(const TestWeights& w, const std::vector<float>& x, int64_t T, const float* bias,
                     const std::vector<float>& y) {
  const int64_t rows = w.ref.rows, cols = w.ref.cols;
  double max_ref = 0, max_err = 0;
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t r = 0; r < rows; ++r) {
      double s = bias ? double(bias[r]) : 0.0;
      for (int64_t c = 0; c < cols; ++c) s += w.dense[size_t(r * cols + c)] * double(x[size_t(t * cols + c)]);
      max_ref = std::max(max_ref, std::fabs(s));
      max_err = std::max(max_err, std::fabs(s - double(y[size_t(t * rows + r)])));
    }
  }
  return max_ref > 0 ? max_err / max_ref : max_err;
}

std::vector<std::string> available_isas() {
  std::vector<std::string> out;
  for (const char* name : {"scalar", "avx2", "avx512"})
    if (matmul_isa_supported(name)) out.push_back(name);
  return out;
}

class IsaGuard {
 public:
  explicit IsaGuard(const std::string& name) { EXPECT_TRUE(set_matmul_isa(name.c_str())) << name; }
  ~IsaGuard() { set_matmul_isa("auto"); }
};

struct Case {
  WeightType type;
  bool transposed;
  int64_t rows, cols;
};

const char* type_name(WeightType t) {
  return t == WeightType::F32 ? "f32" : t == WeightType::BF16 ? "bf16" : "mxfp4";
}

void run_cases(const std::vector<Case>& cases, const std::vector<int64_t>& token_counts, bool full_scales) {
  std::mt19937 rng(1234);
  ThreadPool pool1(1), pool2(2);
  for (const std::string& isa : available_isas()) {
    IsaGuard guard(isa);
    for (const Case& cs : cases) {
      TestWeights w = make_weights(cs.type, cs.transposed, cs.rows, cs.cols, rng, full_scales);
      std::vector<float> bias(size_t(cs.rows));
      std::normal_distribution<float> normal(0.0f, 1.0f);
      for (auto& b : bias) b = normal(rng);
      for (int64_t T : token_counts) {
        std::vector<float> x(size_t(T * cs.cols));
        for (auto& v : x) v = normal(rng);
        for (bool with_bias : {false, true}) {
          const float* bp = with_bias ? bias.data() : nullptr;
          for (int threads : {1, 2}) {
            std::vector<float> y(size_t(T * cs.rows), NAN);
            matmul(w.ref, x.data(), T, bp, y.data(), threads == 1 ? pool1 : pool2);
            const double err = max_rel_error(w, x, T, bp, y);
            ASSERT_LE(err, 1e-5) << isa << " " << type_name(cs.type) << (cs.transposed ? " transposed" : "")
                                 << " [" << cs.rows << "x" << cs.cols << "] T=" << T << " bias=" << with_bias
                                 << " threads=" << threads;
          }
          // matmul_rows over an interior row range leaves the other rows untouched.
          const int64_t r0 = cs.rows / 3, r1 = cs.rows - cs.rows / 4;
          std::vector<float> y(size_t(T * cs.rows), -7.0f);
          matmul_rows(w.ref, x.data(), T, bp, y.data(), r0, r1);
          std::vector<float> full(size_t(T * cs.rows));
          matmul(w.ref, x.data(), T, bp, full.data(), pool1);
          for (int64_t t = 0; t < T; ++t)
            for (int64_t r = 0; r < cs.rows; ++r) {
              const float got = y[size_t(t * cs.rows + r)];
              if (r >= r0 && r < r1) {
                ASSERT_NEAR(got, full[size_t(t * cs.rows + r)],
                            1e-5 * (1 + std::fabs(full[size_t(t * cs.rows + r)])))
                    << isa << " " << type_name(cs.type) << " rows r=" << r << " t=" << t;
              } else {
                ASSERT_EQ(got, -7.0f) << isa << " wrote outside [r0, r1): r=" << r;
              }
            }
        }
      }
    }
  }
}

TEST(CpuMatmul, DenseFormatsRaggedShapes) {
  std::vector<Case> cases;
  // 300 rows: transposed storage on AVX-512 keeps 256 outputs in registers, so this is one whole chunk and
  // a partial one (the other shapes have fewer than 256 rows).
  for (WeightType type : {WeightType::F32, WeightType::BF16})
    for (bool tr : {false, true})
      for (auto [rows, cols] : {std::pair<int64_t, int64_t>{1, 1}, {3, 5}, {17, 33}, {40, 100}, {67, 129},
                                {130, 64}, {33, 300}, {300, 40}})
        cases.push_back({type, tr, rows, cols});
  run_cases(cases, {1, 2, 3, 5, 17, 64}, false);
}

TEST(CpuMatmul, Mxfp4Shapes) {
  std::vector<Case> cases;
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{1, 32}, {3, 64}, {17, 96}, {40, 160}, {67, 288},
                            {130, 32}, {33, 512}})
    cases.push_back({WeightType::MXFP4, false, rows, cols});
  run_cases(cases, {1, 2, 3, 5, 17, 64}, false);
}

TEST(CpuMatmul, Mxfp4WideScaleRange) {
  run_cases({{WeightType::MXFP4, false, 37, 256}}, {1, 5, 17}, true);
}

TEST(CpuMatmul, ModelShapedMatvec) {
  // 2880 columns as in gpt-oss; a slice of the rows keeps the float64 reference quick.
  run_cases({{WeightType::BF16, false, 77, 2880}, {WeightType::MXFP4, false, 45, 2880},
             {WeightType::BF16, true, 70, 2880}},
            {1, 3}, false);
}

TEST(CpuMatmul, IsaSelection) {
  EXPECT_TRUE(set_matmul_isa("scalar"));
  EXPECT_STREQ(matmul_isa(), "scalar");
  EXPECT_FALSE(set_matmul_isa("no-such-isa"));
  EXPECT_STREQ(matmul_isa(), "scalar");
  EXPECT_TRUE(set_matmul_isa("auto"));
}

}  // namespace
}  // namespace gptoss::cpu
