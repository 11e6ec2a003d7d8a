// The merge of partial softmaxes, shared by the attention kernels (attention.cu, attention_decode.cu). A
// part is one query head's softmax over a disjoint range of keys (a warp's tiles, a block's split):
// m = its largest score, l = sum of e^(s - m), acc[d] = sum of e^(s - m) v. Parts merge with the sink logit:
//   M = max(sink, m_i of the non-empty parts),  f_i = e^(m_i - M) (0 for an empty part, l_i = 0),
//   out = sum_i f_i acc_i / (e^(sink - M) + sum_i f_i l_i).
// A split that another block finishes is written as a record of d + 2 floats without the sink:
// {sum_i f_i acc_i [d], M, sum_i f_i l_i} with M over the non-empty parts alone (-FLT_MAX if none).
#pragma once

#include <cfloat>

namespace gptoss::cuda {

// M after one more part: an empty part leaves it alone.
__device__ __forceinline__ float softmax_part_max(float M, float m, float l) { return l > 0.0f ? fmaxf(M, m) : M; }
// The part's weight f under M.
__device__ __forceinline__ float softmax_part_weight(float m, float l, float M) {
  return l > 0.0f ? expf(m - M) : 0.0f;
}

// The parts of one block's kWarps warps in shared memory, for up to kHeads query heads: warp w's part of head
// h is m[w * kHeads + h], l[w * kHeads + h], acc[(w * kHeads + h) * ld + e].
template <int kWarps, int kHeads>
struct WarpParts {
  const float* m;
  const float* l;
  const float* acc;
  int ld;

  // Output element e of head h, the sink included.
  __device__ float output(int h, int e, float sink) const {
    float M = sink;
    for (int w = 0; w < kWarps; ++w) M = softmax_part_max(M, m[w * kHeads + h], l[w * kHeads + h]);
    float den = expf(sink - M), num = 0.0f;
    for (int w = 0; w < kWarps; ++w) {
      const int i = w * kHeads + h;
      if (l[i] > 0.0f) {
        const float f = expf(m[i] - M);
        den += f * l[i];
        num += f * acc[i * ld + e];
      }
    }
    return num / den;
  }

  // Element e < d + 2 of head h's split record.
  __device__ float record(int h, int e, int d) const {
    float M = -FLT_MAX;
    for (int w = 0; w < kWarps; ++w) M = softmax_part_max(M, m[w * kHeads + h], l[w * kHeads + h]);
    if (e == d) return M;
    float r = 0.0f;
    for (int w = 0; w < kWarps; ++w) {
      const int i = w * kHeads + h;
      const float f = softmax_part_weight(m[i], l[i], M);
      r += f * (e == d + 1 ? l[i] : acc[i * ld + e]);
    }
    return r;
  }
};

}  // namespace gptoss::cuda
