// Short float32 vector ops for the fast family's attention (--cpu-math fast): the dot product of a query
// with a key and the weighted add of a value row (head_dim long, 64 in gpt-oss). SIMD sums in 8 lanes,
// so the order of the sums differs from the exact attention's plain loops, which stay as they are.
#pragma once

namespace gptoss::cpu {

// sum_i a[i] * b[i]
float vec_dot(const float* a, const float* b, int n);
// y[i] += alpha * x[i]
void vec_axpy(float alpha, const float* x, float* y, int n);

// Internal: the AVX2 versions (vec_ops_avx2.cpp), picked by vec_ops.cpp where the CPU has AVX2.
float vec_dot_avx2(const float* a, const float* b, int n);
void vec_axpy_avx2(float alpha, const float* x, float* y, int n);

}  // namespace gptoss::cpu
