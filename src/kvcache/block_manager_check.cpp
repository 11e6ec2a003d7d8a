// KvBlockManager::check_invariants: everything the manager counts incrementally, recounted from the
// sequences' tables (the tests run it after every operation).
#include "kvcache/block_manager.h"

namespace gptoss {

Status KvBlockManager::check_invariants() const {
  GPTOSS_TRY(pool_.check());
  const int n = pool_.num_blocks();
  const int64_t bs = layout_.block_size;
  std::vector<int32_t> refs(size_t(n), 0), rrefs(size_t(n), 0);
  std::vector<int8_t> group(size_t(n), -1), partial(size_t(n), -1);
  std::vector<SeqId> last_seq(size_t(n), -1);
  int64_t worst_total = 0;
  for (const auto& [id, s] : seqs_) {
    const bool reserved = s.mode == KvAdmit::Reserve;
    if (!(s.computed <= s.positions && s.positions <= int64_t(s.tokens.size()) && s.published <= s.computed / bs &&
          int64_t(s.hashes.size()) >= s.published))
      return Error("seq {}: {} tokens, {} positions, {} computed, {} published blocks, {} hashes", id, s.tokens.size(),
                   s.positions, s.computed, s.published, s.hashes.size());
    if (reserved && int64_t(s.tokens.size()) > s.max_positions)
      return Error("seq {}: {} tokens past its reservation of {}", id, s.tokens.size(), s.max_positions);
    const int64_t want_worst = reserved && !s.preempted ? worst_blocks(s.max_positions) : 0;
    if (s.worst != want_worst) return Error("seq {}: worst {}, expected {}", id, s.worst, want_worst);
    worst_total += s.worst;
    if (s.preempted && s.positions != 0) return Error("seq {}: preempted with {} positions", id, s.positions);

    // The chain hash of every complete block, to check the cached blocks the tables hold.
    std::vector<BlockHash> chain;
    for (int64_t i = 0; i < s.positions / bs; ++i)
      chain.push_back(kv_block_hash(i ? chain.back() : BlockHash{},
                                    std::span<const int32_t>(s.tokens).subspan(size_t(i * bs), size_t(bs))));
    int64_t held = 0;
    for (KvGroup g : {KvGroup::Full, KvGroup::Sliding}) {
      const BlockTable& t = s.tables[size_t(g)];
      const int64_t want = layout_.has_group(g) ? layout_.blocks_for_positions(s.positions) : 0;
      if (int64_t(t.blocks.size()) != want)
        return Error("seq {} group {}: {} blocks for {} positions, expected {}", id, int(g), t.blocks.size(),
                     s.positions, want);
      if (g == KvGroup::Full && t.first_live != 0) return Error("seq {}: full table starts at {}", id, t.first_live);
      if (g == KvGroup::Sliding && t.first_live > layout_.first_visible_position(s.positions) / bs)
        return Error("seq {}: sliding table released block {}, still visible at position {}", id, t.first_live - 1,
                     s.positions);
      for (size_t i = 0; i < t.blocks.size(); ++i) {
        const BlockId b = t.blocks[i];
        if ((b == kNoBlock) != (int(i) < t.first_live))
          return Error("seq {} group {}: block {} is {} (first live {})", id, int(g), i, b, t.first_live);
        if (b == kNoBlock) continue;
        if (b < 0 || b >= n) return Error("seq {}: block id {} of {}", id, b, n);
        if (last_seq[size_t(b)] == id) return Error("seq {}: block {} twice in its tables", id, b);
        last_seq[size_t(b)] = id;
        if (group[size_t(b)] != -1 && group[size_t(b)] != int8_t(g))
          return Error("block {} is in tables of both groups", b);
        group[size_t(b)] = int8_t(g);
        if (g == KvGroup::Full) {  // partial: the last block of a table whose positions end inside it
          const int8_t p = i + 1 == t.blocks.size() && s.positions % bs != 0;
          if (partial[size_t(b)] != -1 && partial[size_t(b)] != p)
            return Error("block {} is partial in one table and full in another", b);
          partial[size_t(b)] = p;
        }
        ++refs[size_t(b)];
        rrefs[size_t(b)] += reserved;
        ++held;
        if (pool_.is_hashed(b) && (i >= chain.size() || pool_.hash_of(b) != chain[i] || pool_.group_of(b) != g))
          return Error("seq {} group {}: cached block {} at index {} holds other tokens", id, int(g), b, i);
      }
      if (layout_.max_blocks_held(g, s.positions) < int64_t(t.blocks.size()) - t.first_live)
        return Error("seq {} group {}: holds {} blocks, at most {} expected", id, int(g),
                     int64_t(t.blocks.size()) - t.first_live, layout_.max_blocks_held(g, s.positions));
    }
    if (reserved && held > s.worst) return Error("seq {}: holds {} blocks, reserved {}", id, held, s.worst);
  }
  int64_t parts = 0;
  for (BlockId b = 0; b < n; ++b) {
    if (refs[size_t(b)] != pool_.refcount(b))
      return Error("block {}: refcount {}, {} table entries name it", b, pool_.refcount(b), refs[size_t(b)]);
    if (rrefs[size_t(b)] != reserved_refs_[size_t(b)])
      return Error("block {}: {} reserved references counted, {} found", b, reserved_refs_[size_t(b)],
                   rrefs[size_t(b)]);
    if (refs[size_t(b)] == 0) continue;
    if (group[size_t(b)] != int8_t(block_group_[size_t(b)]))
      return Error("block {}: in a table of group {}, recorded as group {}", b, group[size_t(b)],
                   int(block_group_[size_t(b)]));
    if (group[size_t(b)] == int8_t(KvGroup::Full) && partial[size_t(b)] != int8_t(partial_[size_t(b)]))
      return Error("block {}: partial {}, recorded {}", b, partial[size_t(b)], bool(partial_[size_t(b)]));
    parts += owed_part(block_group_[size_t(b)], partial[size_t(b)] == 1, refs[size_t(b)], rrefs[size_t(b)]);
  }
  if (parts != owed_parts_) return Error("owed parts of the blocks: {}, counted {}", parts, owed_parts_);
  if (worst_total != worst_total_) return Error("reserved blocks: {}, counted {}", worst_total, worst_total_);
  if (pool_.num_referenced() + owed() > n)
    return Error("{} blocks referenced + {} owed to reserved sequences > {} blocks", pool_.num_referenced(), owed(), n);
  return Status::ok_status();
}

}  // namespace gptoss
