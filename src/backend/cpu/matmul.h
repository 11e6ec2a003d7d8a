// Matrix products of f32 activations with weights in any stored format (f32, bf16, MXFP4; dense weights
// also transposed), decoded inside the kernels. One kernel family per ISA (scalar reference, AVX2,
// AVX-512), chosen at run time from the CPU's features; all accumulate in f32 and never round activations.
#pragma once

#include <cstdint>

#include "core/matrix.h"
#include "core/threadpool.h"

namespace gptoss::cpu {

// y[t, r] = sum_c W[r, c] * x[t, c] + (bias ? bias[r] : 0), for t < T, r < W.rows.
// x: f32 [T, W.cols] contiguous; y: f32 [T, W.rows] contiguous; bias f32 [W.rows] or nullptr.
// Splits output rows over the pool (tokens too when rows are few).
void matmul(const MatrixRef& W, const float* x, int64_t T, const float* bias, float* y, ThreadPool& pool);

// Single-threaded: writes only y[t, r] for r in [r0, r1), all t < T (y keeps its row stride W.rows).
// The MoE code runs experts in parallel itself.
void matmul_rows(const MatrixRef& W, const float* x, int64_t T, const float* bias, float* y, int64_t r0,
                 int64_t r1);

// The kernel family in use: "avx512", "avx2" or "scalar".
const char* matmul_isa();

// Forces a family (for tests and benchmarks): "avx512", "avx2", "scalar", or "auto" for the best this
// CPU supports. Returns false, changing nothing, if the name is unknown or the CPU lacks the family.
bool set_matmul_isa(const char* name);

// Whether this CPU (and build) can run a family.
bool matmul_isa_supported(const char* name);

}  // namespace gptoss::cpu
