// How a paged KV cache is cut into blocks for one model: the layer groups, the size of a block in bytes
// (the one place that formula lives), and how many blocks a sequence can hold at most.
//
// Layer groups. gpt-oss alternates full-attention layers (every key stays visible) and sliding layers (a
// query at position i sees keys j with i - j < sliding_window, 128). A sequence needs all its positions
// for the full layers but only the last window for the sliding ones, so each group has its own block
// table per sequence (block_manager.h) and the sliding table drops blocks that fall out of the window.
// Both groups draw their blocks from ONE pool of equal-sized blocks: a block holds block_size positions
// of every layer of one group (layers_per_block = the larger group's layer count; both groups have
// num_hidden_layers / 2 in gpt-oss, so no space is wasted there; a truncated model with unequal groups
// leaves the smaller group's extra slots unused). One pool lets the memory flow to whichever group needs
// it: many short sequences use as many sliding blocks as full ones, long ones far fewer.
//
// Suggested storage for a backend (the pool only hands out block ids):
//   kv[num_blocks][layers_per_block][2 (K, V)][block_size][num_key_value_heads][head_dim]
// so that a copy-on-write copy is one contiguous copy of bytes_per_block. The key of position p of
// layer l of a sequence is in block table(group_of(l))[p / block_size], slot layer_slot[l], row
// p % block_size.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "core/status.h"
#include "format/config.h"

namespace gptoss {

enum class KvGroup : uint8_t { Full = 0, Sliding = 1 };
inline constexpr int kNumKvGroups = 2;
inline constexpr int kDefaultKvBlockSize = 16;

struct KvLayout {
  int block_size = kDefaultKvBlockSize;  // positions per block
  int max_chunk = 0;                     // most positions one step appends to a sequence (prefill chunk)
  int sliding_window = 0;                // keys a sliding layer's query sees, itself included
  int layers_per_block = 0;              // max over groups of the group's layer count
  int64_t bytes_per_block = 0;           // block_size * layers_per_block * 2 * num_key_value_heads * head_dim * elem
  std::array<int, kNumKvGroups> group_layers{};  // layers per group (0: the model has no such layer)
  std::vector<KvGroup> layer_group;              // [num_hidden_layers]
  std::vector<int> layer_slot;                   // [num_hidden_layers]: the layer's index inside its group

  // bytes_per_element: 4 for a float32 cache, 2 for bf16. Errors name the bad argument.
  static Result<KvLayout> make(const ModelConfig& c, int block_size, int bytes_per_element, int max_chunk);

  bool has_group(KvGroup g) const { return group_layers[size_t(g)] > 0; }
  // Blocks a cache of `bytes` holds (the --kv-cache-size budget); an error when not even one sequence's
  // chunk fits (max_blocks_held of one chunk in every group).
  Result<int> blocks_for_bytes(int64_t bytes) const;
  // Blocks covering positions [0, positions): ceil(positions / block_size).
  int64_t blocks_for_positions(int64_t positions) const { return (positions + block_size - 1) / block_size; }
  // First position a sliding layer still reads once the sequence holds `positions` positions (the next
  // query, at `positions`, sees keys from positions - sliding_window + 1 on).
  int64_t first_visible_position(int64_t positions) const {
    return positions - sliding_window + 1 > 0 ? positions - sliding_window + 1 : 0;
  }
  // Most blocks a sequence that reaches `positions` positions holds at once in group g: all of them
  // for the full group; for the sliding group those meeting the window plus one chunk of new positions
  // (window - 1 + max_chunk positions, at any offset inside a block), never more than all of them.
  int64_t max_blocks_held(KvGroup g, int64_t positions) const;
};

}  // namespace gptoss
