// The fast CPU family (backend/cpu/fast_matmul.h): the int16 activation format, every MXFP4 x int16 kernel
// this CPU can run against the scalar reference (the same integer products: agreement to float rounding),
// the many-token kernels against a float64 reference, and matmul_fast's dispatch and row-range contract.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "backend/cpu/fast_kernels.h"
#include "backend/cpu/matmul_kernels.h"
#include "backend/cpu/fast_matmul.h"
#include "backend/cpu/matmul.h"
#include "backend/cpu/q16.h"
#include "backend/cpu/vec_ops.h"
#include "core/dtype.h"
#include "core/mxfp4.h"

namespace gptoss::cpu {
namespace {

struct Weights {
  MatrixRef ref;
  std::vector<uint16_t> bf16;
  std::vector<float> f32;
  std::vector<uint8_t> blocks, scales;
  std::vector<double> dense;  // W[r, c] decoded, row-major
};

Weights make_weights(WeightType type, int64_t rows, int64_t cols, std::mt19937& rng, int scale_lo = 118,
                     int scale_hi = 136) {
  Weights w;
  w.ref = MatrixRef{type, nullptr, nullptr, rows, cols, false};
  w.dense.resize(size_t(rows * cols));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  if (type == WeightType::MXFP4) {
    const int64_t nb = cols / 32;
    w.blocks.resize(size_t(rows * nb * 16));
    w.scales.resize(size_t(rows * nb));
    std::uniform_int_distribution<int> byte(0, 255), scale(scale_lo, scale_hi);
    for (auto& b : w.blocks) b = uint8_t(byte(rng));
    for (auto& s : w.scales) s = uint8_t(scale(rng));
    std::vector<float> row(static_cast<size_t>(cols));
    for (int64_t r = 0; r < rows; ++r) {
      mxfp4_decode_row(w.blocks.data() + r * nb * 16, w.scales.data() + r * nb, int(cols), row.data());
      for (int64_t c = 0; c < cols; ++c) w.dense[size_t(r * cols + c)] = row[size_t(c)];
    }
    w.ref.data = w.blocks.data();
    w.ref.scales = w.scales.data();
  } else if (type == WeightType::BF16) {
    w.bf16.resize(w.dense.size());
    for (size_t i = 0; i < w.dense.size(); ++i) {
      w.bf16[i] = f32_to_bf16(normal(rng));
      w.dense[i] = bf16_to_f32(w.bf16[i]);
    }
    w.ref.data = w.bf16.data();
  } else {
    w.f32.resize(w.dense.size());
    for (size_t i = 0; i < w.dense.size(); ++i) w.dense[i] = w.f32[i] = normal(rng);
    w.ref.data = w.f32.data();
  }
  return w;
}

std::vector<float> random_x(int64_t n, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(n));
  for (auto& v : x) v = normal(rng);
  return x;
}

// max |y - ref| / max |ref| over [T, rows] (NaN when any y is NaN), ref in float64 from `xd` (the activations the reference uses).
double rel_error(const Weights& w, const std::vector<double>& xd, int64_t T, const float* bias,
                 const std::vector<float>& y) {
  const int64_t rows = w.ref.rows, cols = w.ref.cols;
  double max_ref = 0, max_err = 0;
  for (int64_t t = 0; t < T; ++t)
    for (int64_t r = 0; r < rows; ++r) {
      double s = bias ? double(bias[r]) : 0.0;
      for (int64_t c = 0; c < cols; ++c) s += w.dense[size_t(r * cols + c)] * xd[size_t(t * cols + c)];
      max_ref = std::max(max_ref, std::fabs(s));
      const double e = std::fabs(s - double(y[size_t(t * rows + r)]));
      if (!(e <= max_err)) max_err = e;  // a NaN (an entry never written) sticks: std::max would drop it
    }
  return max_ref > 0 ? max_err / max_ref : max_err;
}

std::vector<double> widen(const std::vector<float>& x) { return {x.begin(), x.end()}; }

// The activations a Q16Act stands for: d * q, back in column order.
std::vector<double> dequantize(const Q16Act& q, int64_t T, int64_t cols) {
  std::vector<double> out(size_t(T * cols));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t b = c / 32;
      const int16_t v = q.q[t * q.stride + q16_pos(b, int(c % 32))];
      out[size_t(t * cols + c)] = double(q.d[t * q.dstride + b]) * v;
    }
  return out;
}

TEST(CpuFastQ16, QuantizeLayoutAndError) {
  std::mt19937 rng(7);
  const int64_t T = 3, cols = 96;
  std::vector<float> x = random_x(T * cols, rng);
  for (int j = 0; j < 32; ++j) x[size_t(32 + j)] = 0.0f;  // an all-zero block: scale 0, codes 0
  x[size_t(2 * cols + 5)] = 1e-30f;                       // a tiny value in a block of ordinary ones: code 0
  Q16Buffer buf;
  const Q16Act q = buf.quantize(x.data(), T, cols);
  ASSERT_EQ(q.nb, 3);
  EXPECT_EQ(q.d[1], 0.0f);
  const std::vector<double> back = dequantize(q, T, cols);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t b = 0; b < q.nb; ++b) {
      const float d = q.d[t * q.dstride + b];
      bool hit_max = d == 0.0f;
      for (int j = 0; j < 32; ++j) {
        const int16_t v = q.q[t * q.stride + q16_pos(b, j)];
        ASSERT_LE(std::abs(int(v)), 32767);
        hit_max |= std::abs(int(v)) == 32767;
        const size_t i = size_t(t * cols + b * 32 + j);
        ASSERT_LE(std::fabs(back[i] - x[i]), 0.5 * d * (1 + 1e-4)) << "t=" << t << " c=" << b * 32 + j;
      }
      EXPECT_TRUE(hit_max) << "the block's largest value maps to +-32767";
    }
  // Column 5 of token 2 (block 0: pair 0, its first lane): odd, the third of the first odd vector.
  EXPECT_EQ(q16_pos(0, 5), 16 + 2);
  EXPECT_EQ(q.q[2 * q.stride + 16 + 2], 0);
  // Pairs: block 1's column 30 (even, k = 15) is in vector 2, second lane; 3 blocks are padded to 2 pairs
  // whose pad block is zero with scale 0.
  EXPECT_EQ(q16_pos(1, 30), 2 * 16 + 8 + 7);
  EXPECT_EQ(q16_pos(2, 0), 64);
  ASSERT_EQ(q.stride, 128);
  ASSERT_EQ(q.dstride, 4);
  for (int64_t t = 0; t < T; ++t) {
    EXPECT_EQ(q.d[t * q.dstride + 3], 0.0f);
    for (int j = 0; j < 32; ++j) EXPECT_EQ(q.q[t * q.stride + q16_pos(3, j)], 0);
  }
}

struct Q16Kernel {
  const char* name;
  Mxfp4Q16RowsFn fn;
  bool available;
};

std::vector<Q16Kernel> q16_kernels() {
  return {
      {"scalar", mxfp4_q16_rows_scalar, true},
#if defined(__x86_64__)
      {"avx2", mxfp4_q16_rows_avx2, matmul_isa_supported("avx2")},
      {"avx512vnni", mxfp4_q16_rows_avx512vnni, cpu_has_avx512_vnni()},
#endif
  };
}

// Every MXFP4 x int16 kernel against float64 on the dequantized activations (the kernels' integer products
// are exact, so only float rounding of the per-block scaled sums remains), and against the unquantized x
// (the quantization error the fast path accepts).
void check_q16_kernel(const Q16Kernel& k) {
  std::mt19937 rng(11);
  struct Shape {
    int64_t rows, cols;
    int scale_lo, scale_hi;
  };
  for (const Shape& s : {Shape{1, 32, 118, 136}, Shape{7, 64, 118, 136}, Shape{37, 288, 118, 136},
                         Shape{45, 2880, 118, 136}, Shape{21, 256, 1, 200}}) {
    Weights w = make_weights(WeightType::MXFP4, s.rows, s.cols, rng, s.scale_lo, s.scale_hi);
    std::vector<float> bias = random_x(s.rows, rng);
    for (int64_t T : {1, 2, 3, 4, 6, 7, 9}) {
      const std::vector<float> x = random_x(T * s.cols, rng);
      Q16Buffer buf;
      const Q16Act q = buf.quantize(x.data(), T, s.cols);
      for (const float* bp : {static_cast<const float*>(nullptr), static_cast<const float*>(bias.data())}) {
        std::vector<float> y(size_t(T * s.rows), NAN);
        k.fn(w.ref, q, T, bp, y.data(), 0, s.rows);
        const double exact_err = rel_error(w, dequantize(q, T, s.cols), T, bp, y);
        const double quant_err = rel_error(w, widen(x), T, bp, y);
        ASSERT_LE(exact_err, 2e-6) << k.name << " [" << s.rows << "x" << s.cols << "] T=" << T;
        ASSERT_LE(quant_err, 1e-4) << k.name << " [" << s.rows << "x" << s.cols << "] T=" << T;
      }
      // A row range writes only its rows.
      std::vector<float> y(size_t(T * s.rows), -7.0f);
      const int64_t r0 = s.rows / 3, r1 = s.rows - s.rows / 4;
      k.fn(w.ref, q, T, nullptr, y.data(), r0, r1);
      for (int64_t t = 0; t < T; ++t)
        for (int64_t r = 0; r < s.rows; ++r)
          if (r < r0 || r >= r1) {
            ASSERT_EQ(y[size_t(t * s.rows + r)], -7.0f) << k.name << " r=" << r;
          }
    }
  }
}

TEST(CpuFastQ16, ScalarKernel) { check_q16_kernel(q16_kernels()[0]); }

#if defined(__x86_64__)
TEST(CpuFastQ16, Avx2Kernel) {
  if (!q16_kernels()[1].available) GTEST_SKIP() << "NOT TESTED HERE: this CPU has no AVX2";
  check_q16_kernel(q16_kernels()[1]);
}

TEST(CpuFastQ16, Avx512VnniKernel) {
  if (!q16_kernels()[2].available)
    GTEST_SKIP() << "NOT TESTED HERE: this CPU has no AVX512-VNNI; run on an AVX-512 machine to test it";
  check_q16_kernel(q16_kernels()[2]);
}

// The many-token kernels against float64: shapes with ragged row counts, token counts around the 3-token
// tile and the 64-token group, columns across the 1024-column block.
void check_gemm(MatmulRowsFn fn, const char* name) {
  std::mt19937 rng(5);
  struct Shape {
    WeightType type;
    int64_t rows, cols;
  };
  for (const Shape& s : {Shape{WeightType::MXFP4, 9, 64}, Shape{WeightType::BF16, 6, 2064},
                         Shape{WeightType::F32, 5, 48}, Shape{WeightType::MXFP4, 13, 2880},
                         Shape{WeightType::BF16, 17, 1024}}) {
    Weights w = make_weights(s.type, s.rows, s.cols, rng);
    std::vector<float> bias = random_x(s.rows, rng);
    for (int64_t T : {1, 2, 4, 5, 66}) {
      const std::vector<float> x = random_x(T * s.cols, rng);
      std::vector<float> y(size_t(T * s.rows), -7.0f);
      const int64_t r0 = s.rows / 4, r1 = s.rows - 1;
      fn(w.ref, x.data(), T, bias.data(), y.data(), 0, r0);
      fn(w.ref, x.data(), T, bias.data(), y.data(), r0, r1);
      for (int64_t t = 0; t < T; ++t) {
        ASSERT_EQ(y[size_t(t * s.rows + s.rows - 1)], -7.0f) << name << " wrote outside its rows";
        y[size_t(t * s.rows + s.rows - 1)] = 0.0f;
      }
      fn(w.ref, x.data(), T, bias.data(), y.data(), r1, s.rows);
      ASSERT_LE(rel_error(w, widen(x), T, bias.data(), y), 1e-5)
          << name << " [" << s.rows << "x" << s.cols << "] T=" << T;
    }
  }
}

TEST(CpuFastGemm, Avx2) {
  if (!matmul_isa_supported("avx2")) GTEST_SKIP() << "NOT TESTED HERE: this CPU has no AVX2";
  check_gemm(kAvx2Rows.gemm, "gemm/avx2");
}

TEST(CpuFastGemm, Avx512) {
  if (!matmul_isa_supported("avx512"))
    GTEST_SKIP() << "NOT TESTED HERE: this CPU has no AVX-512; run on an AVX-512 machine to test it";
  check_gemm(kAvx512Rows.gemm, "gemm/avx512");
}
#endif

// matmul_fast on every ISA this CPU has: the kernel it picks and the result over the pool.
TEST(CpuFastMatmul, DispatchAndResult) {
  std::mt19937 rng(3);
  ThreadPool pool(2);
  for (const char* isa : {"scalar", "avx2", "avx512"}) {
    if (!matmul_isa_supported(isa)) continue;
    ASSERT_TRUE(set_matmul_isa(isa));
    for (WeightType type : {WeightType::MXFP4, WeightType::BF16}) {
      Weights w = make_weights(type, 70, 320, rng);
      for (int64_t T : {1, 3, 4, 9}) {
        const std::string kernel = fast_kernel_name(w.ref, T);
        const bool simd = std::string(isa) != "scalar";
        const int64_t gemm_from = type == WeightType::MXFP4 ? kFastGemmMinTokensMxfp4 : kFastGemmMinTokens;
        if (simd && T >= gemm_from)
          EXPECT_EQ(kernel.substr(0, 5), "gemm/") << isa << " T=" << T;
        else if (type == WeightType::MXFP4)
          EXPECT_EQ(kernel.substr(0, 10), "mxfp4-q16/") << isa << " T=" << T;
        else
          EXPECT_EQ(kernel.substr(0, 6), "exact/") << isa << " T=" << T;
        const std::vector<float> x = random_x(T * w.ref.cols, rng);
        std::vector<float> y(size_t(T * w.ref.rows), NAN);
        matmul_fast(w.ref, x.data(), T, nullptr, y.data(), pool);
        EXPECT_LE(rel_error(w, widen(x), T, nullptr, y), type == WeightType::MXFP4 ? 1e-4 : 1e-5)
            << isa << " " << kernel << " T=" << T;
      }
    }
  }
  set_matmul_isa("auto");
}

// A forced MXFP4 kernel (bench_matmul's fast-q16 / fast-gemm) holds for every T and still computes the product.
TEST(CpuFastMatmul, ForcedMxfp4Kernel) {
  if (!matmul_isa_supported("avx2")) GTEST_SKIP() << "NOT TESTED HERE: this CPU has no AVX2";
  std::mt19937 rng(4);
  ThreadPool pool(2);
  ASSERT_TRUE(set_matmul_isa("avx2"));
  Weights w = make_weights(WeightType::MXFP4, 40, 288, rng);
  for (auto [forced, prefix] : {std::pair{FastMxfp4Kernel::Q16, "mxfp4-q16/"}, {FastMxfp4Kernel::Gemm, "gemm/"}}) {
    set_fast_mxfp4_kernel(forced);
    for (int64_t T : {1, 5, 8, 21}) {
      EXPECT_EQ(std::string(fast_kernel_name(w.ref, T)).rfind(prefix, 0), 0u) << prefix << " T=" << T;
      const std::vector<float> x = random_x(T * w.ref.cols, rng);
      std::vector<float> y(size_t(T * w.ref.rows), NAN);
      matmul_fast(w.ref, x.data(), T, nullptr, y.data(), pool);
      EXPECT_LE(rel_error(w, widen(x), T, nullptr, y), 1e-4) << prefix << " T=" << T;
    }
  }
  set_fast_mxfp4_kernel(FastMxfp4Kernel::Auto);
  EXPECT_EQ(fast_kernel_name(w.ref, 1), std::string("mxfp4-q16/avx2"));
  EXPECT_EQ(fast_kernel_name(w.ref, kFastGemmMinTokensMxfp4), std::string("gemm/avx2"));
  set_matmul_isa("auto");
}

// A matrix of fewer row groups (16 rows) than threads is split by tokens (RowProduct::run over token ranges):
// every token's rows written, at the offsets of its range.
TEST(CpuFastMatmul, FewRowsSplitByTokens) {
  std::mt19937 rng(5);
  ThreadPool pool(2);
  for (WeightType type : {WeightType::MXFP4, WeightType::BF16}) {
    Weights w = make_weights(type, 12, 320, rng);
    for (int64_t T : {2, 5, 13, 21}) {
      const std::vector<float> x = random_x(T * w.ref.cols, rng);
      std::vector<float> y(size_t(T * w.ref.rows), NAN);
      matmul_fast(w.ref, x.data(), T, nullptr, y.data(), pool);
      EXPECT_LE(rel_error(w, widen(x), T, nullptr, y), type == WeightType::MXFP4 ? 1e-4 : 1e-5)
          << fast_kernel_name(w.ref, T) << " T=" << T;
    }
  }
}

// The attention's vector ops against float64, over lengths around the 8- and 16-lane steps.
TEST(CpuFastVecOps, DotAndAxpy) {
  std::mt19937 rng(9);
  for (int n : {1, 7, 8, 15, 16, 17, 64, 100}) {
    const std::vector<float> a = random_x(n, rng), b = random_x(n, rng);
    double ref = 0, mag = 0;
    for (int i = 0; i < n; ++i) {
      ref += double(a[size_t(i)]) * b[size_t(i)];
      mag += std::fabs(double(a[size_t(i)]) * b[size_t(i)]);
    }
    EXPECT_NEAR(vec_dot(a.data(), b.data(), n), ref, 1e-6 * mag) << "n=" << n;
    std::vector<float> y = b;
    vec_axpy(0.75f, a.data(), y.data(), n);
    for (int i = 0; i < n; ++i)
      ASSERT_NEAR(y[size_t(i)], double(b[size_t(i)]) + 0.75 * a[size_t(i)], 1e-6 * (1 + std::fabs(b[size_t(i)])))
          << "n=" << n << " i=" << i;
  }
}

}  // namespace
}  // namespace gptoss::cpu
