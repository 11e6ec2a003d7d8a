// Profiling by knock-out (`gptoss bench --op-costs`): a Backend that forwards every op to another one except
// the op groups of a mask, which it drops, on one-token steps only. The time a decode step saves without a
// group is what that group costs inside it. The model's forward pass (forward_step) knows nothing of this:
// the groups are recognised by the weights the ops receive. Outputs are meaningless while a mask is set.
#pragma once

#include <cstdint>
#include <memory>
#include <unordered_set>

#include "model/backend.h"

namespace gptoss {

namespace op_group {
inline constexpr uint32_t qkv = 1;        // attention RMSNorm + q/k/v products
inline constexpr uint32_t attention = 2;  // RoPE, KV append, attention
inline constexpr uint32_t o_proj = 4;     // o_proj + residual
inline constexpr uint32_t moe = 8;        // MoE RMSNorm + router + experts + residual
inline constexpr uint32_t lm_head = 16;   // final RMSNorm + output head
}  // namespace op_group

// `inner` and `w` (inner's uploaded weights) must outlive this.
std::unique_ptr<Backend> make_op_knockout(Backend& inner, const ModelWeights& w, uint32_t mask);

}  // namespace gptoss
