// The pool of KV blocks: ids 0..num_blocks-1, a reference count per block, and the prefix cache (which
// complete blocks hold which token content). Host-side bookkeeping only: the backends own the storage
// (kv_layout.h) and index it by these ids.
//
// Every block is in exactly one state:
//   free        refcount 0, no hash: on the free list;
//   cached      refcount 0, hashed: its content is still valid and findable by lookup; on the LRU list,
//               evicted (its hash forgotten) when allocate finds the free list empty;
//   referenced  refcount > 0 (the number of block-table entries that name it), hashed or not.
// A cache entry holds no reference: free + cached + referenced = num_blocks.
#pragma once

#include <cstdint>
#include <span>
#include <unordered_map>
#include <vector>

#include "core/status.h"
#include "kvcache/kv_layout.h"

namespace gptoss {

using BlockId = int32_t;
inline constexpr BlockId kNoBlock = -1;

// Content hash of a complete block (block_size tokens): XXH3-128 of (hash of the previous block, the
// block's token ids), the first block chained from {0, 0}. Equal hashes mean the same tokens at the
// same positions from position 0 on (a collision has probability about 2^-128 per pair).
struct BlockHash {
  uint64_t lo = 0, hi = 0;
  bool operator==(const BlockHash&) const = default;
};
BlockHash kv_block_hash(const BlockHash& prev, std::span<const int32_t> tokens);

class BlockPool {
 public:
  explicit BlockPool(int num_blocks);

  int num_blocks() const { return int(refcount_.size()); }
  int num_free() const { return int(free_.size()); }
  int num_cached() const { return num_cached_; }  // refcount 0, hashed
  int num_referenced() const { return num_blocks() - num_free() - num_cached(); }
  int refcount(BlockId b) const { return refcount_[size_t(b)]; }
  bool is_hashed(BlockId b) const { return hashed_[size_t(b)]; }
  const BlockHash& hash_of(BlockId b) const { return hash_[size_t(b)]; }  // valid where is_hashed
  KvGroup group_of(BlockId b) const { return group_[size_t(b)]; }         // valid where is_hashed

  // A block with refcount 1: from the free list, else the least recently used cached block (whose
  // hash is dropped). An error when every block is referenced.
  Result<BlockId> allocate();
  // Reference counts. ref of a cached block takes it off the LRU list; unref to 0 puts a hashed
  // block at the LRU list's most recent end and an unhashed one on the free list.
  void ref(BlockId b);
  void unref(BlockId b);

  // Prefix cache, one map per group. publish records that referenced block b holds the content h;
  // it does nothing when b is already hashed or h is already cached (by another block: the first
  // one stays). lookup returns the block holding h, or kNoBlock.
  void publish(BlockId b, KvGroup g, const BlockHash& h);
  BlockId lookup(KvGroup g, const BlockHash& h) const;

  // Checks the states above and that the maps, hashes, free list and LRU list agree. O(num_blocks).
  Status check() const;

 private:
  friend struct BlockPoolTestAccess;
  struct HashOf {
    size_t operator()(const BlockHash& h) const { return size_t(h.lo ^ (h.hi * 0x9e3779b97f4a7c15ull)); }
  };
  void lru_push_back(BlockId b);
  void lru_remove(BlockId b);

  std::vector<int32_t> refcount_;             // [num_blocks]
  std::vector<BlockId> free_;                 // stack of free blocks
  std::vector<bool> hashed_;                  // [num_blocks]
  std::vector<KvGroup> group_;                // [num_blocks]: valid where hashed
  std::vector<BlockHash> hash_;               // [num_blocks]: valid where hashed
  std::vector<BlockId> lru_prev_, lru_next_;  // [num_blocks + 1]: a ring through sentinel num_blocks
  int num_cached_ = 0;
  std::unordered_map<BlockHash, BlockId, HashOf> cache_[kNumKvGroups];
};

}  // namespace gptoss
