#include "backend/cpu/vec_ops.h"

#include "backend/cpu/matmul.h"

namespace gptoss::cpu {
namespace {

float dot_scalar(const float* a, const float* b, int n) {
  float s = 0.0f;
  for (int i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

void axpy_scalar(float alpha, const float* x, float* y, int n) {
  for (int i = 0; i < n; ++i) y[i] += alpha * x[i];
}

const bool kHasAvx2 = matmul_isa_supported("avx2");

}  // namespace

float vec_dot(const float* a, const float* b, int n) {
#if defined(__x86_64__)
  if (kHasAvx2) return vec_dot_avx2(a, b, n);
#endif
  return dot_scalar(a, b, n);
}

void vec_axpy(float alpha, const float* x, float* y, int n) {
#if defined(__x86_64__)
  if (kHasAvx2) return vec_axpy_avx2(alpha, x, y, n);
#endif
  axpy_scalar(alpha, x, y, n);
}

}  // namespace gptoss::cpu
