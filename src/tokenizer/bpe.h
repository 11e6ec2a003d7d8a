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
  struct Slot {
    uint32_t offset;
    uint32_t len;
    uint32_t rank;  // kNoRank marks an empty slot
    uint32_t tag;   // high 32 bits of the hash, checked before comparing bytes
  };
  void grow();
  std::string arena_;
  std::vector<Slot> slots_;
  size_t mask_ = 0;
  size_t size_ = 0;
};

// Reusable scratch for byte_pair_encode, so that encoding a piece does not allocate.
struct MergeScratch {
  std::vector<uint32_t> starts;
  std::vector<uint32_t> ranks;
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
