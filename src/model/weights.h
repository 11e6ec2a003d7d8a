// The model's weights as the forward pass sees them (llama2.c style: plain structs, shapes in comments).
// Big matrices are MatrixRefs used where they lie (mmap on CPU, device memory on CUDA); the small
// per-channel tensors (norms, biases, sinks) are float32 copies, a few MB in all.
#pragma once

#include <memory>
#include <vector>

#include "core/matrix.h"
#include "format/checkpoint.h"

namespace gptoss {

struct LayerWeights {
  const float* attn_norm = nullptr;  // [H]
  MatrixRef q, k, v, o;              // [nh*d, H], [nkv*d, H], [nkv*d, H], [H, nh*d]
  const float* q_bias = nullptr;     // [nh*d]
  const float* k_bias = nullptr;     // [nkv*d]
  const float* v_bias = nullptr;     // [nkv*d]
  const float* o_bias = nullptr;     // [H]
  const float* sinks = nullptr;      // [nh] raw logits, not scaled
  const float* mlp_norm = nullptr;   // [H]
  MatrixRef router;                  // [E, H]
  const float* router_bias = nullptr;  // [E]
  ExpertStack gate_up;               // E x [2I, H], rows interleaved gate_0, up_0, gate_1, up_1, ...
  ExpertStack down;                  // E x [H, I]
  const float* gate_up_bias = nullptr;  // [E, 2I] interleaved like the rows
  const float* down_bias = nullptr;     // [E, H]
  bool sliding = false;                 // even layers: window of sliding_window keys
};

struct ModelWeights {
  MatrixRef embed;                  // [V, H] (rows looked up, never multiplied)
  std::vector<LayerWeights> layers;
  const float* final_norm = nullptr;  // [H]
  MatrixRef lm_head;                // [V, H]
};

// Host-side weights built from a checkpoint: MatrixRefs into the checkpoint's mappings, small
// tensors converted to float32 and owned here. The Checkpoint must outlive this.
struct HostWeights {
  ModelWeights w;
  std::vector<std::vector<float>> owned;  // storage of the float32 small tensors
  uint64_t matrix_bytes = 0;              // bytes of all MatrixRefs (for memory estimates)
};
Result<std::unique_ptr<HostWeights>> build_host_weights(const Checkpoint& ck);

// Bytes one decode step reads at batch 1: attention and router weights of every layer, k experts'
// weights per layer, the lm_head, and one embedding row (for roofline figures).
uint64_t decode_bytes_per_token(const ModelConfig& c, const ModelWeights& w);

}  // namespace gptoss
