#include "kvcache/block_manager.h"

#include <algorithm>

namespace gptoss {

namespace {
constexpr KvGroup kGroups[kNumKvGroups] = {KvGroup::Full, KvGroup::Sliding};
}

KvBlockManager::KvBlockManager(const KvLayout& layout, int num_blocks)
    : layout_(layout),
      pool_(num_blocks),
      reserved_refs_(size_t(num_blocks), 0),
      block_group_(size_t(num_blocks), KvGroup::Full),
      partial_(size_t(num_blocks), false) {}

Result<KvBlockManager> KvBlockManager::create(const KvLayout& layout, int64_t cache_bytes) {
  GPTOSS_ASSIGN(int n, layout.blocks_for_bytes(cache_bytes));
  return KvBlockManager(layout, n);
}

KvBlockManager::Sequence* KvBlockManager::find(SeqId id) {
  auto it = seqs_.find(id);
  return it == seqs_.end() ? nullptr : &it->second;
}
const KvBlockManager::Sequence* KvBlockManager::find(SeqId id) const {
  auto it = seqs_.find(id);
  return it == seqs_.end() ? nullptr : &it->second;
}

bool KvBlockManager::is_preempted(SeqId id) const {
  const Sequence* s = find(id);
  return s && s->preempted;
}
int64_t KvBlockManager::num_tokens(SeqId id) const {
  const Sequence* s = find(id);
  return s ? int64_t(s->tokens.size()) : 0;
}
int64_t KvBlockManager::num_positions(SeqId id) const {
  const Sequence* s = find(id);
  return s ? s->positions : 0;
}
std::span<const int32_t> KvBlockManager::tokens(SeqId id) const {
  const Sequence* s = find(id);
  return s ? std::span<const int32_t>(s->tokens) : std::span<const int32_t>();
}
const BlockTable* KvBlockManager::table(SeqId id, KvGroup g) const {
  const Sequence* s = find(id);
  return s ? &s->tables[size_t(g)] : nullptr;
}

int64_t KvBlockManager::worst_blocks(int64_t positions) const {
  return layout_.max_blocks_held(KvGroup::Full, positions) + layout_.max_blocks_held(KvGroup::Sliding, positions);
}

// --- references and the owed count ------------------------------------------------------------

// A block's share of owed, beyond the worst counts of its Reserve holders: a full-group block is one
// they need not allocate (-1 per Reserve holder), but a shared partial one must be copied by each (+1);
// a sliding block held by one Reserve sequence alone is one it has (-1).
int KvBlockManager::owed_part(KvGroup g, bool partial, int refs, int reserved_refs) {
  if (g == KvGroup::Full) return -reserved_refs + (partial && refs > 1 ? reserved_refs : 0);
  return refs == 1 && reserved_refs == 1 ? -1 : 0;
}
int KvBlockManager::owed_part(BlockId b) const {
  return owed_part(block_group_[size_t(b)], partial_[size_t(b)], pool_.refcount(b), reserved_refs_[size_t(b)]);
}

void KvBlockManager::take_ref(BlockId b, bool reserved) {
  const int before = owed_part(b);
  pool_.ref(b);
  reserved_refs_[size_t(b)] += reserved;
  owed_parts_ += owed_part(b) - before;
}

void KvBlockManager::drop_ref(BlockId b, bool reserved) {
  const int before = owed_part(b);
  reserved_refs_[size_t(b)] -= reserved;
  pool_.unref(b);
  owed_parts_ += owed_part(b) - before;
}

Result<BlockId> KvBlockManager::alloc(KvGroup g, bool reserved) {
  GPTOSS_ASSIGN(BlockId b, pool_.allocate());
  reserved_refs_[size_t(b)] = reserved;
  block_group_[size_t(b)] = g;
  partial_[size_t(b)] = false;
  owed_parts_ += owed_part(b);
  return b;
}

void KvBlockManager::set_partial(BlockId b, bool partial) {
  const int before = owed_part(b);
  partial_[size_t(b)] = partial;
  owed_parts_ += owed_part(b) - before;
}

// How much referenced + owed grows when a sequence of this mode takes a reference to b.
int KvBlockManager::take_cost(BlockId b, bool reserved) const {
  const int refs = pool_.refcount(b), rrefs = reserved_refs_[size_t(b)];
  const KvGroup g = refs == 0 ? pool_.group_of(b) : block_group_[size_t(b)];  // a cached block: its map's group
  const bool partial = refs > 0 && partial_[size_t(b)];
  return (refs == 0) + owed_part(g, partial, refs + 1, rrefs + reserved) - owed_part(g, partial, refs, rrefs);
}

void KvBlockManager::drop_all(Sequence& s) {
  const bool reserved = s.mode == KvAdmit::Reserve;
  for (KvGroup g : kGroups) {
    for (BlockId b : s.tables[size_t(g)].blocks)
      if (b != kNoBlock) drop_ref(b, reserved);
    s.tables[size_t(g)] = BlockTable{};
  }
  worst_total_ -= s.worst;
  s.worst = 0;
  s.positions = s.computed = s.published = 0;
}

// --- prefix cache -------------------------------------------------------------------------------

KvBlockManager::Hits KvBlockManager::find_hits(std::span<const int32_t> tokens) const {
  const int64_t bs = layout_.block_size;
  const int64_t kmax = tokens.empty() ? 0 : (int64_t(tokens.size()) - 1) / bs;
  Hits h;
  BlockHash prev{};
  for (int64_t i = 0; i < kmax; ++i) {
    const BlockHash next = kv_block_hash(prev, tokens.subspan(size_t(i * bs), size_t(bs)));
    if (layout_.has_group(KvGroup::Full) && pool_.lookup(KvGroup::Full, next) == kNoBlock) break;
    h.hashes.push_back(next);
    prev = next;
  }
  int64_t k = int64_t(h.hashes.size());
  auto first_sliding = [&](int64_t blocks) { return layout_.first_visible_position(blocks * bs) / bs; };
  if (layout_.has_group(KvGroup::Sliding)) {
    for (; k > 0; --k) {
      bool all = true;
      for (int64_t i = first_sliding(k); i < k && all; ++i)
        all = pool_.lookup(KvGroup::Sliding, h.hashes[size_t(i)]) != kNoBlock;
      if (all) break;
    }
    h.first_sliding = int(first_sliding(k));
    for (int64_t i = h.first_sliding; i < k; ++i)
      h.tables[size_t(KvGroup::Sliding)].push_back(pool_.lookup(KvGroup::Sliding, h.hashes[size_t(i)]));
  }
  if (layout_.has_group(KvGroup::Full))
    for (int64_t i = 0; i < k; ++i)
      h.tables[size_t(KvGroup::Full)].push_back(pool_.lookup(KvGroup::Full, h.hashes[size_t(i)]));
  h.hashes.resize(size_t(k));
  h.blocks = k;
  return h;
}

int64_t KvBlockManager::admit_cost(const Hits& h, int64_t prompt, int64_t max_positions, KvAdmit mode) const {
  const bool reserved = mode == KvAdmit::Reserve;
  int64_t cost = reserved ? worst_blocks(max_positions) : 0;
  for (KvGroup g : kGroups) {
    for (BlockId b : h.tables[size_t(g)]) cost += take_cost(b, reserved);
    if (!reserved)
      cost += std::max<int64_t>(0, layout_.max_blocks_held(g, prompt) - int64_t(h.tables[size_t(g)].size()));
  }
  return cost;
}

void KvBlockManager::attach(Sequence& s, Hits&& h) {
  const bool reserved = s.mode == KvAdmit::Reserve;
  s.positions = s.computed = h.blocks * layout_.block_size;
  s.published = h.blocks;
  if (s.hashes.size() < h.hashes.size()) s.hashes = std::move(h.hashes);
  if (layout_.has_group(KvGroup::Full)) s.tables[size_t(KvGroup::Full)].blocks = std::move(h.tables[0]);
  if (layout_.has_group(KvGroup::Sliding)) {
    BlockTable& t = s.tables[size_t(KvGroup::Sliding)];
    t.first_live = h.first_sliding;
    t.blocks.assign(size_t(h.first_sliding), kNoBlock);
    t.blocks.insert(t.blocks.end(), h.tables[1].begin(), h.tables[1].end());
  }
  for (KvGroup g : kGroups)
    for (BlockId b : s.tables[size_t(g)].blocks)
      if (b != kNoBlock) take_ref(b, reserved);
  s.worst = reserved ? worst_blocks(s.max_positions) : 0;
  worst_total_ += s.worst;
}

// --- admission ----------------------------------------------------------------------------------

bool KvBlockManager::can_admit(std::span<const int32_t> prompt, int64_t max_new_tokens, KvAdmit mode) const {
  if (prompt.empty() || max_new_tokens < 0 || max_new_tokens > ConfigLimits::kMaxPositions ||
      int64_t(prompt.size()) > ConfigLimits::kMaxPositions)
    return false;
  const int64_t prompt_n = int64_t(prompt.size());
  return admit_cost(find_hits(prompt), prompt_n, prompt_n + max_new_tokens, mode) <= spare_blocks();
}

Result<SeqId> KvBlockManager::admit(std::span<const int32_t> prompt, int64_t max_new_tokens, KvAdmit mode) {
  if (prompt.empty()) return Error("kv cache: admit: empty prompt");
  if (max_new_tokens < 0 || max_new_tokens > ConfigLimits::kMaxPositions ||
      int64_t(prompt.size()) > ConfigLimits::kMaxPositions)
    return Error("kv cache: admit: {} prompt tokens + {} new, expected at most {} each", prompt.size(), max_new_tokens,
                 ConfigLimits::kMaxPositions);
  const int64_t prompt_n = int64_t(prompt.size());
  Sequence s;
  s.mode = mode;
  s.max_positions = mode == KvAdmit::Reserve ? prompt_n + max_new_tokens : 0;
  Hits h = find_hits(prompt);
  const int64_t cost = admit_cost(h, prompt_n, s.max_positions, mode);
  if (cost > spare_blocks())
    return Error("kv cache full: a prompt of {} tokens ({} cached) needs {} blocks, {} spare", prompt_n,
                 h.blocks * layout_.block_size, cost, spare_blocks());
  s.tokens.assign(prompt.begin(), prompt.end());
  attach(s, std::move(h));
  const SeqId id = next_id_++;
  seqs_.emplace(id, std::move(s));
  return id;
}

Result<int64_t> KvBlockManager::resume(SeqId id) {
  Sequence* s = find(id);
  if (!s) return Error("kv cache: resume: no sequence {}", id);
  if (!s->preempted) return Error("kv cache: resume: sequence {} is not preempted", id);
  Hits h = find_hits(s->tokens);
  const int64_t cost = admit_cost(h, int64_t(s->tokens.size()), s->max_positions, s->mode);
  if (cost > spare_blocks())
    return Error("kv cache full: resuming sequence {} ({} tokens, {} cached) needs {} blocks, {} spare", id,
                 s->tokens.size(), h.blocks * layout_.block_size, cost, spare_blocks());
  attach(*s, std::move(h));
  s->preempted = false;
  return s->positions;
}

// --- growth -------------------------------------------------------------------------------------

Result<std::vector<BlockCopy>> KvBlockManager::extend(SeqId id, int n) {
  Sequence* s = find(id);
  if (!s) return Error("kv cache: extend: no sequence {}", id);
  if (s->preempted) return Error("kv cache: extend: sequence {} is preempted (resume it first)", id);
  const int64_t p0 = s->positions, bs = layout_.block_size;
  if (n < 0 || n > layout_.max_chunk)
    return Error("kv cache: extend: {} positions, expected 0..{} (the chunk)", n, layout_.max_chunk);
  if (p0 + n > int64_t(s->tokens.size()))
    return Error("kv cache: extend: sequence {} has {} tokens, {} with slots, asked for {} more", id, s->tokens.size(),
                 p0, n);
  if (s->mode == KvAdmit::Reserve && p0 + n > s->max_positions)
    return Error("kv cache: extend: sequence {} reserved {} positions, asked for {}", id, s->max_positions, p0 + n);
  const bool reserved = s->mode == KvAdmit::Reserve;

  if (layout_.has_group(KvGroup::Sliding)) {  // blocks wholly before the first key the step's queries see
    BlockTable& t = s->tables[size_t(KvGroup::Sliding)];
    const int first = int(layout_.first_visible_position(p0) / bs);
    for (int i = t.first_live; i < first; ++i) {
      drop_ref(t.blocks[size_t(i)], reserved);
      t.blocks[size_t(i)] = kNoBlock;
    }
    t.first_live = std::max(t.first_live, first);
  }
  if (n == 0) return std::vector<BlockCopy>{};

  int64_t needed = 0;
  bool cow[kNumKvGroups] = {false, false};
  for (KvGroup g : kGroups) {
    if (!layout_.has_group(g)) continue;
    const BlockTable& t = s->tables[size_t(g)];
    cow[size_t(g)] = p0 % bs != 0 && pool_.refcount(t.blocks.back()) > 1;
    needed += cow[size_t(g)] + layout_.blocks_for_positions(p0 + n) - int64_t(t.blocks.size());
  }
  // A Reserve sequence draws on what it is owed (referenced + owed <= num_blocks keeps that many
  // unreferenced); an Optimistic one only on the spare blocks.
  const int64_t avail = reserved ? pool_.num_free() + pool_.num_cached() : spare_blocks();
  if (needed > avail)
    return Error("kv cache full: sequence {} needs {} blocks for positions [{}, {}), {} available", id, needed, p0,
                 p0 + n, avail);

  std::vector<BlockCopy> copies;
  for (KvGroup g : kGroups) {
    if (!layout_.has_group(g)) continue;
    BlockTable& t = s->tables[size_t(g)];
    if (cow[size_t(g)]) {
      GPTOSS_ASSIGN(BlockId dst, alloc(g, reserved));
      copies.push_back({g, t.blocks.back(), dst, int(p0 % bs)});
      drop_ref(t.blocks.back(), reserved);
      t.blocks.back() = dst;
    }
    const size_t last_before = t.blocks.empty() ? 0 : t.blocks.size() - 1;
    while (int64_t(t.blocks.size()) < layout_.blocks_for_positions(p0 + n)) {
      GPTOSS_ASSIGN(BlockId b, alloc(g, reserved));
      t.blocks.push_back(b);
    }
    // Only the last block may be partial; the ones touched here are held by this sequence alone.
    if (g == KvGroup::Full)
      for (size_t i = last_before; i < t.blocks.size(); ++i)
        set_partial(t.blocks[i], i + 1 == t.blocks.size() && (p0 + n) % bs != 0);
  }
  s->positions = p0 + n;
  return copies;
}

Result<std::vector<BlockCopy>> KvBlockManager::append(SeqId id, std::span<const int32_t> tokens) {
  Sequence* s = find(id);
  if (!s) return Error("kv cache: append: no sequence {}", id);
  if (s->preempted) return Error("kv cache: append: sequence {} is preempted (resume it first)", id);
  if (s->positions != int64_t(s->tokens.size()))
    return Error("kv cache: append: sequence {} has {} tokens without slots (extend over them first)", id,
                 int64_t(s->tokens.size()) - s->positions);
  if (tokens.size() > size_t(layout_.max_chunk))
    return Error("kv cache: append: {} tokens, expected at most {} (the chunk)", tokens.size(), layout_.max_chunk);
  s->tokens.insert(s->tokens.end(), tokens.begin(), tokens.end());
  auto copies = extend(id, int(tokens.size()));
  if (!copies.ok()) s->tokens.resize(s->tokens.size() - tokens.size());
  return copies;
}

Status KvBlockManager::commit(SeqId id) {
  Sequence* s = find(id);
  if (!s) return Error("kv cache: commit: no sequence {}", id);
  const int64_t bs = layout_.block_size;
  s->computed = s->positions;
  const int64_t full = s->computed / bs;
  while (int64_t(s->hashes.size()) < full) {
    const size_t i = s->hashes.size();
    s->hashes.push_back(kv_block_hash(i ? s->hashes.back() : BlockHash{},
                                      std::span<const int32_t>(s->tokens).subspan(i * size_t(bs), size_t(bs))));
  }
  for (int64_t i = s->published; i < full; ++i)
    for (KvGroup g : kGroups) {
      const std::vector<BlockId>& blocks = s->tables[size_t(g)].blocks;
      if (size_t(i) < blocks.size() && blocks[size_t(i)] != kNoBlock)
        pool_.publish(blocks[size_t(i)], g, s->hashes[size_t(i)]);
    }
  s->published = std::max(s->published, full);
  return Status::ok_status();
}

// --- fork, preemption, release ------------------------------------------------------------------

Result<SeqId> KvBlockManager::fork(SeqId parent) {
  const Sequence* p = find(parent);
  if (!p) return Error("kv cache: fork: no sequence {}", parent);
  if (p->preempted) return Error("kv cache: fork: sequence {} is preempted", parent);
  if (p->computed != p->positions)
    return Error("kv cache: fork: sequence {} has {} uncommitted positions", parent, p->positions - p->computed);
  const bool reserved = p->mode == KvAdmit::Reserve;
  int64_t cost = p->worst;
  for (KvGroup g : kGroups)
    for (BlockId b : p->tables[size_t(g)].blocks)
      if (b != kNoBlock) cost += take_cost(b, reserved);
  if (cost > spare_blocks())
    return Error("kv cache full: forking sequence {} needs {} blocks, {} spare", parent, cost, spare_blocks());
  Sequence c = *p;
  for (KvGroup g : kGroups)
    for (BlockId b : c.tables[size_t(g)].blocks)
      if (b != kNoBlock) take_ref(b, reserved);
  worst_total_ += c.worst;
  const SeqId id = next_id_++;
  seqs_.emplace(id, std::move(c));
  return id;
}

Status KvBlockManager::preempt(SeqId id) {
  Sequence* s = find(id);
  if (!s) return Error("kv cache: preempt: no sequence {}", id);
  if (s->preempted) return Error("kv cache: preempt: sequence {} is already preempted", id);
  drop_all(*s);
  s->preempted = true;
  return Status::ok_status();
}

Status KvBlockManager::release(SeqId id) {
  Sequence* s = find(id);
  if (!s) return Error("kv cache: release: no sequence {}", id);
  drop_all(*s);
  seqs_.erase(id);
  return Status::ok_status();
}

}  // namespace gptoss
