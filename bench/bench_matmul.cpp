// Matmul kernels on gpt-oss-20b shapes: decode (T = 1) GB/s of weight bytes against the measured read
// bandwidth, and many tokens (prefill, batched decode; T = 64, 512 unless --tokens) GFLOP/s, per weight type.
//   bench_matmul [--threads N] [--isa avx512|avx2|scalar] [--math exact|fast|fast-q16|fast-gemm]
//                [--no-prefill] [--no-lm-head] [--tokens 64,512] [--only NAME]
// --tokens: the token counts of the many-token section; --only: the shapes whose name contains NAME.
// --math picks the kernel family (--cpu-math): exact (matmul.h, the default here) or fast (fast_matmul.h);
// fast-q16 / fast-gemm: the fast family with one MXFP4 kernel for every T (where the switch-over T should be).
// Decode cycles through enough copies of each matrix (>= 512 MiB) that weights come from DRAM, not L3.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "backend/cpu/fast_matmul.h"
#include "backend/cpu/matmul.h"
#include "backend/cpu/membw.h"
#include "core/threadpool.h"

namespace {

using gptoss::MatrixRef;
using gptoss::WeightType;

struct Shape {
  const char* name;
  WeightType type;
  int64_t rows, cols;
  bool transposed = false;
};

uint64_t g_rng = 0x9E3779B97F4A7C15ull;
inline uint64_t next_random() {
  g_rng ^= g_rng << 13;
  g_rng ^= g_rng >> 7;
  g_rng ^= g_rng << 17;
  return g_rng;
}

// One copy of a matrix: storage plus its MatrixRef. Values are finite, normal and of moderate size.
struct Weights {
  std::vector<uint8_t> data, scales;
  MatrixRef ref;
};

size_t weight_bytes(const Shape& s) {
  switch (s.type) {
    case WeightType::F32: return size_t(s.rows * s.cols * 4);
    case WeightType::BF16: return size_t(s.rows * s.cols * 2);
    case WeightType::MXFP4: return size_t(s.rows * s.cols / 2 + s.rows * s.cols / 32);
  }
  return 0;
}

Weights make(const Shape& s) {
  Weights w;
  w.ref = MatrixRef{s.type, nullptr, nullptr, s.rows, s.cols, s.transposed};
  const size_t n = size_t(s.rows * s.cols);
  if (s.type == WeightType::MXFP4) {
    w.data.resize(n / 2);
    w.scales.resize(n / 32);
    for (auto& b : w.data) b = uint8_t(next_random());
    for (auto& b : w.scales) b = uint8_t(118 + next_random() % 19);  // real checkpoints: 118..136
    w.ref.scales = w.scales.data();
  } else if (s.type == WeightType::BF16) {
    w.data.resize(n * 2);
    auto* p = reinterpret_cast<uint16_t*>(w.data.data());
    for (size_t i = 0; i < n; ++i) p[i] = uint16_t((next_random() & 0x807F) | 0x3F00);  // +-[0.5, 1)
  } else {
    w.data.resize(n * 4);
    auto* p = reinterpret_cast<float*>(w.data.data());
    for (size_t i = 0; i < n; ++i) p[i] = float(int(next_random() % 2001) - 1000) * 1e-3f;
  }
  w.ref.data = w.data.data();
  return w;
}

bool g_fast = false;

void product(const MatrixRef& W, const float* x, int64_t T, float* y, gptoss::ThreadPool& pool) {
  if (g_fast) {
    gptoss::cpu::matmul_fast(W, x, T, nullptr, y, pool);
  } else {
    gptoss::cpu::matmul(W, x, T, nullptr, y, pool);
  }
}

double now_s() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

std::vector<float> random_x(int64_t n) {
  std::vector<float> x(static_cast<size_t>(n));
  for (auto& v : x) v = float(int(next_random() % 2001) - 1000) * 1e-3f;
  return x;
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 0;
  const char* isa = "auto";
  bool prefill = true, lm_head = true;
  std::vector<int64_t> token_counts = {64, 512};
  std::string only;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--threads") && i + 1 < argc) {
      threads = std::atoi(argv[++i]);
    } else if (!std::strcmp(argv[i], "--isa") && i + 1 < argc) {
      isa = argv[++i];
    } else if (!std::strcmp(argv[i], "--math") && i + 1 < argc) {
      const std::string m = argv[++i];
      if (m != "exact" && m != "fast" && m != "fast-q16" && m != "fast-gemm") {
        std::fprintf(stderr, "--math %s: expected exact, fast, fast-q16 or fast-gemm\n", m.c_str());
        return 2;
      }
      g_fast = m != "exact";
      if (m == "fast-q16") gptoss::cpu::set_fast_mxfp4_kernel(gptoss::cpu::FastMxfp4Kernel::Q16);
      if (m == "fast-gemm") gptoss::cpu::set_fast_mxfp4_kernel(gptoss::cpu::FastMxfp4Kernel::Gemm);
    } else if (!std::strcmp(argv[i], "--no-prefill")) {
      prefill = false;
    } else if (!std::strcmp(argv[i], "--no-lm-head")) {
      lm_head = false;
    } else if (!std::strcmp(argv[i], "--tokens") && i + 1 < argc) {
      token_counts.clear();
      for (const char* p = argv[++i]; *p;) {
        char* end = nullptr;
        const long long v = std::strtoll(p, &end, 10);
        if (end == p || v <= 0) break;
        token_counts.push_back(v);
        p = *end == ',' ? end + 1 : end;
      }
    } else if (!std::strcmp(argv[i], "--only") && i + 1 < argc) {
      only = argv[++i];
    } else {
      std::fprintf(stderr,
                   "usage: %s [--threads N] [--isa avx512|avx2|scalar] [--math exact|fast|fast-q16|fast-gemm] "
                   "[--no-prefill] [--no-lm-head] [--tokens 64,512] [--only NAME]\n",
                   argv[0]);
      return 2;
    }
  }
  if (!gptoss::cpu::set_matmul_isa(isa)) {
    std::fprintf(stderr, "ISA '%s' is unknown or not supported by this CPU\n", isa);
    return 2;
  }
  gptoss::ThreadPool pool(threads);
  const double bw = gptoss::cpu::measure_read_bandwidth_gbs(pool);
  std::printf("kernels: %s %s, threads: %d, measured read bandwidth: %.1f GB/s\n", gptoss::cpu::matmul_isa(),
              g_fast ? "fast" : "exact", pool.num_threads(), bw);

  std::vector<Shape> shapes = {
      {"attn.q bf16", WeightType::BF16, 4096, 2880},
      {"attn.k/v bf16", WeightType::BF16, 512, 2880},
      {"attn.o bf16", WeightType::BF16, 2880, 4096},
      {"router bf16", WeightType::BF16, 32, 2880},
      {"expert.gate_up mxfp4", WeightType::MXFP4, 5760, 2880},
      {"expert.down mxfp4", WeightType::MXFP4, 2880, 2880},
      {"expert.gate_up bf16^T", WeightType::BF16, 5760, 2880, true},
      {"attn.q f32", WeightType::F32, 4096, 2880},
  };
  if (lm_head) shapes.push_back({"lm_head bf16", WeightType::BF16, 201088, 2880});
  if (!only.empty())
    std::erase_if(shapes, [&](const Shape& s) { return std::string(s.name).find(only) == std::string::npos; });

  std::printf("\ndecode (T=1), weights streamed from DRAM:\n");
  std::printf("  %-24s %14s %10s %9s %8s %11s\n", "matrix", "shape", "us/call", "GB/s", "of bw", "L2-hot GB/s");
  for (const Shape& s : shapes) {
    const size_t bytes = weight_bytes(s);
    const size_t copies = std::max<size_t>(1, (size_t(512) << 20) / bytes + 1);
    std::vector<Weights> ws;
    for (size_t i = 0; i < copies; ++i) ws.push_back(make(s));
    const std::vector<float> x = random_x(s.cols);
    std::vector<float> y(size_t(s.rows));
    product(ws[0].ref, x.data(), 1, y.data(), pool);  // warm up
    int64_t calls = 0;
    const double t0 = now_s();
    double t1 = t0;
    while (calls < 3 || t1 - t0 < 0.3) {
      product(ws[size_t(calls) % copies].ref, x.data(), 1, y.data(), pool);
      ++calls;
      t1 = now_s();
    }
    const double per_call = (t1 - t0) / double(calls);
    const double gbs = double(bytes) / per_call / 1e9;
    // The same kernel on a slice of rows that stays in L2 (256 KiB per thread): its compute ceiling.
    MatrixRef hot = ws[0].ref;
    hot.rows = std::min<int64_t>(s.rows, std::max<int64_t>(16, int64_t(256 * 1024 * pool.num_threads() * s.rows / bytes)));
    if (s.transposed) hot = ws[0].ref;  // a row slice of [cols, rows] storage is strided: skip
    const size_t hot_bytes = bytes / size_t(s.rows) * size_t(hot.rows);
    int64_t hot_calls = 0;
    const double h0 = now_s();
    double h1 = h0;
    while (hot_calls < 10 || h1 - h0 < 0.1) {
      product(hot, x.data(), 1, y.data(), pool);
      ++hot_calls;
      h1 = now_s();
    }
    std::printf("  %-24s %6lldx%-7lld %10.1f %9.1f %7.0f%% %11.1f\n", s.name, (long long)s.rows, (long long)s.cols,
                per_call * 1e6, gbs, 100 * gbs / bw, double(hot_bytes) * double(hot_calls) / (h1 - h0) / 1e9);
  }

  if (prefill) {
    std::printf("\nprefill, GFLOP/s (2 * rows * cols * T per call):\n");
    std::printf("  %-24s %14s", "matrix", "shape");
    for (int64_t T : token_counts) std::printf(" %10s", ("T=" + std::to_string(T)).c_str());
    std::printf("\n");
    for (const Shape& s : shapes) {
      if (s.rows > 100000) continue;  // lm_head: only the last token needs logits in prefill
      const Weights w = make(s);
      std::printf("  %-24s %6lldx%-7lld", s.name, (long long)s.rows, (long long)s.cols);
      for (int64_t T : token_counts) {
        const std::vector<float> x = random_x(T * s.cols);
        std::vector<float> y(size_t(T * s.rows));
        product(w.ref, x.data(), T, y.data(), pool);
        int64_t calls = 0;
        const double t0 = now_s();
        double t1 = t0;
        while (calls < 2 || t1 - t0 < 0.3) {
          product(w.ref, x.data(), T, y.data(), pool);
          ++calls;
          t1 = now_s();
        }
        const double flops = 2.0 * double(s.rows) * double(s.cols) * double(T);
        std::printf(" %10.1f", flops * double(calls) / (t1 - t0) / 1e9);
      }
      std::printf("\n");
    }
  }
  return 0;
}
