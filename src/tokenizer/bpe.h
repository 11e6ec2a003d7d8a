// Byte-level BPE with tiktoken semantics: a piece that is itself a token becomes that token;
// otherwise adjacent parts are merged, lowest rank of the concatenation first (leftmost on ties),
// until no adjacent pair is a token. Ranks are token ids (ids 0..N-1 of o200k_base).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace gptoss::bpe {

inline constexpr uint32_t kNoRank = 0xFFFFFFFFu;

// Open-addressing hash map from token bytes to rank. Keys live in one arena (no per-key
// allocation); slots are 16 bytes and the table is kept at most half full, so a miss usually
// ends at the first empty slot.
class RankTable {
 public:
  void reserve(size_t num_keys, size_t num_bytes);
  // False when `bytes` is already present (a duplicate token).
  bool insert(std::string_view bytes, uint32_t rank);
  uint32_t find(std::string_view bytes) const;
  size_t size() const { return size_; }

 private:
  // Probing touches only tags_ (4 bytes a slot, 2 MiB for o200k), which stays mostly in cache;
  // the key bytes are compared only on a tag match. A tag is the hash's high 32 bits with the low
  // bit set, so 0 marks an empty slot.
  void grow();
  uint32_t find_hashed(std::string_view bytes) const;
  std::string arena_;
  std::vector<uint32_t> tags_;
  std::vector<uint32_t> slot_ranks_;
  // Key of each rank: bytes at arena_[key_offset_[rank], + key_len_[rank]).
  std::vector<uint32_t> key_offset_, key_len_;
  // Direct tables for 1- and 2-byte keys (every BPE starts with these lookups): no hashing, no
  // compare, and the 256 KiB pair table stays in cache.
  std::vector<uint32_t> byte_rank_ = std::vector<uint32_t>(256, kNoRank);
  std::vector<uint32_t> pair_rank_ = std::vector<uint32_t>(65536, kNoRank);
  // Bloom filter over the keys of 3+ bytes (2 bits a key from the same hash, 2^21 bits = 256 KiB):
  // most lookups during merging are misses, and ~97% of them stop here without touching tags_.
  std::vector<uint64_t> bloom_ = std::vector<uint64_t>((1u << 21) / 64, 0);
  size_t mask_ = 0;
  size_t size_ = 0;
};

// Reusable scratch for byte_pair_encode, so that encoding a piece does not allocate.
struct MergeScratch {
  std::vector<uint32_t> starts;
  std::vector<uint32_t> ranks;       // rank of parts i and i+1 joined
  std::vector<uint32_t> part_ranks;  // rank of part i itself
  std::vector<uint32_t> prev, next;
  struct HeapEntry {
    uint32_t rank;
    uint32_t start;  // byte offset of the left part; breaks rank ties leftmost-first
    uint32_t end;    // byte offset one past the right part when the entry was pushed
  };
  std::vector<HeapEntry> heap;
};

// Appends the tokens of `piece` (not itself a token, size >= 2) to `out`. Every single byte must
// have a rank (checked when the table is loaded).
void byte_pair_encode(const RankTable& ranks, std::string_view piece, MergeScratch& scratch,
                      std::vector<uint32_t>& out);

}  // namespace gptoss::bpe
