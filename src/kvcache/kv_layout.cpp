#include "kvcache/kv_layout.h"

#include <algorithm>
#include <limits>

namespace gptoss {

Result<KvLayout> KvLayout::make(const ModelConfig& c, int block_size, int bytes_per_element, int max_chunk) {
  if (block_size < 1 || block_size > 4096) return Error("kv cache: block size {}, expected 1..4096", block_size);
  if (bytes_per_element < 1 || bytes_per_element > 8)
    return Error("kv cache: {} bytes per element, expected 1..8", bytes_per_element);
  if (max_chunk < 1 || max_chunk > ConfigLimits::kMaxPositions)
    return Error("kv cache: chunk of {} positions, expected 1..{}", max_chunk, ConfigLimits::kMaxPositions);
  if (c.num_hidden_layers < 1 || c.layer_is_sliding.size() != size_t(c.num_hidden_layers))
    return Error("kv cache: config has {} layers and {} layer types", c.num_hidden_layers, c.layer_is_sliding.size());
  if (c.num_key_value_heads < 1 || c.head_dim < 1)
    return Error("kv cache: config has {} key/value heads of dim {}", c.num_key_value_heads, c.head_dim);
  KvLayout L;
  L.block_size = block_size;
  L.max_chunk = max_chunk;
  L.sliding_window = c.sliding_window;
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const KvGroup g = c.layer_is_sliding[size_t(l)] ? KvGroup::Sliding : KvGroup::Full;
    L.layer_group.push_back(g);
    L.layer_slot.push_back(L.group_layers[size_t(g)]++);
  }
  if (L.has_group(KvGroup::Sliding) && L.sliding_window < 1)
    return Error("kv cache: sliding layers with a window of {}", L.sliding_window);
  L.layers_per_block = std::max(L.group_layers[0], L.group_layers[1]);
  // Within ConfigLimits every factor is small: at most 4096 * 1024 * 2 * 1024 * 1024 * 8 < 2^63.
  L.bytes_per_block =
      int64_t(block_size) * L.layers_per_block * 2 * c.num_key_value_heads * c.head_dim * bytes_per_element;
  return L;
}

int64_t KvLayout::max_blocks_held(KvGroup g, int64_t positions) const {
  if (!has_group(g) || positions <= 0) return 0;
  const int64_t all = blocks_for_positions(positions);
  if (g == KvGroup::Full) return all;
  // A run of S positions starting anywhere meets at most (S + block_size - 2) / block_size + 1 blocks.
  const int64_t span = int64_t(sliding_window) - 1 + max_chunk;
  return std::min(all, (span + block_size - 2) / block_size + 1);
}

Result<int> KvLayout::blocks_for_bytes(int64_t bytes) const {
  if (bytes_per_block <= 0) return Error("kv cache: layout not initialised");
  const int64_t n = std::min<int64_t>(bytes / bytes_per_block, std::numeric_limits<int32_t>::max());
  const int64_t need = max_blocks_held(KvGroup::Full, max_chunk) + max_blocks_held(KvGroup::Sliding, max_chunk);
  if (bytes < 0 || n < need)
    return Error("kv cache: {} bytes hold {} blocks of {} bytes, expected at least {} (one chunk of {} positions)",
                 bytes, bytes < 0 ? 0 : n, bytes_per_block, need, max_chunk);
  return int(n);
}

}  // namespace gptoss
