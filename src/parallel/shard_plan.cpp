#include "parallel/shard_plan.h"

#include <algorithm>
#include <cassert>
#include <cmath>

namespace gptoss {

namespace {

uint64_t stored_bytes(WeightType t, uint64_t elems) {
  switch (t) {
    case WeightType::F32: return elems * 4;
    case WeightType::BF16: return elems * 2;
    case WeightType::MXFP4: return elems / 2 + elems / 32;  // 4-bit values + one E8M0 scale per 32
  }
  return 0;
}

// Why `n` ranks cannot split this model, or ok. Heads first, then experts, then the vocabulary.
Status check_ranks(const ModelConfig& c, int n) {
  const int nh = c.num_attention_heads, nkv = c.num_key_value_heads, E = c.num_local_experts;
  if (n < 1 || n > kMaxShardRanks) return Error("the number of ranks must be in 1..{}", kMaxShardRanks);
  if (nkv <= 0 || nh <= 0 || nh % nkv != 0)
    return Error("num_attention_heads {} is not a multiple of num_key_value_heads {}", nh, nkv);
  if (nkv % n != 0) {
    if (n % nkv != 0)
      return Error("num_key_value_heads {} is neither divisible by {} nor a divisor of it", nkv, n);
    if (nh % n != 0)  // kv heads replicated: their query heads must still split evenly
      return Error("num_attention_heads {} is not divisible by {} (num_key_value_heads {} replicated)", nh, n, nkv);
  }
  if (E <= 0 || E % n != 0) return Error("num_local_experts {} is not divisible by {}", E, n);
  const int64_t per = (int64_t(c.vocab_size) + n - 1) / n;
  if (per * (n - 1) >= c.vocab_size)
    return Error("vocab_size {} leaves a rank without output-head rows", c.vocab_size);
  return {};
}

// Bytes of rank `s` (its heads, experts and vocabulary rows set) among n ranks.
ShardBytes shard_bytes(const ModelConfig& c, const ShardDtypes& dt, const RankShard& s, int n, int kv_replicas) {
  const uint64_t L = uint64_t(c.num_hidden_layers), H = uint64_t(c.hidden_size), I = uint64_t(c.intermediate_size);
  const uint64_t V = uint64_t(c.vocab_size), E = uint64_t(c.num_local_experts), K = uint64_t(c.num_experts_per_tok);
  const uint64_t q = stored_bytes(dt.dense, uint64_t(s.q_rows.count) * H);
  const uint64_t kv = 2 * stored_bytes(dt.dense, uint64_t(s.kv_rows.count) * H);  // k and v
  const uint64_t o = stored_bytes(dt.dense, H * uint64_t(s.q_rows.count));
  const uint64_t router = stored_bytes(dt.dense, E * H);
  const uint64_t expert = stored_bytes(dt.experts, 2 * I * H) + stored_bytes(dt.experts, H * I);
  const uint64_t head = stored_bytes(dt.dense, uint64_t(s.vocab.count) * H);
  const uint64_t embed = stored_bytes(dt.embed, V * H), embed_row = stored_bytes(dt.embed, H);
  const uint64_t local_experts = uint64_t(s.experts.count);

  ShardBytes b;
  b.weights = L * (q + kv + o + router + local_experts * expert) + head + embed;
  b.decode = L * (q + kv + o + router) + L * K * expert / uint64_t(n) + head + embed_row;
  b.decode_max = L * (q + kv + o + router + std::min(K, local_experts) * expert) + head + embed_row;
  if (n > 1) {
    b.weights_replicated = L * router + embed;
    b.decode_replicated = L * router + embed_row;
  }
  if (kv_replicas > 1) {
    b.weights_replicated += L * kv;
    b.decode_replicated += L * kv;
  }
  return b;
}

// E[max over n ranks of the experts a token's k distinct experts put on one rank], E/n experts per rank, all
// C(E, k) choices equally likely: E[max] = sum over m < k of P(max > m), where the choices with every rank at most m
// are the x^k coefficient of (sum_{j <= m} C(E/n, j) x^j)^n.
double expected_busiest_rank_experts(int E, int k, int n) {
  auto binom = [](int a, int b) {
    double r = 1;
    for (int i = 1; i <= b; ++i) r = r * double(a - b + i) / double(i);
    return r;
  };
  const int per = E / n;
  double expected = 0;
  for (int m = 0; m < k; ++m) {
    std::vector<double> ways(size_t(k) + 1, 0.0);  // ways[j]: choices of j experts over the ranks so far
    ways[0] = 1;
    for (int r = 0; r < n; ++r) {
      std::vector<double> next(size_t(k) + 1, 0.0);
      for (int j = 0; j <= k; ++j)
        for (int c = 0; c <= std::min({m, per, k - j}); ++c) next[size_t(j + c)] += ways[size_t(j)] * binom(per, c);
      ways = std::move(next);
    }
    expected += 1.0 - ways[size_t(k)] / binom(E, k);
  }
  return expected;
}

}  // namespace

uint64_t RankShard::kv_bytes_per_position(size_t elem_size) const {
  return 2 * uint64_t(kv_rows.count) * uint64_t(elem_size);
}

std::vector<int> valid_shard_ranks(const ModelConfig& c) {
  std::vector<int> out;
  for (int n = 1; n <= kMaxShardRanks; ++n)
    if (check_ranks(c, n).ok()) out.push_back(n);
  return out;
}

std::string format_ranks(const std::vector<int>& ranks) {
  std::string s;
  for (int n : ranks) s += (s.empty() ? "" : ", ") + std::to_string(n);
  return s.empty() ? "none" : s;
}

Result<ShardPlan> ShardPlan::make(const ModelConfig& c, int ranks, const ShardDtypes& dt) {
  if (Status st = check_ranks(c, ranks); !st.ok())
    return Error("cannot split the model over {} ranks: {} (valid: {})", ranks, st.message(),
                 format_ranks(valid_shard_ranks(c)));
  const int n = ranks, nh = c.num_attention_heads, nkv = c.num_key_value_heads, d = c.head_dim;
  const int group = nh / nkv;
  ShardPlan p;
  p.ranks = n;
  p.kv_replicas = nkv % n == 0 ? 1 : n / nkv;
  p.vocab_per_rank = (int64_t(c.vocab_size) + n - 1) / n;
  const int64_t experts_per_rank = c.num_local_experts / n;
  for (int r = 0; r < n; ++r) {
    RankShard s;
    s.rank = r;
    if (p.kv_replicas == 1) {
      s.kv_heads = {int64_t(r) * (nkv / n), nkv / n};
      s.q_heads = {s.kv_heads.begin * group, s.kv_heads.count * group};
    } else {  // rank r shares kv head r / replicas with its neighbours and takes nh / n of its query heads
      s.kv_heads = {r / p.kv_replicas, 1};
      s.q_heads = {int64_t(r) * (nh / n), nh / n};
    }
    s.q_rows = {s.q_heads.begin * d, s.q_heads.count * d};
    s.kv_rows = {s.kv_heads.begin * d, s.kv_heads.count * d};
    s.experts = {int64_t(r) * experts_per_rank, experts_per_rank};
    const int64_t v0 = std::min<int64_t>(c.vocab_size, int64_t(r) * p.vocab_per_rank);
    s.vocab = {v0, std::min<int64_t>(c.vocab_size, v0 + p.vocab_per_rank) - v0};
    s.adds_o_bias = r == 0;
    s.bytes = shard_bytes(c, dt, s, n, p.kv_replicas);
    p.shards.push_back(s);
  }
  // The critical path: rank 0 (it has the most vocabulary rows) with the expected busiest rank's experts.
  const uint64_t L = uint64_t(c.num_hidden_layers), H = uint64_t(c.hidden_size), I = uint64_t(c.intermediate_size);
  const uint64_t expert = stored_bytes(dt.experts, 2 * I * H) + stored_bytes(dt.experts, H * I);
  const int K = c.num_experts_per_tok;
  p.busiest_rank_experts = expected_busiest_rank_experts(c.num_local_experts, K, n);
  const uint64_t local_k = uint64_t(std::min<int64_t>(K, experts_per_rank));
  p.decode_critical = p.shards[0].bytes.decode_max - L * local_k * expert +
                      uint64_t(std::llround(double(L * expert) * p.busiest_rank_experts));
  RankShard all;
  all.q_rows = {0, c.q_dim()};
  all.kv_rows = {0, c.kv_dim()};
  all.experts = {0, c.num_local_experts};
  all.vocab = {0, c.vocab_size};
  p.whole = shard_bytes(c, dt, all, 1, 1);
  return p;
}

ModelConfig ShardPlan::rank_config(const ModelConfig& c, int rank) const {
  ModelConfig rc = c;
  assert(rank >= 0 && rank < ranks);
  const RankShard& s = shards[size_t(rank)];
  rc.num_attention_heads = int(s.q_heads.count);
  rc.num_key_value_heads = int(s.kv_heads.count);
  return rc;
}

RankArgmax merge_rank_argmax(std::span<const RankArgmax> per_rank) {
  RankArgmax best{-INFINITY, -1};
  for (const RankArgmax& a : per_rank)
    if (a.id >= 0 && (best.id < 0 || a.value > best.value || (a.value == best.value && a.id < best.id))) best = a;
  return best;
}

}  // namespace gptoss
