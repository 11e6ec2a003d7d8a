// One rank's part of the host weights (shard_plan.h), so that each card uploads only what it holds.
// Most of it is a view: row slices of row-major matrices (q/k/v rows, lm_head rows, MXFP4 rows), whole experts
// of an ExpertStack, and offsets into the float32 biases and sinks. The one thing a view cannot be is o_proj's
// column slice of a row-major [H, q_dim] matrix (each of its H rows contributes a piece): it is copied, H x
// q_rows.count elements per layer (for 120b on 2 ranks, 36 x 2880 x 2048 bf16 = 425 MB per rank).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "model/weights.h"
#include "parallel/shard_plan.h"

namespace gptoss {

struct ShardWeights {
  // The rank's weights, shaped for its rank_config: q [nh_r*d, H], k/v [nkv_r*d, H], o [H, nh_r*d], sinks [nh_r],
  // q/k/v biases of its rows, o_bias only on the rank that adds it (else null), router and norms whole,
  // gate_up/down its E/N experts (count = E/N, expert 0 = its first) with their biases, lm_head its vocab rows,
  // embed whole.
  ModelWeights w;
  std::vector<std::vector<uint8_t>> owned;  // the copied o_proj column slices
  uint64_t copied_bytes = 0;
};

// The storage types of loaded weights, for ShardPlan::make's byte counts.
ShardDtypes shard_dtypes_of(const ModelWeights& w);

// `host` must be shaped by `c` (build_host_weights), and outlive the result (views point into it).
Result<std::unique_ptr<ShardWeights>> extract_shard(const ModelWeights& host, const ModelConfig& c,
                                                    const ShardPlan& plan, int rank);

}  // namespace gptoss
