#include "tokenizer/bpe.h"

#define XXH_INLINE_ALL
#include <xxhash.h>

#include <algorithm>
#include <cstring>

namespace gptoss::bpe {

namespace {
inline uint64_t hash_bytes(std::string_view s) { return XXH3_64bits(s.data(), s.size()); }

// Pieces up to this many bytes use the simple O(n^2) scan (what tiktoken does, fastest for the
// short pieces that dominate text); longer ones (long runs of spaces or punctuation) use a
// linked list plus a min-heap, O(n log n), giving the same merges.
constexpr size_t kQuadraticMaxBytes = 128;
}  // namespace

inline uint32_t tag_of(uint64_t h) { return static_cast<uint32_t>(h >> 32) | 1u; }
// Two Bloom bit positions (of 2^21) from hash bits not used for the slot index's low bits.
inline uint32_t bloom_bit1(uint64_t h) { return static_cast<uint32_t>(h >> 43) & ((1u << 21) - 1); }
inline uint32_t bloom_bit2(uint64_t h) { return static_cast<uint32_t>(h >> 22) & ((1u << 21) - 1); }

inline bool bytes_equal(const char* a, const char* b, size_t n) {
  while (n >= 8) {
    uint64_t x, y;
    std::memcpy(&x, a, 8);
    std::memcpy(&y, b, 8);
    if (x != y) return false;
    a += 8;
    b += 8;
    n -= 8;
  }
  for (size_t i = 0; i < n; ++i) {
    if (a[i] != b[i]) return false;
  }
  return true;
}

void RankTable::reserve(size_t num_keys, size_t num_bytes) {
  arena_.reserve(num_bytes);
  size_t cap = 16;
  while (cap < num_keys * 2) cap <<= 1;
  if (cap <= tags_.size()) return;
  tags_.assign(cap, 0);
  slot_ranks_.assign(cap, kNoRank);
  mask_ = cap - 1;
  // Re-insert the existing keys (ranks with a key).
  for (uint32_t rank = 0; rank < key_len_.size(); ++rank) {
    if (key_len_[rank] == 0) continue;
    const std::string_view key(arena_.data() + key_offset_[rank], key_len_[rank]);
    const uint64_t h = hash_bytes(key);
    size_t i = h & mask_;
    while (tags_[i] != 0) i = (i + 1) & mask_;
    tags_[i] = tag_of(h);
    slot_ranks_[i] = rank;
  }
}

void RankTable::grow() { reserve(std::max<size_t>(size_ + 1, tags_.size()), arena_.size()); }

bool RankTable::insert(std::string_view bytes, uint32_t rank) {
  if (bytes.empty() || rank == kNoRank) return false;
  if ((size_ + 1) * 2 > tags_.size()) grow();
  if (find(bytes) != kNoRank) return false;
  if (rank < key_len_.size() && key_len_[rank] != 0) return false;  // rank already has a key
  const uint64_t h = hash_bytes(bytes);
  size_t i = h & mask_;
  while (tags_[i] != 0) i = (i + 1) & mask_;
  tags_[i] = tag_of(h);
  slot_ranks_[i] = rank;
  bloom_[bloom_bit1(h) / 64] |= 1ull << (bloom_bit1(h) % 64);
  bloom_[bloom_bit2(h) / 64] |= 1ull << (bloom_bit2(h) % 64);
  if (rank >= key_len_.size()) {
    key_offset_.resize(static_cast<size_t>(rank) + 1, 0);
    key_len_.resize(static_cast<size_t>(rank) + 1, 0);
  }
  key_offset_[rank] = static_cast<uint32_t>(arena_.size());
  key_len_[rank] = static_cast<uint32_t>(bytes.size());
  arena_.append(bytes);
  ++size_;
  if (bytes.size() == 1) byte_rank_[static_cast<uint8_t>(bytes[0])] = rank;
  if (bytes.size() == 2) pair_rank_[static_cast<uint8_t>(bytes[0]) * 256u + static_cast<uint8_t>(bytes[1])] = rank;
  return true;
}

uint32_t RankTable::find(std::string_view bytes) const {
  if (bytes.size() == 1) return byte_rank_[static_cast<uint8_t>(bytes[0])];
  if (bytes.size() == 2) return pair_rank_[static_cast<uint8_t>(bytes[0]) * 256u + static_cast<uint8_t>(bytes[1])];
  return find_hashed(bytes);
}

uint32_t RankTable::find_hashed(std::string_view bytes) const {
  if (tags_.empty()) return kNoRank;
  const uint64_t h = hash_bytes(bytes);
  if (!((bloom_[bloom_bit1(h) / 64] >> (bloom_bit1(h) % 64)) & (bloom_[bloom_bit2(h) / 64] >> (bloom_bit2(h) % 64)) & 1)) {
    return kNoRank;
  }
  const uint32_t tag = tag_of(h);
  size_t i = h & mask_;
  for (;;) {
    const uint32_t t = tags_[i];
    if (t == 0) return kNoRank;
    if (t == tag) {
      const uint32_t rank = slot_ranks_[i];
      if (key_len_[rank] == bytes.size() && bytes_equal(arena_.data() + key_offset_[rank], bytes.data(), bytes.size())) {
        return rank;
      }
    }
    i = (i + 1) & mask_;
  }
}

namespace {

// tiktoken's scan: parts[i] starts at starts[i]; ranks[i] is the rank of parts i and i+1 joined.
void merge_quadratic(const RankTable& table, std::string_view piece, MergeScratch& m, std::vector<uint32_t>& out) {
  const uint32_t n = static_cast<uint32_t>(piece.size());
  auto& starts = m.starts;
  auto& ranks = m.ranks;
  auto& part_ranks = m.part_ranks;
  starts.resize(n + 1);
  ranks.resize(n + 1);
  part_ranks.resize(n + 1);
  for (uint32_t i = 0; i <= n; ++i) starts[i] = i;
  for (uint32_t i = 0; i < n; ++i) part_ranks[i] = table.find(piece.substr(i, 1));
  for (uint32_t i = 0; i + 1 < n; ++i) ranks[i] = table.find(piece.substr(i, 2));
  ranks[n - 1] = kNoRank;
  ranks[n] = kNoRank;
  uint32_t count = n + 1;  // number of boundaries; parts = count - 1
  const auto pair_rank = [&](uint32_t i) -> uint32_t {
    // parts i and i+1 joined, valid when boundary i+2 exists
    if (i + 2 >= count) return kNoRank;
    return table.find(piece.substr(starts[i], starts[i + 2] - starts[i]));
  };
  for (;;) {
    uint32_t best = kNoRank, bi = 0;
    for (uint32_t i = 0; i + 1 < count; ++i) {
      if (ranks[i] < best) {
        best = ranks[i];
        bi = i;
      }
    }
    if (best == kNoRank) break;
    // Remove boundary bi+1 (parts bi and bi+1 become one), then refresh the two affected pairs.
    part_ranks[bi] = best;
    for (uint32_t k = bi + 1; k + 1 < count; ++k) {
      starts[k] = starts[k + 1];
      ranks[k] = ranks[k + 1];
      part_ranks[k] = part_ranks[k + 1];
    }
    --count;
    ranks[bi] = pair_rank(bi);
    if (bi > 0) ranks[bi - 1] = pair_rank(bi - 1);
  }
  out.insert(out.end(), part_ranks.begin(), part_ranks.begin() + (count - 1));
}

void merge_heap(const RankTable& table, std::string_view piece, MergeScratch& m, std::vector<uint32_t>& out) {
  const uint32_t n = static_cast<uint32_t>(piece.size());
  constexpr uint32_t kNone = 0xFFFFFFFFu;
  // Nodes are indexed by their start byte; end of node i is next[i] (or n when it is the last).
  auto& next = m.next;
  auto& prev = m.prev;
  auto& heap = m.heap;
  next.resize(n);
  prev.resize(n);
  heap.clear();
  for (uint32_t i = 0; i < n; ++i) {
    next[i] = i + 1 < n ? i + 1 : kNone;
    prev[i] = i > 0 ? i - 1 : kNone;
  }
  const auto end_of = [&](uint32_t i) { return next[i] == kNone ? n : next[i]; };
  const auto greater = [](const MergeScratch::HeapEntry& a, const MergeScratch::HeapEntry& b) {
    return a.rank != b.rank ? a.rank > b.rank : a.start > b.start;
  };
  const auto push_pair = [&](uint32_t i) {
    const uint32_t j = next[i];
    if (j == kNone) return;
    const uint32_t e = end_of(j);
    const uint32_t r = table.find(piece.substr(i, e - i));
    if (r == kNoRank) return;
    heap.push_back({r, i, e});
    std::push_heap(heap.begin(), heap.end(), greater);
  };
  for (uint32_t i = 0; i + 1 < n; ++i) push_pair(i);
  std::vector<bool> alive(n, true);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), greater);
    const MergeScratch::HeapEntry e = heap.back();
    heap.pop_back();
    const uint32_t i = e.start;
    // Stale when node i was absorbed, or its pair no longer spans the same bytes.
    if (!alive[i] || next[i] == kNone || end_of(next[i]) != e.end) continue;
    const uint32_t j = next[i];
    alive[j] = false;
    next[i] = next[j];
    if (next[j] != kNone) prev[next[j]] = i;
    if (prev[i] != kNone) push_pair(prev[i]);
    push_pair(i);
  }
  for (uint32_t i = 0; i != kNone && i < n; i = next[i]) {
    out.push_back(table.find(piece.substr(i, end_of(i) - i)));
  }
}

}  // namespace

void byte_pair_encode(const RankTable& table, std::string_view piece, MergeScratch& scratch,
                      std::vector<uint32_t>& out) {
  if (piece.size() <= kQuadraticMaxBytes) {
    merge_quadratic(table, piece, scratch, out);
  } else {
    merge_heap(table, piece, scratch, out);
  }
}

}  // namespace gptoss::bpe
