// The paged KV cache's bookkeeping for many sequences: per sequence one block table per layer group
// (kv_layout.h), blocks from one shared BlockPool, prefix sharing through the pool's prefix cache,
// copy-on-write after fork, admission with reservations, preemption. Host-side only: block ids,
// reference counts and hashes; the backends own the storage and do the copies this class asks for.
//
// Positions and tables. A sequence holds tokens[0, num_tokens) (prompt and appended ids). Its first
// num_positions positions have slots in its tables: the KV of position p of a layer of group g is row
// p % block_size of block table(id, g).blocks[p / block_size]. A step that computes positions
// [p0, p0 + n) first calls extend(id, n) (or append(id, tokens) for new tokens), applies the
// BlockCopy list it returns, writes the n rows, and after the step calls commit(id): only committed
// complete blocks (all block_size rows) enter the prefix cache, so no sequence ever shares a block
// whose rows are not written.
//
//   full group:    blocks[i] for every i < ceil(num_positions / block_size)
//   sliding group: the same indexing, but blocks[i] = kNoBlock for i < first_live: extend releases the
//                  blocks that end before first_visible_position(p0), the first key the step's queries
//                  see, so a sequence holds at most window - 1 + max_chunk positions' worth of them.
//
// Sharing. A block may sit in several tables (fork, prefix hits); its refcount counts them. Only a
// partially filled last block is ever written after being shared: extend then gives this sequence a
// fresh block and returns {src, dst, rows} for the backend to copy first (copy-on-write); complete blocks
// are never written again.
//
// Prefix cache. commit publishes each complete block under the hash chain of its tokens
// (kv_block_hash(prev, tokens of the block)), in each group where the sequence still holds it. admit
// takes the longest run of cached blocks k (at most (num_tokens - 1) / block_size, so that the last
// prompt token is always computed and gives logits) such that the full group has blocks 0..k-1 and the
// sliding group has every block the next query at k * block_size sees (those meeting positions
// [k * block_size - window + 1, k * block_size)). Sliding blocks leave a sequence's table as it moves on,
// but stay cached (refcount 0, LRU) until the pool needs them, so a shared system prompt usually hits
// in both groups; when the sliding blocks were evicted the hit is shortened to the longest k that has
// them (recomputing from there), never served with a gap.
//
// Admission and the no-out-of-memory rule. Every operation that takes blocks returns an error and
// changes nothing when they are not there; none aborts. A sequence is admitted either
//   Reserve:    with a guarantee: it can always extend up to prompt + max_new_tokens positions;
//   Optimistic: with none: an extend may fail, and the scheduler then preempts someone and retries.
// The manager keeps  referenced + owed <= num_blocks,  owed = the sum over Reserve sequences of the
// blocks each may still allocate:
//   full group:    ceil(max_positions / block_size) - its table's size, + 1 while its last block is
//                  partial and shared (it will copy it). Complete blocks are never written or released
//                  before the end, so blocks shared with others (prefix hits, forks) cost it nothing;
//   sliding group: max_blocks_held(Sliding, max_positions) - the blocks it alone holds (a shared
//                  block it releases frees nothing, so only its own count as already paid).
// spare_blocks() = num_blocks - referenced - owed is what optimistic growth and new admissions may
// take; each admission, fork or optimistic extend is checked against it with the exact change of
// referenced + owed it causes, so Reserve sequences always find their blocks.
//
// Preemption. preempt(id) frees the sequence's blocks and keeps its tokens (is_preempted: the
// scheduler must recompute them); resume(id) admits it again (taking prefix-cache hits, often its own
// blocks still cached) and the scheduler then extends over tokens[num_positions, num_tokens).
//
// Not thread-safe: one scheduler thread owns the manager.
#pragma once

#include <cstdint>
#include <span>
#include <unordered_map>
#include <vector>

#include "core/status.h"
#include "kvcache/block_pool.h"
#include "kvcache/kv_layout.h"

namespace gptoss {

using SeqId = int64_t;

// One sequence's logical-to-physical block map in one group (see the header comment for its shape).
struct BlockTable {
  std::vector<BlockId> blocks;  // [ceil(num_positions / block_size)]
  int first_live = 0;           // sliding group: blocks[0, first_live) are kNoBlock; full group: 0
};

// Rows [0, rows) of every layer slot of block src must be copied into block dst before the step writes.
struct BlockCopy {
  KvGroup group = KvGroup::Full;
  BlockId src = kNoBlock, dst = kNoBlock;
  int rows = 0;
};

enum class KvAdmit : uint8_t { Reserve, Optimistic };

class KvBlockManager {
 public:
  KvBlockManager(const KvLayout& layout, int num_blocks);
  // Sized by a byte budget (--kv-cache-size): layout.blocks_for_bytes(cache_bytes) blocks.
  static Result<KvBlockManager> create(const KvLayout& layout, int64_t cache_bytes);

  const KvLayout& layout() const { return layout_; }
  const BlockPool& pool() const { return pool_; }
  int64_t spare_blocks() const { return pool_.num_blocks() - pool_.num_referenced() - owed(); }

  // Whether admit(prompt, max_new_tokens, mode) would succeed now. Reserve: the sequence's worst case
  // fits the spare blocks; Optimistic: the blocks that hold the whole prompt (beyond prefix hits) do.
  bool can_admit(std::span<const int32_t> prompt, int64_t max_new_tokens, KvAdmit mode) const;
  // A new sequence holding the prompt's tokens and the prefix cache's hits (num_positions(id) of them,
  // a multiple of block_size); the scheduler extends over the rest. An error, and nothing changed,
  // when the prompt is empty or does not fit.
  Result<SeqId> admit(std::span<const int32_t> prompt, int64_t max_new_tokens, KvAdmit mode);

  // Slots for the next n known tokens (positions [p0, p0 + n), p0 = num_positions, n <= max_chunk,
  // p0 + n <= num_tokens): releases the sliding blocks out of the window, then allocates; returns the
  // copies to make first. All or nothing (the release aside, which only drops blocks no query reads).
  Result<std::vector<BlockCopy>> extend(SeqId id, int n);
  // Adds new tokens (decode: the sampled one) and extends over them; needs num_positions == num_tokens.
  Result<std::vector<BlockCopy>> append(SeqId id, std::span<const int32_t> tokens);
  // The rows of every extended position are written: complete blocks enter the prefix cache.
  Status commit(SeqId id);

  // A new sequence with the parent's tokens and blocks (shared; the same admission mode and limit).
  // The parent must have committed all its positions.
  Result<SeqId> fork(SeqId parent);

  // Frees the sequence's blocks; its tokens stay for resume (the scheduler recomputes them).
  Status preempt(SeqId id);
  // Admits a preempted sequence again with its mode and limit; returns num_positions (prefix hits).
  Result<int64_t> resume(SeqId id);
  // Frees the sequence's blocks and forgets it.
  Status release(SeqId id);

  bool contains(SeqId id) const { return seqs_.count(id) != 0; }
  bool is_preempted(SeqId id) const;
  int64_t num_tokens(SeqId id) const;     // 0 for an unknown id
  int64_t num_positions(SeqId id) const;  // 0 for an unknown or preempted id
  std::span<const int32_t> tokens(SeqId id) const;
  // nullptr for an unknown id. The pointer lives as long as the sequence; its blocks change with
  // extend, append, preempt and resume (a backend copies the ids into its step's tables).
  const BlockTable* table(SeqId id, KvGroup g) const;
  size_t num_sequences() const { return seqs_.size(); }

  // Recounts everything from the tables (refcounts, reserved references, owed, the pool's lists and
  // maps, table shapes, that every cached block's hash matches the tokens of each table holding it,
  // and referenced + owed <= num_blocks). For tests; O(blocks + tokens).
  Status check_invariants() const;

 private:
  friend struct KvBlockManagerTestAccess;
  struct Sequence {
    std::vector<int32_t> tokens;
    int64_t positions = 0;          // slots in the tables
    int64_t computed = 0;           // committed positions
    int64_t published = 0;          // complete blocks offered to the prefix cache
    std::vector<BlockHash> hashes;  // chain hashes of the first complete blocks
    BlockTable tables[kNumKvGroups];
    KvAdmit mode = KvAdmit::Optimistic;
    int64_t max_positions = 0;  // Reserve: the positions guaranteed
    int64_t worst = 0;          // Reserve: sum over groups of max_blocks_held (0 while preempted)
    bool preempted = false;
  };
  // The prefix cache's answer for a run of tokens.
  struct Hits {
    int64_t blocks = 0;                         // k: positions [0, k * block_size) are cached
    std::vector<BlockId> tables[kNumKvGroups];  // hit blocks: full 0..k-1; sliding first..k-1
    int first_sliding = 0;
    std::vector<BlockHash> hashes;  // chain hashes of blocks 0..k-1
  };

  Sequence* find(SeqId id);
  const Sequence* find(SeqId id) const;
  int64_t owed() const { return worst_total_ + owed_parts_; }
  int64_t worst_blocks(int64_t positions) const;
  Hits find_hits(std::span<const int32_t> tokens) const;
  static int owed_part(KvGroup g, bool partial, int refs, int reserved_refs);
  int owed_part(BlockId b) const;
  int take_cost(BlockId b, bool reserved) const;
  int64_t admit_cost(const Hits& h, int64_t prompt, int64_t max_positions, KvAdmit mode) const;
  void attach(Sequence& s, Hits&& h);
  void take_ref(BlockId b, bool reserved);
  void drop_ref(BlockId b, bool reserved);
  Result<BlockId> alloc(KvGroup g, bool reserved);
  void set_partial(BlockId b, bool partial);
  void drop_all(Sequence& s);

  KvLayout layout_;
  BlockPool pool_;
  std::unordered_map<SeqId, Sequence> seqs_;
  SeqId next_id_ = 0;
  // Per block (meaningful while referenced): references from Reserve sequences, the group, and whether
  // it is a full-group block that is the partially filled last block of the tables holding it.
  std::vector<int32_t> reserved_refs_;
  std::vector<KvGroup> block_group_;
  std::vector<bool> partial_;
  int64_t worst_total_ = 0;  // sum of worst over Reserve sequences not preempted
  int64_t owed_parts_ = 0;   // sum of owed_part over blocks: owed = worst_total_ + owed_parts_
};

}  // namespace gptoss
