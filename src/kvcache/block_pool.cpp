#include "kvcache/block_pool.h"

#include <xxhash.h>

#include <cassert>

namespace gptoss {

BlockHash kv_block_hash(const BlockHash& prev, std::span<const int32_t> tokens) {
  std::vector<uint64_t> buf(2 + (tokens.size() + 1) / 2, 0);
  buf[0] = prev.lo;
  buf[1] = prev.hi;
  for (size_t i = 0; i < tokens.size(); ++i) buf[2 + i / 2] |= uint64_t(uint32_t(tokens[i])) << (32 * (i % 2));
  // The token count is hashed too, so that a short final run never equals a longer one.
  const XXH128_hash_t h = XXH3_128bits_withSeed(buf.data(), buf.size() * sizeof(uint64_t), tokens.size());
  return {h.low64, h.high64};
}

BlockPool::BlockPool(int num_blocks)
    : refcount_(size_t(num_blocks), 0),
      hashed_(size_t(num_blocks), false),
      group_(size_t(num_blocks), KvGroup::Full),
      hash_(size_t(num_blocks)),
      lru_prev_(size_t(num_blocks) + 1, num_blocks),
      lru_next_(size_t(num_blocks) + 1, num_blocks) {
  free_.reserve(size_t(num_blocks));
  for (BlockId b = num_blocks - 1; b >= 0; --b) free_.push_back(b);  // block 0 is handed out first
}

void BlockPool::lru_push_back(BlockId b) {
  const BlockId s = num_blocks(), last = lru_prev_[size_t(s)];
  lru_prev_[size_t(b)] = last;
  lru_next_[size_t(b)] = s;
  lru_next_[size_t(last)] = b;
  lru_prev_[size_t(s)] = b;
  ++num_cached_;
}

void BlockPool::lru_remove(BlockId b) {
  const BlockId p = lru_prev_[size_t(b)], n = lru_next_[size_t(b)];
  lru_next_[size_t(p)] = n;
  lru_prev_[size_t(n)] = p;
  lru_prev_[size_t(b)] = lru_next_[size_t(b)] = num_blocks();
  --num_cached_;
}

Result<BlockId> BlockPool::allocate() {
  BlockId b = kNoBlock;
  if (!free_.empty()) {
    b = free_.back();
    free_.pop_back();
  } else if (num_cached_ > 0) {
    b = lru_next_[size_t(num_blocks())];  // least recently used
    lru_remove(b);
    cache_[size_t(group_[size_t(b)])].erase(hash_[size_t(b)]);
    hashed_[size_t(b)] = false;
  } else {
    return Error("kv cache: all {} blocks are in use", num_blocks());
  }
  refcount_[size_t(b)] = 1;
  return b;
}

void BlockPool::ref(BlockId b) {
  assert(b >= 0 && b < num_blocks());
  if (refcount_[size_t(b)]++ == 0) {
    assert(hashed_[size_t(b)]);  // a free block is only handed out by allocate
    lru_remove(b);
  }
}

void BlockPool::unref(BlockId b) {
  assert(b >= 0 && b < num_blocks() && refcount_[size_t(b)] > 0);
  if (--refcount_[size_t(b)] > 0) return;
  if (hashed_[size_t(b)])
    lru_push_back(b);
  else
    free_.push_back(b);
}

void BlockPool::publish(BlockId b, KvGroup g, const BlockHash& h) {
  assert(refcount_[size_t(b)] > 0);
  if (hashed_[size_t(b)]) return;
  if (!cache_[size_t(g)].emplace(h, b).second) return;
  hashed_[size_t(b)] = true;
  group_[size_t(b)] = g;
  hash_[size_t(b)] = h;
}

BlockId BlockPool::lookup(KvGroup g, const BlockHash& h) const {
  auto it = cache_[size_t(g)].find(h);
  return it == cache_[size_t(g)].end() ? kNoBlock : it->second;
}

Status BlockPool::check() const {
  const int n = num_blocks();
  std::vector<uint8_t> seen(size_t(n), 0);  // 1: on the free list, 2: on the LRU list
  for (BlockId b : free_) {
    if (b < 0 || b >= n) return Error("block pool: free list holds id {} of {}", b, n);
    if (seen[size_t(b)]) return Error("block pool: block {} twice on the free list", b);
    seen[size_t(b)] = 1;
    if (refcount_[size_t(b)] != 0 || hashed_[size_t(b)])
      return Error("block pool: free block {} has refcount {}, hashed {}", b, refcount_[size_t(b)],
                   bool(hashed_[size_t(b)]));
  }
  int lru = 0;
  for (BlockId b = lru_next_[size_t(n)], prev = n; b != n; prev = b, b = lru_next_[size_t(b)]) {
    if (b < 0 || b > n || lru > n) return Error("block pool: LRU list broken at {}", b);
    if (lru_prev_[size_t(b)] != prev) return Error("block pool: LRU list links of block {} disagree", b);
    if (seen[size_t(b)]) return Error("block pool: block {} both free and cached, or twice cached", b);
    seen[size_t(b)] = 2;
    ++lru;
    if (refcount_[size_t(b)] != 0 || !hashed_[size_t(b)])
      return Error("block pool: cached block {} has refcount {}, hashed {}", b, refcount_[size_t(b)],
                   bool(hashed_[size_t(b)]));
  }
  if (lru != num_cached_) return Error("block pool: {} blocks on the LRU list, counted {}", lru, num_cached_);
  size_t hashed = 0;
  for (BlockId b = 0; b < n; ++b) {
    if (refcount_[size_t(b)] < 0) return Error("block pool: block {} has refcount {}", b, refcount_[size_t(b)]);
    if (refcount_[size_t(b)] == 0 && !seen[size_t(b)]) return Error("block pool: block {} unreferenced and lost", b);
    if (!hashed_[size_t(b)]) continue;
    ++hashed;
    if (lookup(group_[size_t(b)], hash_[size_t(b)]) != b) return Error("block pool: hashed block {} not in its map", b);
  }
  if (hashed != cache_[0].size() + cache_[1].size())
    return Error("block pool: {} hashed blocks, {} map entries", hashed, cache_[0].size() + cache_[1].size());
  return Status::ok_status();
}

}  // namespace gptoss
