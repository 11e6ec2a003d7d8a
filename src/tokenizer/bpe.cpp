#include "tokenizer/bpe.h"

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

void RankTable::reserve(size_t num_keys, size_t num_bytes) {
  arena_.reserve(num_bytes);
  size_t cap = 16;
  while (cap < num_keys * 2) cap <<= 1;
  if (cap > slots_.size()) {
    std::vector<Slot> old = std::move(slots_);
    slots_.assign(cap, Slot{0, 0, kNoRank, 0});
    mask_ = cap - 1;
    for (const Slot& s : old) {
      if (s.rank == kNoRank) continue;
      const std::string_view key(arena_.data() + s.offset, s.len);
      size_t i = hash_bytes(key) & mask_;
      while (slots_[i].rank != kNoRank) i = (i + 1) & mask_;
      slots_[i] = s;
    }
  }
}

void RankTable::grow() { reserve(std::max<size_t>(size_ + 1, slots_.size()), arena_.size()); }

bool RankTable::insert(std::string_view bytes, uint32_t rank) {
  if ((size_ + 1) * 2 > slots_.size()) grow();
  const uint64_t h = hash_bytes(bytes);
  const uint32_t tag = static_cast<uint32_t>(h >> 32);
  size_t i = h & mask_;
  while (slots_[i].rank != kNoRank) {
    const Slot& s = slots_[i];
    if (s.tag == tag && s.len == bytes.size() && std::memcmp(arena_.data() + s.offset, bytes.data(), s.len) == 0) {
      return false;
    }
    i = (i + 1) & mask_;
  }
  slots_[i] = Slot{static_cast<uint32_t>(arena_.size()), static_cast<uint32_t>(bytes.size()), rank, tag};
  arena_.append(bytes);
  ++size_;
  return true;
}

uint32_t RankTable::find(std::string_view bytes) const {
  if (slots_.empty()) return kNoRank;
  const uint64_t h = hash_bytes(bytes);
  const uint32_t tag = static_cast<uint32_t>(h >> 32);
  size_t i = h & mask_;
  for (;;) {
    const Slot& s = slots_[i];
    if (s.rank == kNoRank) return kNoRank;
    if (s.tag == tag && s.len == bytes.size() && std::memcmp(arena_.data() + s.offset, bytes.data(), s.len) == 0) {
      return s.rank;
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
  starts.resize(n + 1);
  ranks.resize(n + 1);
  for (uint32_t i = 0; i <= n; ++i) starts[i] = i;
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
    for (uint32_t k = bi + 1; k + 1 < count; ++k) {
      starts[k] = starts[k + 1];
      ranks[k] = ranks[k + 1];
    }
    --count;
    ranks[bi] = pair_rank(bi);
    if (bi > 0) ranks[bi - 1] = pair_rank(bi - 1);
  }
  for (uint32_t i = 0; i + 1 < count; ++i) {
    out.push_back(table.find(piece.substr(starts[i], starts[i + 1] - starts[i])));
  }
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
