// The fast family's dispatch and its portable reference (the scalar MXFP4 x int16 kernel, integer products
// per block exactly as the SIMD kernels compute them).
#include "backend/cpu/fast_matmul.h"

#include <algorithm>
#include <atomic>
#include <cstring>

#include "backend/cpu/fast_kernels.h"
#include "backend/cpu/matmul_kernels.h"
#include "backend/cpu/matmul.h"
#include "backend/cpu/q16.h"
#include "core/mxfp4.h"

namespace gptoss::cpu {

void mxfp4_q16_rows_scalar(const MatrixRef& W, const Q16Act& x, int64_t T, const float* bias, float* y, int64_t r0,
                           int64_t r1) {
  static constexpr int kLut[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};  // 2 x E2M1
  const auto* blocks = static_cast<const uint8_t*>(W.data);
  const int64_t nb = x.nb;
  for (int64_t r = r0; r < r1; ++r) {
    for (int64_t t = 0; t < T; ++t) {
      const int16_t* q = x.q + t * x.stride;
      float acc = 0.0f;
      for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* blk = blocks + (r * nb + b) * kMxfp4BlockBytes;
        int32_t dot = 0;  // byte j holds columns 2j (low nibble) and 2j + 1
        for (int j = 0; j < 16; ++j)
          dot += kLut[blk[j] & 0xF] * q[q16_pos(b, 2 * j)] + kLut[blk[j] >> 4] * q[q16_pos(b, 2 * j + 1)];
        acc += float(dot) * (0.5f * mxfp4_scale(W.scales[r * nb + b]) * x.d[t * x.dstride + b]);
      }
      y[t * W.rows + r] = acc + (bias ? bias[r] : 0.0f);
    }
  }
}

bool cpu_has_avx512_vnni() {
#if defined(__x86_64__)
  return __builtin_cpu_supports("avx512vnni") && matmul_isa_supported("avx512");
#else
  return false;
#endif
}

namespace {

enum class Isa { Scalar, Avx2, Avx512 };

Isa current_isa() {
  const char* name = matmul_isa();
  if (std::strcmp(name, "avx512") == 0) return Isa::Avx512;
  if (std::strcmp(name, "avx2") == 0) return Isa::Avx2;
  return Isa::Scalar;
}

enum class Kind { Q16, Gemm, Exact };

std::atomic<FastMxfp4Kernel> g_mxfp4_kernel{FastMxfp4Kernel::Auto};

Kind kernel_kind(const MatrixRef& W, int64_t T, Isa isa) {
  if (W.transposed) return Kind::Exact;
  if (W.type == WeightType::MXFP4) {
    const FastMxfp4Kernel forced = g_mxfp4_kernel.load(std::memory_order_relaxed);
    if (forced == FastMxfp4Kernel::Q16 || isa == Isa::Scalar) return Kind::Q16;
    return forced == FastMxfp4Kernel::Gemm || T >= kFastGemmMinTokensMxfp4 ? Kind::Gemm : Kind::Q16;
  }
  if (isa != Isa::Scalar && T >= kFastGemmMinTokens && W.cols % 16 == 0) return Kind::Gemm;
  return Kind::Exact;
}

Mxfp4Q16RowsFn q16_fn(Isa isa) {
#if defined(__x86_64__)
  static const bool vnni = cpu_has_avx512_vnni();
  if (isa == Isa::Avx512 && vnni) return mxfp4_q16_rows_avx512vnni;
  if (isa != Isa::Scalar) return mxfp4_q16_rows_avx2;  // every AVX-512 CPU has AVX2
#endif
  (void)isa;
  return mxfp4_q16_rows_scalar;
}

MatmulRowsFn gemm_fn(Isa isa) {
#if defined(__x86_64__)
  if (isa == Isa::Avx512) return kAvx512Rows.gemm;
  if (isa == Isa::Avx2) return kAvx2Rows.gemm;
#endif
  (void)isa;
  return nullptr;
}

// Splits rows over the pool in groups of 16 (tokens too when rows are few), as matmul() does.
template <class F>
void split_rows(int64_t rows, int64_t T, ThreadPool& pool, F&& fn) {
  constexpr int64_t kRowQuantum = 16;
  const int64_t groups = (rows + kRowQuantum - 1) / kRowQuantum;
  if (groups >= pool.num_threads() || T == 1) {
    pool.parallel_for(groups, [&](int64_t g0, int64_t g1) {
      fn(int64_t(0), T, g0 * kRowQuantum, std::min(rows, g1 * kRowQuantum));
    });
  } else {
    pool.parallel_for(T, [&](int64_t t0, int64_t t1) { fn(t0, t1, int64_t(0), rows); });
  }
}

}  // namespace

void set_fast_mxfp4_kernel(FastMxfp4Kernel k) { g_mxfp4_kernel.store(k, std::memory_order_relaxed); }

const char* fast_kernel_name(const MatrixRef& W, int64_t T) {
  const Isa isa = current_isa();
  switch (kernel_kind(W, T, isa)) {
    case Kind::Q16:
      if (isa == Isa::Avx512 && cpu_has_avx512_vnni()) return "mxfp4-q16/avx512-vnni";
      return isa == Isa::Scalar ? "mxfp4-q16/scalar" : "mxfp4-q16/avx2";
    case Kind::Gemm: return isa == Isa::Avx512 ? "gemm/avx512" : "gemm/avx2";
    case Kind::Exact: break;
  }
  return isa == Isa::Avx512 ? "exact/avx512" : isa == Isa::Avx2 ? "exact/avx2" : "exact/scalar";
}

void matmul_fast(const MatrixRef& W, const float* x, int64_t T, const float* bias, float* y, ThreadPool& pool) {
  if (T <= 0 || W.rows <= 0) return;
  if (kernel_kind(W, T, current_isa()) == Kind::Exact) {  // the exact kernels split the work their own way
    matmul(W, x, T, bias, y, pool);
    return;
  }
  // The calling thread's, kept from call to call for its int16 buffer. The workers must see this thread's
  // instance, not their own: the lambda captures a reference (a thread_local named in it would be theirs).
  thread_local RowProduct mine;
  RowProduct& product = mine;
  product.prepare(W, x, T, bias, y, /*fast=*/true);  // quantized once by the calling thread, read by all
  split_rows(W.rows, T, pool, [&](int64_t t0, int64_t t1, int64_t r0, int64_t r1) { product.run(t0, t1, r0, r1); });
}

void RowProduct::prepare(const MatrixRef& W, const float* x, int64_t T, const float* bias, float* y, bool fast) {
  w_ = W, x_ = x, t_ = T, bias_ = bias, y_ = y;
  fn_ = nullptr, q16_ = nullptr;
  const Isa isa = current_isa();
  switch (fast ? kernel_kind(W, T, isa) : Kind::Exact) {
    case Kind::Exact: fn_ = matmul_rows; break;
    case Kind::Gemm: fn_ = gemm_fn(isa); break;
    case Kind::Q16:
      q_ = qbuf_.quantize(x, T, W.cols);
      q16_ = q16_fn(isa);
      break;
  }
}

void RowProduct::run(int64_t t0, int64_t t1, int64_t r0, int64_t r1) const {
  if (t1 <= t0 || r1 <= r0) return;
  float* y = y_ + t0 * w_.rows;
  if (q16_) {
    Q16Act q = q_;
    q.q += t0 * q_.stride;
    q.d += t0 * q_.dstride;
    q16_(w_, q, t1 - t0, bias_, y, r0, r1);
  } else {
    fn_(w_, x_ + t0 * w_.cols, t1 - t0, bias_, y, r0, r1);
  }
}

}  // namespace gptoss::cpu
