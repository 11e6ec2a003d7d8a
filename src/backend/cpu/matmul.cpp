// Portable reference kernels (plain C++, f32 accumulation in column order) and the run-time choice of
// kernel family.
#include "backend/cpu/matmul.h"

#include <algorithm>
#include <cstring>

#include "backend/cpu/matmul_kernels.h"
#include "core/dtype.h"
#include "core/mxfp4.h"

namespace gptoss::cpu {
namespace {

constexpr int kScalarTokenTile = 8;  // tokens sharing one decoded 32-column weight segment

// W[r, c0 .. c0+n) as f32 (n <= 32; for MXFP4, c0 % 32 == 0 and n == 32). Row-major storage only.
void scalar_load_segment(const MatrixRef& W, int64_t r, int64_t c0, int n, float* out) {
  switch (W.type) {
    case WeightType::F32: {
      const float* p = static_cast<const float*>(W.data) + r * W.cols + c0;
      for (int j = 0; j < n; ++j) out[j] = p[j];
      break;
    }
    case WeightType::BF16: {
      const uint16_t* p = static_cast<const uint16_t*>(W.data) + r * W.cols + c0;
      for (int j = 0; j < n; ++j) out[j] = bf16_to_f32(p[j]);
      break;
    }
    case WeightType::MXFP4: {
      const int64_t nb = W.cols / kMxfp4BlockElems;
      const int64_t b = r * nb + c0 / kMxfp4BlockElems;
      mxfp4_decode_row(static_cast<const uint8_t*>(W.data) + b * kMxfp4BlockBytes, W.scales + b,
                       kMxfp4BlockElems, out);
      break;
    }
  }
}

// Dense [cols, rows] storage: y[t, r] accumulates x[t, c] * W[c, r] over c in order (axpy form).
void scalar_rows_transposed(const MatrixRef& W, const float* x, int64_t T, const float* bias, float* y,
                            int64_t r0, int64_t r1) {
  for (int64_t t = 0; t < T; ++t) {
    float* yt = y + t * W.rows;
    for (int64_t r = r0; r < r1; ++r) yt[r] = 0.0f;
    for (int64_t c = 0; c < W.cols; ++c) {
      const float xv = x[t * W.cols + c];
      if (W.type == WeightType::F32) {
        const float* w = static_cast<const float*>(W.data) + c * W.rows;
        for (int64_t r = r0; r < r1; ++r) yt[r] += w[r] * xv;
      } else {
        const uint16_t* w = static_cast<const uint16_t*>(W.data) + c * W.rows;
        for (int64_t r = r0; r < r1; ++r) yt[r] += bf16_to_f32(w[r]) * xv;
      }
    }
    if (bias)
      for (int64_t r = r0; r < r1; ++r) yt[r] += bias[r];
  }
}

}  // namespace

void matmul_rows_scalar(const MatrixRef& W, const float* x, int64_t T, const float* bias, float* y, int64_t r0,
                        int64_t r1) {
  if (W.transposed && W.type != WeightType::MXFP4) {
    scalar_rows_transposed(W, x, T, bias, y, r0, r1);
    return;
  }
  float seg[kMxfp4BlockElems];
  for (int64_t r = r0; r < r1; ++r) {
    for (int64_t t0 = 0; t0 < T; t0 += kScalarTokenTile) {
      const int nt = int(std::min<int64_t>(kScalarTokenTile, T - t0));
      float acc[kScalarTokenTile] = {};
      for (int64_t c0 = 0; c0 < W.cols; c0 += kMxfp4BlockElems) {
        const int n = int(std::min<int64_t>(kMxfp4BlockElems, W.cols - c0));
        scalar_load_segment(W, r, c0, n, seg);
        for (int t = 0; t < nt; ++t) {
          const float* xt = x + (t0 + t) * W.cols + c0;
          float a = acc[t];
          for (int j = 0; j < n; ++j) a += seg[j] * xt[j];
          acc[t] = a;
        }
      }
      for (int t = 0; t < nt; ++t) y[(t0 + t) * W.rows + r] = acc[t] + (bias ? bias[r] : 0.0f);
    }
  }
}

namespace {

struct IsaEntry {
  const char* name;
  MatmulRowsFn fn;
  bool (*supported)();
};

bool cpu_has_avx2() {
#if defined(__x86_64__)
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

bool cpu_has_avx512() {
#if defined(__x86_64__)
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
#else
  return false;
#endif
}

bool always() { return true; }

// Best first.
const IsaEntry kIsas[] = {
#if defined(__x86_64__)
    {"avx512", kAvx512Rows.exact, cpu_has_avx512},
    {"avx2", kAvx2Rows.exact, cpu_has_avx2},
#endif
    {"scalar", matmul_rows_scalar, always},
};

const IsaEntry* best_isa() {
  for (const IsaEntry& e : kIsas)
    if (e.supported()) return &e;
  return &kIsas[std::size(kIsas) - 1];
}

const IsaEntry* g_isa = best_isa();

}  // namespace

bool matmul_isa_supported(const char* name) {
  for (const IsaEntry& e : kIsas)
    if (std::strcmp(e.name, name) == 0) return e.supported();
  return false;
}

bool set_matmul_isa(const char* name) {
  if (std::strcmp(name, "auto") == 0) {
    g_isa = best_isa();
    return true;
  }
  for (const IsaEntry& e : kIsas)
    if (std::strcmp(e.name, name) == 0 && e.supported()) {
      g_isa = &e;
      return true;
    }
  return false;
}

const char* matmul_isa() { return g_isa->name; }

void matmul_rows(const MatrixRef& W, const float* x, int64_t T, const float* bias, float* y, int64_t r0,
                 int64_t r1) {
  if (T <= 0 || r1 <= r0) return;
  g_isa->fn(W, x, T, bias, y, r0, r1);
}

void matmul(const MatrixRef& W, const float* x, int64_t T, const float* bias, float* y, ThreadPool& pool) {
  if (T <= 0 || W.rows <= 0) return;
  const MatmulRowsFn fn = g_isa->fn;
  const int threads = pool.num_threads();
  // Row chunks are multiples of 16 so that vector kernels see aligned, full-width row groups.
  constexpr int64_t kRowQuantum = 16;
  const int64_t row_groups = (W.rows + kRowQuantum - 1) / kRowQuantum;
  if (row_groups >= threads || T == 1) {
    pool.parallel_for(row_groups, [&](int64_t g0, int64_t g1) {
      fn(W, x, T, bias, y, g0 * kRowQuantum, std::min(W.rows, g1 * kRowQuantum));
    });
  } else {
    // Few rows (e.g. the router): every thread takes all rows for its share of the tokens.
    pool.parallel_for(T, [&](int64_t t0, int64_t t1) {
      fn(W, x + t0 * W.cols, t1 - t0, bias, y + t0 * W.rows, 0, W.rows);
    });
  }
}

}  // namespace gptoss::cpu
