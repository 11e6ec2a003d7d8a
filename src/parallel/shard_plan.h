// What each of N ranks (GPUs) holds when one model is split across them (docs/MULTIGPU.md):
//  - attention by tensor parallelism over key/value heads: a rank holds whole kv heads and the query heads of
//    their groups, so attention needs no communication; q/k/v are column-parallel (the rank's output rows),
//    o_proj row-parallel (the rank's input columns) and its partial sums are all-reduced;
//  - experts by expert parallelism: E/N consecutive experts per rank; the router is replicated, every rank routes
//    every token, computes its own experts' weighted outputs, and the partial sums are all-reduced;
//  - the output head by vocabulary: ceil(V/N) rows per rank (the last rank may hold fewer), logits all-gathered;
//  - the embedding is replicated (a step reads one row per token; replicating it costs V*H*2 bytes per card but
//    keeps a collective off every step).
// When N exceeds the kv heads, each kv head is replicated on N/nkv ranks (its k/v projection rows and its KV
// cache too), and those ranks split its query heads; N must then be a multiple of nkv and divide the query heads.
// Any other N is refused with an error naming the field and the valid N.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "core/matrix.h"
#include "core/status.h"
#include "format/config.h"

namespace gptoss {

// The most ranks a plan is made for (the valid N listed in errors go up to this).
inline constexpr int kMaxShardRanks = 64;

// Half-open range [begin, begin + count) of heads, experts or vocabulary rows.
struct ShardRange {
  int64_t begin = 0, count = 0;
  int64_t end() const { return begin + count; }
};

// Storage types of the matrices, for byte counts: gpt-oss keeps attention, router, embedding and output head in
// bf16 and the experts in MXFP4 (shard_dtypes_of reads them from loaded weights).
struct ShardDtypes {
  WeightType dense = WeightType::BF16;    // q, k, v, o, router, lm_head
  WeightType embed = WeightType::BF16;
  WeightType experts = WeightType::MXFP4;
};

// Bytes of the matrices (not the float32 norms, biases and sinks: a few MB in all).
struct ShardBytes {
  uint64_t weights = 0;            // held by the rank
  uint64_t weights_replicated = 0; // of which also held by other ranks (embedding, router; k/v when replicated)
  // Read by one decode token at batch 1: attention, router, the lm_head rows, one embedding row, and its
  // experts. Routing decides which ranks the k experts land on: `decode` counts k/N of them (the mean under
  // uniform routing, rounded down to bytes), `decode_max` min(k, E/N) of them (all on this rank: the slowest rank
  // bounds the step).
  uint64_t decode = 0;
  uint64_t decode_max = 0;
  uint64_t decode_replicated = 0;  // of `decode`, bytes every rank holding a copy reads (router, embedding row, k/v)
};

struct RankShard {
  int rank = 0;
  ShardRange kv_heads;     // of num_key_value_heads
  ShardRange q_heads;      // of num_attention_heads (inside the groups of kv_heads)
  ShardRange q_rows;       // rows of q_proj, columns of o_proj: q_heads * head_dim
  ShardRange kv_rows;      // rows of k_proj and v_proj: kv_heads * head_dim
  ShardRange experts;      // of num_local_experts
  ShardRange vocab;        // rows of lm_head
  bool adds_o_bias = false;  // rank 0 adds o_proj's bias to its partial sum (the all-reduce adds it once)
  ShardBytes bytes;
  // KV cache bytes per position and layer (k and v of its kv heads), for `elem_size`-byte entries.
  uint64_t kv_bytes_per_position(size_t elem_size) const;
};

struct ShardPlan {
  int ranks = 1;
  int kv_replicas = 1;      // ranks holding each kv head (N / nkv when N > nkv, else 1)
  int64_t vocab_per_rank = 0;  // ceil(V / N): the all-gather's rows per rank; vocab_per_rank * N >= V
  std::vector<RankShard> shards;
  ShardBytes whole;         // the unsplit model (N = 1), for the roofline's reference
  // A decode step waits, at every layer's all-reduce, for the rank with the most of the token's k experts. Under
  // uniform routing (k distinct experts of E, equally likely) the expected number on the busiest rank, and the bytes
  // per token on that critical path: the byte roofline of batch-1 decode with N ranks.
  double busiest_rank_experts = 0;
  uint64_t decode_critical = 0;

  // The plan for `ranks` ranks, or an error naming the field that `ranks` does not divide and the valid N.
  static Result<ShardPlan> make(const ModelConfig& c, int ranks, const ShardDtypes& dt = {});
  // The configuration one rank's backend is built with: its query and kv heads (q_dim() and kv_dim() are then the
  // rank's, and a KV cache sized from it holds only the rank's kv heads). Experts and vocabulary stay whole: the
  // routing is global, and the rank's ExpertStack and lm_head rows say what it holds.
  ModelConfig rank_config(const ModelConfig& c, int rank) const;
};

// Greedy decoding with the output head split by vocabulary: each rank sends its largest logit and that row's global
// id (the first on ties, as Backend::argmax), 8 bytes instead of its ceil(V/N) logits. The merge keeps the largest
// value and, on ties, the lowest id: the whole row's argmax. Ranks with id < 0 (none) are skipped.
struct RankArgmax {
  float value = 0;
  int64_t id = -1;
};
RankArgmax merge_rank_argmax(std::span<const RankArgmax> per_rank);

// The N in 1..kMaxShardRanks a plan exists for, ascending.
std::vector<int> valid_shard_ranks(const ModelConfig& c);

// "1, 2, 4, 8" for errors and help texts.
std::string format_ranks(const std::vector<int>& ranks);

}  // namespace gptoss
