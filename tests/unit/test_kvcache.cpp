// The paged KV cache's bookkeeping (src/kvcache): layout, pool, tables, copy-on-write, the sliding
// window, the prefix cache, admission, preemption, and a randomized stress test that checks every
// invariant and a simulated cache content after each operation.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <vector>

#include "kvcache/block_manager.h"

namespace gptoss {

// Reaches into the private state so the tests can show that check_invariants catches corruption.
struct BlockPoolTestAccess {
  static void bump_refcount(BlockPool& p, BlockId b) { ++p.refcount_[size_t(b)]; }
};
struct KvBlockManagerTestAccess {
  static BlockPool& pool(KvBlockManager& m) { return m.pool_; }
  static void bump_owed(KvBlockManager& m) { ++m.owed_parts_; }
  static void swap_first_blocks(KvBlockManager& m, SeqId a, SeqId b) {
    std::swap(m.seqs_.at(a).tables[0].blocks[0], m.seqs_.at(b).tables[0].blocks[0]);
  }
};

namespace {

// layers: 0 sliding, 1 full, 2 sliding, 3 full (as gpt-oss, even layers slide).
ModelConfig small_config(int layers = 4, int window = 8) {
  ModelConfig c;
  c.num_hidden_layers = layers;
  c.num_key_value_heads = 2;
  c.head_dim = 4;
  c.sliding_window = window;
  for (int l = 0; l < layers; ++l) c.layer_is_sliding.push_back(l % 2 == 0);
  return c;
}

KvLayout small_layout(int block_size = 4, int window = 8, int chunk = 4, int layers = 4) {
  auto L = KvLayout::make(small_config(layers, window), block_size, 2, chunk);
  EXPECT_TRUE(L.ok()) << L.status().message();
  return *L;
}

std::vector<int32_t> iota_tokens(int n, int32_t first = 100) {
  std::vector<int32_t> t;
  for (int i = 0; i < n; ++i) t.push_back(first + i);
  return t;
}

#define EXPECT_INVARIANTS(m)                \
  do {                                      \
    Status st_ = (m).check_invariants();    \
    EXPECT_TRUE(st_.ok()) << st_.message(); \
  } while (0)

// Admits, extends over the prompt in chunks and commits each chunk.
SeqId prefill(KvBlockManager& m, const std::vector<int32_t>& prompt, int64_t max_new = 0,
              KvAdmit mode = KvAdmit::Optimistic) {
  auto id = m.admit(prompt, max_new, mode);
  EXPECT_TRUE(id.ok()) << id.status().message();
  while (m.num_positions(*id) < m.num_tokens(*id)) {
    const int n = int(std::min<int64_t>(m.layout().max_chunk, m.num_tokens(*id) - m.num_positions(*id)));
    auto c = m.extend(*id, n);
    EXPECT_TRUE(c.ok()) << c.status().message();
    EXPECT_TRUE(m.commit(*id).ok());
  }
  return *id;
}

TEST(KvLayout, BlockBytesGroupsAndLimits) {
  // gpt-oss-20b: 24 layers (12 per group), 8 kv heads of 64, bf16, blocks of 16, chunks of 128.
  ModelConfig c = small_config(24, 128);
  c.num_key_value_heads = 8;
  c.head_dim = 64;
  auto L = KvLayout::make(c, 16, 2, 128);
  ASSERT_TRUE(L.ok()) << L.status().message();
  EXPECT_EQ(L->layers_per_block, 12);
  EXPECT_EQ(L->bytes_per_block, 16 * 12 * 2 * 8 * 64 * 2);
  EXPECT_EQ(L->layer_group[3], KvGroup::Full);
  EXPECT_EQ(L->layer_slot[3], 1);
  EXPECT_EQ(L->layer_slot[4], 2);
  EXPECT_EQ(L->max_blocks_held(KvGroup::Full, 1000), 63);
  // 127 + 128 positions at any offset meet at most 17 blocks of 16.
  EXPECT_EQ(L->max_blocks_held(KvGroup::Sliding, 100000), 17);
  EXPECT_EQ(L->max_blocks_held(KvGroup::Sliding, 40), 3);
  EXPECT_EQ(*L->blocks_for_bytes(int64_t(L->bytes_per_block) * 100 + 5), 100);
  EXPECT_FALSE(L->blocks_for_bytes(L->bytes_per_block * 8).ok());  // not even one chunk (8 + 8 blocks)
  EXPECT_FALSE(L->blocks_for_bytes(-1).ok());

  auto m = KvBlockManager::create(*L, L->bytes_per_block * 40);
  ASSERT_TRUE(m.ok()) << m.status().message();
  EXPECT_EQ(m->pool().num_blocks(), 40);
  EXPECT_EQ(m->spare_blocks(), 40);
  EXPECT_FALSE(KvBlockManager::create(*L, L->bytes_per_block * 15).ok());

  EXPECT_FALSE(KvLayout::make(c, 0, 2, 128).ok());
  EXPECT_FALSE(KvLayout::make(c, 16, 0, 128).ok());
  EXPECT_FALSE(KvLayout::make(c, 16, 2, 0).ok());
  // Unequal groups (a 3-layer truncation): blocks sized for the larger one.
  auto L3 = KvLayout::make(small_config(3, 8), 4, 4, 4);
  ASSERT_TRUE(L3.ok());
  EXPECT_EQ(L3->layers_per_block, 2);
  EXPECT_EQ(L3->group_layers[size_t(KvGroup::Full)], 1);
  EXPECT_EQ(L3->bytes_per_block, 4 * 2 * 2 * 2 * 4 * 4);
}

TEST(BlockPool, AllocateUntilEmptyThenErrorAndReuse) {
  BlockPool p(3);
  std::vector<BlockId> got;
  for (int i = 0; i < 3; ++i) {
    auto b = p.allocate();
    ASSERT_TRUE(b.ok());
    got.push_back(*b);
  }
  EXPECT_EQ(got, (std::vector<BlockId>{0, 1, 2}));
  auto none = p.allocate();
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.status().message().find("all 3 blocks"), std::string::npos);
  p.ref(1);
  p.unref(1);
  EXPECT_EQ(p.refcount(1), 1);
  p.unref(1);
  EXPECT_EQ(p.num_free(), 1);
  EXPECT_EQ(*p.allocate(), 1);
  EXPECT_TRUE(p.check().ok());
}

TEST(BlockPool, CachedBlocksAreEvictedLeastRecentlyUsedFirst) {
  BlockPool p(3);
  const BlockHash h0 = kv_block_hash({}, iota_tokens(4)), h1 = kv_block_hash(h0, iota_tokens(4, 7));
  const BlockId a = *p.allocate(), b = *p.allocate(), c = *p.allocate();
  p.publish(a, KvGroup::Full, h0);
  p.publish(b, KvGroup::Full, h1);
  p.publish(c, KvGroup::Full, h0);  // h0 is already cached by a: c stays unhashed
  EXPECT_FALSE(p.is_hashed(c));
  EXPECT_EQ(p.lookup(KvGroup::Full, h0), a);
  EXPECT_EQ(p.lookup(KvGroup::Sliding, h0), kNoBlock);  // one map per group
  p.unref(b);
  p.unref(a);  // LRU order: b, a
  p.unref(c);
  EXPECT_EQ(p.num_cached(), 2);
  EXPECT_EQ(p.num_free(), 1);
  EXPECT_TRUE(p.check().ok());
  EXPECT_EQ(*p.allocate(), c);  // the free list first
  p.ref(b);                     // a hit: b leaves the LRU list, then comes back as most recent
  p.unref(b);
  EXPECT_EQ(*p.allocate(), a);  // a is now the least recently used
  EXPECT_EQ(p.lookup(KvGroup::Full, h0), kNoBlock);
  EXPECT_EQ(p.lookup(KvGroup::Full, h1), b);
  EXPECT_EQ(*p.allocate(), b);
  EXPECT_EQ(p.lookup(KvGroup::Full, h1), kNoBlock);
  EXPECT_FALSE(p.allocate().ok());
  EXPECT_TRUE(p.check().ok());
}

TEST(BlockPool, CheckCatchesABrokenRefcount) {
  BlockPool p(4);
  const BlockId a = *p.allocate();
  p.unref(a);
  ASSERT_TRUE(p.check().ok());
  BlockPoolTestAccess::bump_refcount(p, a);  // free but referenced
  EXPECT_FALSE(p.check().ok());
}

TEST(KvBlockManager, TablesGrowByBlocksInBothGroups) {
  KvBlockManager m(small_layout(), 32);
  auto id = m.admit(iota_tokens(10), 0, KvAdmit::Optimistic);
  ASSERT_TRUE(id.ok());
  EXPECT_EQ(m.num_positions(*id), 0);
  EXPECT_EQ(m.num_tokens(*id), 10);
  ASSERT_TRUE(m.extend(*id, 3).ok());
  EXPECT_EQ(m.table(*id, KvGroup::Full)->blocks.size(), 1u);
  EXPECT_EQ(m.table(*id, KvGroup::Sliding)->blocks.size(), 1u);
  ASSERT_TRUE(m.extend(*id, 4).ok());  // positions 3..6: one more block each
  EXPECT_EQ(m.table(*id, KvGroup::Full)->blocks.size(), 2u);
  EXPECT_EQ(m.pool().num_referenced(), 4);
  EXPECT_FALSE(m.extend(*id, 4).ok());               // 7 + 4 > 10 tokens
  EXPECT_FALSE(m.extend(*id, 5).ok());               // more than a chunk
  EXPECT_FALSE(m.append(*id, iota_tokens(1)).ok());  // 3 prompt tokens have no slots yet
  ASSERT_TRUE(m.extend(*id, 3).ok());
  ASSERT_TRUE(m.append(*id, iota_tokens(2, 5)).ok());
  EXPECT_EQ(m.num_positions(*id), 12);
  EXPECT_EQ(m.tokens(*id)[11], 6);
  EXPECT_INVARIANTS(m);
  ASSERT_TRUE(m.release(*id).ok());
  EXPECT_EQ(m.pool().num_referenced(), 0);
  EXPECT_FALSE(m.contains(*id));
  EXPECT_FALSE(m.extend(*id, 1).ok());
  EXPECT_EQ(m.table(*id, KvGroup::Full), nullptr);
  EXPECT_FALSE(m.admit({}, 4, KvAdmit::Optimistic).ok());
  EXPECT_INVARIANTS(m);
}

TEST(KvBlockManager, ForkSharesBlocksAndCopiesTheSharedPartialBlockOnWrite) {
  KvBlockManager m(small_layout(4, 64), 32);  // a window of 64: nothing slides out here
  const SeqId p = prefill(m, iota_tokens(6));
  auto c = m.fork(p);
  ASSERT_TRUE(c.ok()) << c.status().message();
  const BlockTable pf = *m.table(p, KvGroup::Full);
  EXPECT_EQ(m.table(*c, KvGroup::Full)->blocks, pf.blocks);
  EXPECT_EQ(m.pool().refcount(pf.blocks[0]), 2);
  EXPECT_EQ(m.pool().refcount(pf.blocks[1]), 2);
  EXPECT_EQ(m.pool().num_referenced(), 4);
  EXPECT_INVARIANTS(m);

  // The child writes position 6 into the shared block 1 (rows 0..1 valid): it gets its own copy.
  auto copies = m.append(*c, std::vector<int32_t>{7});
  ASSERT_TRUE(copies.ok());
  ASSERT_EQ(copies->size(), 2u);  // one per group
  const BlockCopy& cf = (*copies)[0].group == KvGroup::Full ? (*copies)[0] : (*copies)[1];
  EXPECT_EQ(cf.src, pf.blocks[1]);
  EXPECT_EQ(cf.rows, 2);
  EXPECT_EQ(m.table(*c, KvGroup::Full)->blocks[1], cf.dst);
  EXPECT_EQ(m.table(*c, KvGroup::Full)->blocks[0], pf.blocks[0]);  // full blocks stay shared
  EXPECT_EQ(m.pool().refcount(pf.blocks[1]), 1);
  // The parent now holds its partial block alone: it writes in place.
  auto pc = m.append(p, std::vector<int32_t>{8});
  ASSERT_TRUE(pc.ok());
  EXPECT_TRUE(pc->empty());
  EXPECT_INVARIANTS(m);
  // An uncommitted parent cannot be forked (its rows are not written yet).
  EXPECT_FALSE(m.fork(p).ok());
  ASSERT_TRUE(m.commit(p).ok());
  EXPECT_TRUE(m.fork(p).ok());
  EXPECT_INVARIANTS(m);
}

TEST(KvBlockManager, SlidingBlocksOutOfTheWindowAreReleased) {
  KvBlockManager m(small_layout(4, 8, 4), 64);  // window 8: the query at p sees p-7..p
  const SeqId id = prefill(m, iota_tokens(16));
  // The chunk at p0 = 12 sees keys from position 5 on: block 0 (positions 0..3) was released.
  EXPECT_EQ(m.table(id, KvGroup::Sliding)->first_live, 1);
  EXPECT_EQ(m.table(id, KvGroup::Sliding)->blocks[0], kNoBlock);
  EXPECT_EQ(m.table(id, KvGroup::Full)->blocks.size(), 4u);
  ASSERT_TRUE(m.append(id, iota_tokens(4, 50)).ok());  // p0 = 16 sees from 9: block 1 (4..7) goes
  EXPECT_EQ(m.table(id, KvGroup::Sliding)->first_live, 2);
  EXPECT_EQ(m.pool().num_referenced(), 5 + 3);  // full 0..4, sliding 2..4
  // Released blocks were committed: they stay cached, not free.
  EXPECT_EQ(m.pool().num_cached(), 2);
  for (int i = 0; i < 40; ++i) ASSERT_TRUE(m.append(id, iota_tokens(1, i)).ok());
  EXPECT_LE(int64_t(m.table(id, KvGroup::Sliding)->blocks.size()) - m.table(id, KvGroup::Sliding)->first_live,
            m.layout().max_blocks_held(KvGroup::Sliding, 60));
  EXPECT_INVARIANTS(m);
}

TEST(KvBlockManager, PrefixCacheHitsSharesAndMisses) {
  KvBlockManager m(small_layout(4, 8, 4), 64);
  const std::vector<int32_t> system = iota_tokens(20);
  const SeqId a = prefill(m, system);
  std::vector<int32_t> prompt = system;
  prompt.push_back(999);
  auto b = m.admit(prompt, 0, KvAdmit::Optimistic);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(m.num_positions(*b), 20);  // 5 full blocks; the sliding window needs blocks 3, 4 (from 13)
  EXPECT_EQ(m.table(*b, KvGroup::Full)->blocks, m.table(a, KvGroup::Full)->blocks);
  EXPECT_EQ(m.table(*b, KvGroup::Sliding)->first_live, 3);
  EXPECT_EQ(m.pool().refcount(m.table(a, KvGroup::Full)->blocks[4]), 2);
  EXPECT_INVARIANTS(m);

  // A prompt that equals the cached blocks exactly keeps its last block to compute (for its logits).
  auto exact = m.admit(system, 0, KvAdmit::Optimistic);
  ASSERT_TRUE(exact.ok());
  EXPECT_EQ(m.num_positions(*exact), 16);
  // A different first token misses everything; a different token in block 2 hits blocks 0, 1.
  std::vector<int32_t> other = prompt;
  other[0] = 1;
  EXPECT_EQ(m.num_positions(*m.admit(other, 0, KvAdmit::Optimistic)), 0);
  other = prompt;
  other[9] = 1;
  EXPECT_EQ(m.num_positions(*m.admit(other, 0, KvAdmit::Optimistic)), 8);
  // Uncommitted positions are never shared.
  const SeqId u = *m.admit(iota_tokens(9, 500), 0, KvAdmit::Optimistic);
  ASSERT_TRUE(m.extend(u, 4).ok());
  ASSERT_TRUE(m.extend(u, 4).ok());
  EXPECT_EQ(m.num_positions(*m.admit(iota_tokens(9, 500), 0, KvAdmit::Optimistic)), 0);
  ASSERT_TRUE(m.commit(u).ok());
  EXPECT_EQ(m.num_positions(*m.admit(iota_tokens(9, 500), 0, KvAdmit::Optimistic)), 8);
  EXPECT_INVARIANTS(m);
}

TEST(KvBlockManager, PrefixCacheSurvivesReleaseUntilEvicted) {
  // 10 full + 10 sliding blocks' worth of pool: a's 5 + 5, then pressure.
  KvBlockManager m(small_layout(4, 8, 4), 16);
  const std::vector<int32_t> system = iota_tokens(20);
  ASSERT_TRUE(m.release(prefill(m, system)).ok());
  EXPECT_EQ(m.pool().num_referenced(), 0);
  EXPECT_EQ(m.pool().num_cached(), 10);  // full 0..4, sliding 0..4
  std::vector<int32_t> prompt = system;
  prompt.push_back(7);
  const SeqId b = *m.admit(prompt, 0, KvAdmit::Optimistic);
  EXPECT_EQ(m.num_positions(b), 20);
  ASSERT_TRUE(m.release(b).ok());
  // Pressure: 8 fresh blocks use the 6 free ones and evict the 2 least recently used cached ones,
  // sliding 0 and 1 (released first, when a moved on); x's own sliding block 0 joins the cache.
  prefill(m, iota_tokens(16, 900));
  EXPECT_EQ(m.pool().num_cached(), 10 - 2 + 1);
  // 13 tokens: k = 3 needs sliding 1, 2 -> 1 is gone; shorter runs need sliding 0: a miss.
  EXPECT_EQ(m.num_positions(*m.admit(iota_tokens(13), 0, KvAdmit::Optimistic)), 0);
  // 17 tokens: k = 4 needs sliding 2, 3 only: still a hit with full 0..3.
  EXPECT_EQ(m.num_positions(*m.admit(iota_tokens(17), 0, KvAdmit::Optimistic)), 16);
  EXPECT_INVARIANTS(m);
}

TEST(KvBlockManager, SlidingOnlyModelKeepsOneTable) {
  KvBlockManager m(small_layout(4, 8, 4, 1), 16);  // one layer: layer 0 slides
  ASSERT_FALSE(m.layout().has_group(KvGroup::Full));
  ASSERT_TRUE(m.release(prefill(m, iota_tokens(20))).ok());
  std::vector<int32_t> prompt = iota_tokens(20);
  prompt.push_back(3);
  const SeqId b = *m.admit(prompt, 0, KvAdmit::Optimistic);
  EXPECT_EQ(m.num_positions(b), 20);  // sliding blocks 3 and 4 are all the query at 20 needs
  EXPECT_TRUE(m.table(b, KvGroup::Full)->blocks.empty());
  EXPECT_EQ(m.table(b, KvGroup::Sliding)->first_live, 3);
  EXPECT_EQ(m.pool().num_referenced(), 2);
  EXPECT_INVARIANTS(m);
}

TEST(KvBlockManager, ReserveGuaranteesGrowthOptimisticFailsCleanly) {
  KvBlockManager m(small_layout(4, 8, 4), 20);
  // 4 + 30 positions: 9 full blocks + min(9, (7 + 4 + 2) / 4 + 1 = 4) sliding = 13 reserved.
  ASSERT_TRUE(m.can_admit(iota_tokens(4), 30, KvAdmit::Reserve));
  EXPECT_TRUE(m.can_admit(iota_tokens(4), 60, KvAdmit::Reserve));  // 16 + 4: all 20 blocks
  EXPECT_FALSE(m.can_admit(iota_tokens(4), 61, KvAdmit::Reserve));
  EXPECT_FALSE(m.admit(iota_tokens(4), 61, KvAdmit::Reserve).ok());
  EXPECT_EQ(m.spare_blocks(), 20);
  const SeqId r = prefill(m, iota_tokens(4), 30, KvAdmit::Reserve);
  EXPECT_EQ(m.spare_blocks(), 20 - 13);
  EXPECT_FALSE(m.can_admit(iota_tokens(4, 50), 20, KvAdmit::Reserve));  // 6 + 4 = 10 > 7
  // Optimistic sequences take the spare blocks, then fail without changing anything.
  const SeqId o = prefill(m, iota_tokens(12, 300));  // 3 + 3 blocks
  EXPECT_EQ(m.spare_blocks(), 1);
  // Positions 12..15 need a full and a sliding block; sliding block 0 leaves the window first: 2 spare.
  ASSERT_TRUE(m.append(o, iota_tokens(4, 5)).ok());
  EXPECT_EQ(m.spare_blocks(), 0);
  auto full = m.append(o, iota_tokens(1, 9));  // position 16: releases sliding block 1, needs 2
  ASSERT_FALSE(full.ok());
  EXPECT_NE(full.status().message().find("kv cache full"), std::string::npos) << full.status().message();
  EXPECT_EQ(m.num_positions(o), 16);
  EXPECT_EQ(m.num_tokens(o), 16);
  EXPECT_FALSE(m.can_admit(iota_tokens(4, 70), 0, KvAdmit::Optimistic));
  EXPECT_INVARIANTS(m);
  // The reserved sequence still grows to its limit, one token at a time, and not one position further.
  for (int32_t t = 0; t < 30; ++t) {
    auto c = m.append(r, std::vector<int32_t>{t});
    ASSERT_TRUE(c.ok()) << "token " << t << ": " << c.status().message();
    ASSERT_TRUE(m.commit(r).ok());
  }
  EXPECT_FALSE(m.append(r, std::vector<int32_t>{1}).ok());
  EXPECT_INVARIANTS(m);
  // Preempting the optimistic sequence frees its blocks; releasing the reserved one frees its reservation.
  ASSERT_TRUE(m.preempt(o).ok());
  ASSERT_TRUE(m.release(r).ok());
  EXPECT_EQ(m.spare_blocks(), 20);
  EXPECT_INVARIANTS(m);
}

TEST(KvBlockManager, ReservedPrefixSharingCostsLessThanItsWorstCase) {
  KvBlockManager m(small_layout(4, 8, 4), 40);
  std::vector<int32_t> a = iota_tokens(21), b = iota_tokens(21);
  b[20] = 7;
  // 24 positions: 6 full blocks + min(6, 4) sliding = 10 reserved each.
  const int64_t spare0 = m.spare_blocks();
  prefill(m, a, 3, KvAdmit::Reserve);
  EXPECT_EQ(spare0 - m.spare_blocks(), 10);
  const int64_t spare1 = m.spare_blocks();
  auto sb = m.admit(b, 3, KvAdmit::Reserve);
  ASSERT_TRUE(sb.ok());
  ASSERT_EQ(m.num_positions(*sb), 20);
  // 10, less the 5 full blocks it shares (never rewritten nor released early), plus the 2 sliding
  // blocks a held alone and now shares (a shared sliding block it releases frees nothing).
  EXPECT_EQ(spare1 - m.spare_blocks(), 10 - 5 + 2);
  ASSERT_TRUE(m.extend(*sb, 1).ok());
  ASSERT_TRUE(m.commit(*sb).ok());
  ASSERT_TRUE(m.append(*sb, iota_tokens(3, 60)).ok());
  EXPECT_FALSE(m.append(*sb, iota_tokens(1)).ok());  // past its reservation
  EXPECT_INVARIANTS(m);
}

TEST(KvBlockManager, ReservedForkKeepsABlockForTheCopy) {
  ModelConfig c = small_config(2);
  c.layer_is_sliding = {false, false};  // full layers only: the copy is the only extra block
  auto L = KvLayout::make(c, 4, 2, 4);
  ASSERT_TRUE(L.ok());
  KvBlockManager m(*L, 10);
  const SeqId r = prefill(m, iota_tokens(6), 2, KvAdmit::Reserve);  // blocks 0 and 1 (rows 0..1)
  auto child = m.fork(r);
  ASSERT_TRUE(child.ok());
  // 2 blocks referenced; each holder may have to copy the shared partial block 1: 2 owed.
  EXPECT_EQ(m.spare_blocks(), 10 - 2 - 2);
  while (m.can_admit(iota_tokens(4, 50), 0, KvAdmit::Optimistic)) prefill(m, iota_tokens(4, 50));
  EXPECT_EQ(m.spare_blocks(), 0);
  for (SeqId id : {r, *child})
    for (int32_t t = 0; t < 2; ++t) {
      auto copies = m.append(id, std::vector<int32_t>{t});
      ASSERT_TRUE(copies.ok()) << copies.status().message();
      ASSERT_TRUE(m.commit(id).ok());
    }
  EXPECT_INVARIANTS(m);
}

TEST(KvBlockManager, PreemptFreesBlocksAndResumeRecomputesFromTokens) {
  KvBlockManager m(small_layout(4, 8, 4), 32);
  const SeqId s = prefill(m, iota_tokens(10));
  ASSERT_TRUE(m.append(s, iota_tokens(3, 40)).ok());
  ASSERT_TRUE(m.commit(s).ok());
  ASSERT_GT(m.pool().num_referenced(), 0);
  ASSERT_TRUE(m.preempt(s).ok());
  EXPECT_TRUE(m.is_preempted(s));
  EXPECT_EQ(m.pool().num_referenced(), 0);
  EXPECT_EQ(m.num_positions(s), 0);
  EXPECT_EQ(m.num_tokens(s), 13);
  EXPECT_FALSE(m.extend(s, 1).ok());
  EXPECT_FALSE(m.preempt(s).ok());
  EXPECT_FALSE(m.fork(s).ok());
  EXPECT_INVARIANTS(m);
  // Its own blocks are still cached: full 0..2 and the sliding blocks 1, 2 the query at 12 sees.
  auto cached = m.resume(s);
  ASSERT_TRUE(cached.ok()) << cached.status().message();
  EXPECT_EQ(*cached, 12);
  EXPECT_FALSE(m.is_preempted(s));
  EXPECT_FALSE(m.resume(s).ok());
  ASSERT_TRUE(m.extend(s, 1).ok());
  EXPECT_EQ(m.tokens(s).back(), 42);
  EXPECT_INVARIANTS(m);
}

TEST(KvBlockManager, CheckInvariantsCatchesCorruption) {
  {
    KvBlockManager m(small_layout(), 32);
    const SeqId a = prefill(m, iota_tokens(8));
    EXPECT_INVARIANTS(m);
    BlockPoolTestAccess::bump_refcount(KvBlockManagerTestAccess::pool(m), m.table(a, KvGroup::Full)->blocks[0]);
    EXPECT_FALSE(m.check_invariants().ok());
  }
  {
    KvBlockManager m(small_layout(), 32);
    prefill(m, iota_tokens(8), 4, KvAdmit::Reserve);
    KvBlockManagerTestAccess::bump_owed(m);
    EXPECT_FALSE(m.check_invariants().ok());
  }
  {
    KvBlockManager m(small_layout(), 32);
    const SeqId a = prefill(m, iota_tokens(8)), b = prefill(m, iota_tokens(8, 7));
    KvBlockManagerTestAccess::swap_first_blocks(m, a, b);  // counts agree; the cached contents do not
    const Status st = m.check_invariants();
    EXPECT_FALSE(st.ok());
    EXPECT_NE(st.message().find("other tokens"), std::string::npos) << st.message();
  }
}

// Random operations against one manager, checking after each one every invariant, the tokens, and a
// simulated cache: rows[b * block_size + r] is the token whose KV row r of block b holds, written as
// a backend would (copies first, then the new rows). Every sequence must read its own tokens through
// its tables: that catches a missing copy-on-write, a wrong prefix hit, a block reused while held.
TEST(KvBlockManager, RandomizedStressKeepsInvariantsAndContent) {
  for (uint32_t seed : {1u, 2u, 3u}) {
    SCOPED_TRACE(seed);
    std::mt19937 rng(seed);
    auto rnd = [&](int n) { return int(rng() % uint32_t(n)); };
    const KvLayout L = small_layout(4, 8, 6);  // blocks of 4, window 8, chunks of 6
    const int bs = L.block_size, num_blocks = 32;
    KvBlockManager m(L, num_blocks);
    std::vector<int32_t> rows(size_t(num_blocks * bs), -1);
    struct Shadow {
      std::vector<int32_t> tokens;
      KvAdmit mode;
      int64_t max_positions;
    };
    std::map<SeqId, Shadow> seqs;
    std::vector<std::vector<int32_t>> systems;
    for (int n : {9, 17, 30}) {
      systems.emplace_back();
      for (int i = 0; i < n; ++i) systems.back().push_back(rnd(3));
    }
    int hits = 0, cows = 0, full_errors = 0, preempts = 0, resumes = 0, forks = 0;

    auto pick = [&](auto pred) -> SeqId {
      std::vector<SeqId> c;
      for (auto& [id, s] : seqs)
        if (pred(id, s)) c.push_back(id);
      return c.empty() ? -1 : c[size_t(rnd(int(c.size())))];
    };
    auto write = [&](SeqId id, int64_t p0, const std::vector<BlockCopy>& copies) {
      for (const BlockCopy& c : copies) {
        ++cows;
        for (int r = 0; r < c.rows; ++r) rows[size_t(c.dst * bs + r)] = rows[size_t(c.src * bs + r)];
      }
      for (KvGroup g : {KvGroup::Full, KvGroup::Sliding})
        for (int64_t p = p0; p < m.num_positions(id); ++p)
          rows[size_t(m.table(id, g)->blocks[size_t(p / bs)] * bs + p % bs)] = m.tokens(id)[size_t(p)];
    };
    auto grow = [&](SeqId id, bool new_tokens) {
      Shadow& s = seqs.at(id);
      const int64_t p0 = m.num_positions(id);
      Result<std::vector<BlockCopy>> c = Status::error("unset");
      if (new_tokens) {
        std::vector<int32_t> t(size_t(1 + rnd(3)));
        for (auto& x : t) x = rnd(3);
        const bool within = int64_t(s.tokens.size() + t.size()) <= s.max_positions;
        c = m.append(id, t);
        if (c.ok()) s.tokens.insert(s.tokens.end(), t.begin(), t.end());
        if (s.mode == KvAdmit::Reserve) {
          EXPECT_EQ(c.ok(), within) << c.status().message();
        }
      } else {
        const int64_t pending = int64_t(s.tokens.size()) - p0;
        c = m.extend(id, int(1 + rnd(int(std::min<int64_t>(pending, L.max_chunk)))));
        if (s.mode == KvAdmit::Reserve) {
          EXPECT_TRUE(c.ok()) << c.status().message();
        }
      }
      if (!c.ok()) {
        full_errors += c.status().message().find("kv cache full") != std::string::npos;
        return;
      }
      write(id, p0, *c);
      if (rnd(10) < 7) {
        ASSERT_TRUE(m.commit(id).ok());
      }
    };

    for (int op = 0; op < 2000; ++op) {
      const int kind = seqs.size() > 10 ? 9 : rnd(10);
      if (kind <= 1) {  // admit
        std::vector<int32_t> prompt;
        if (rnd(4) != 0) {
          const auto& sys = systems[size_t(rnd(3))];
          prompt.assign(sys.begin(), sys.begin() + 1 + rnd(int(sys.size())));
        }
        for (int i = rnd(8) + (prompt.empty() ? 1 : 0); i > 0; --i) prompt.push_back(rnd(3));
        const KvAdmit mode = rnd(3) == 0 ? KvAdmit::Reserve : KvAdmit::Optimistic;
        const int64_t max_new = rnd(20);
        const bool can = m.can_admit(prompt, max_new, mode);
        auto id = m.admit(prompt, max_new, mode);
        EXPECT_EQ(can, id.ok()) << (id.ok() ? "" : id.status().message());
        if (id.ok()) {
          hits += m.num_positions(*id) > 0;
          seqs[*id] = {prompt, mode, mode == KvAdmit::Reserve ? int64_t(prompt.size()) + max_new : 0};
        }
      } else if (kind <= 3) {  // prefill chunk (or recompute after resume)
        const SeqId id = pick([&](SeqId i, const Shadow& s) {
          return !m.is_preempted(i) && m.num_positions(i) < int64_t(s.tokens.size());
        });
        if (id >= 0) grow(id, false);
      } else if (kind <= 5) {  // decode
        const SeqId id = pick([&](SeqId i, const Shadow& s) {
          return !m.is_preempted(i) && m.num_positions(i) == int64_t(s.tokens.size());
        });
        if (id >= 0) grow(id, true);
      } else if (kind == 6) {  // fork
        const SeqId id = pick([&](SeqId i, const Shadow&) { return !m.is_preempted(i); });
        if (id < 0) continue;
        auto c = m.fork(id);
        if (c.ok()) {
          ++forks;
          seqs[*c] = seqs.at(id);
        }
      } else if (kind == 7) {  // preempt or resume
        const SeqId id = pick([&](SeqId, const Shadow&) { return true; });
        if (id < 0) continue;
        if (m.is_preempted(id)) {
          auto r = m.resume(id);
          resumes += r.ok();
        } else {
          ASSERT_TRUE(m.preempt(id).ok());
          ++preempts;
        }
      } else {  // release
        const SeqId id = pick([&](SeqId, const Shadow&) { return true; });
        if (id < 0) continue;
        ASSERT_TRUE(m.release(id).ok());
        seqs.erase(id);
      }

      const Status st = m.check_invariants();
      ASSERT_TRUE(st.ok()) << "op " << op << ": " << st.message();
      ASSERT_EQ(m.num_sequences(), seqs.size());
      for (const auto& [id, s] : seqs) {
        ASSERT_TRUE(std::equal(s.tokens.begin(), s.tokens.end(), m.tokens(id).begin(), m.tokens(id).end()));
        for (KvGroup g : {KvGroup::Full, KvGroup::Sliding}) {
          const BlockTable& t = *m.table(id, g);
          for (int64_t p = int64_t(t.first_live) * bs; p < m.num_positions(id); ++p)
            ASSERT_EQ(rows[size_t(t.blocks[size_t(p / bs)] * bs + p % bs)], s.tokens[size_t(p)])
                << "op " << op << " seq " << id << " group " << int(g) << " position " << p;
        }
      }
    }
    // The run must have exercised every path it checks.
    EXPECT_GT(hits, 10);
    EXPECT_GT(cows, 10);
    EXPECT_GT(full_errors, 10);
    EXPECT_GT(preempts, 10);
    EXPECT_GT(resumes, 10);
    EXPECT_GT(forks, 10);
  }
}

}  // namespace
}  // namespace gptoss
