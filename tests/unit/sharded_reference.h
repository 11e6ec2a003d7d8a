// The sharded forward pass on the CPU: N simulated ranks, each a CPU backend built from its rank_config and holding
// only its shard (parallel/shard_weights.h) and a KV cache of its kv heads, run op by op in lockstep; the
// collectives are host sums and concatenations. It is the reference a multi-GPU step is checked against, and it
// checks the plan itself: its logits must equal the unsharded engine's up to summation order.
// Test-side because the expert-parallel MoE (global routing, local experts only) is not a Backend op: it is
// written here with Backend::matmul on the rank's experts and the routing on the host, which only a backend
// whose memory is host memory allows.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <span>
#include <vector>

#include "model/backend.h"
#include "parallel/shard_plan.h"
#include "parallel/shard_weights.h"

namespace gptoss::test {

class ShardedCpuReference {
 public:
  static Result<std::unique_ptr<ShardedCpuReference>> create(const ModelConfig& c, const ModelWeights& host,
                                                              int ranks, const KvCacheOptions& ko) {
    auto ref = std::unique_ptr<ShardedCpuReference>(new ShardedCpuReference());
    ref->c_ = c;
    GPTOSS_ASSIGN(ref->plan_, ShardPlan::make(c, ranks));
    for (int r = 0; r < ranks; ++r) {
      Rank rk;
      rk.shard = ref->plan_.shards[size_t(r)];
      rk.cfg = ref->plan_.rank_config(c, r);
      GPTOSS_ASSIGN(rk.backend, create_backend(rk.cfg, {.device = "cpu", .threads = 1, .cpu_math = CpuMath::Exact}));
      GPTOSS_ASSIGN(rk.sw, extract_shard(host, c, ref->plan_, r));
      GPTOSS_ASSIGN(rk.w, rk.backend->upload(rk.sw->w, rk.cfg));
      GPTOSS_ASSIGN(rk.kv, rk.backend->create_kv_cache(rk.cfg, ko));
      ref->ranks_.push_back(std::move(rk));
    }
    return ref;
  }

  const ShardPlan& plan() const { return plan_; }
  // Row t's greedy id as a sharded step finds it: each rank's argmax over its vocabulary columns of the last
  // step's logits (first on ties), merged.
  int64_t greedy_id(const std::vector<float>& logits, int t) const {
    std::vector<RankArgmax> per_rank;
    const float* row = logits.data() + size_t(t) * size_t(c_.vocab_size);
    for (const Rank& rk : ranks_) {
      const float* b = row + rk.shard.vocab.begin;
      const int64_t i = std::max_element(b, b + rk.shard.vocab.count) - b;
      per_rank.push_back({b[i], rk.shard.vocab.begin + i});
    }
    return merge_rank_argmax(per_rank).id;
  }
  size_t kv_bytes(int rank) const { return ranks_[size_t(rank)].kv->bytes(); }

  // Runs `tokens` at the next positions as one step; returns the logits of every row, [T, V].
  Result<std::vector<float>> step(std::span<const int32_t> tokens) {
    const int T = int(tokens.size()), H = c_.hidden_size;
    const size_t TH = size_t(T) * size_t(H);
    std::vector<int32_t> out_rows(static_cast<size_t>(T));
    for (int i = 0; i < T; ++i) out_rows[size_t(i)] = i;
    for (Rank& rk : ranks_) {
      const StepSeq seq{rk.kv.get(), 0, T, pos_};
      GPTOSS_TRY(rk.backend->begin_step(Step{tokens, std::span<const StepSeq>(&seq, 1), out_rows, 0}));
      rk.x.assign(TH, 0.0f);
      rk.h.assign(TH, 0.0f);
      rk.part.assign(TH, 0.0f);
      rk.q.assign(size_t(T) * size_t(rk.cfg.q_dim()), 0.0f);
      rk.k.assign(size_t(T) * size_t(rk.cfg.kv_dim()), 0.0f);
      rk.v.assign(size_t(T) * size_t(rk.cfg.kv_dim()), 0.0f);
      rk.attn.assign(rk.q.size(), 0.0f);
      rk.backend->embed(rk.w.embed, rk.x.data());  // replicated table: every rank has all of x
    }
    for (int l = 0; l < c_.num_hidden_layers; ++l) {
      for (Rank& rk : ranks_) {  // attention over the rank's heads, o_proj's partial sum over its columns
        const LayerWeights& L = rk.w.layers[size_t(l)];
        Backend& be = *rk.backend;
        be.rmsnorm(rk.x.data(), L.attn_norm, T, H, c_.rms_norm_eps, rk.h.data());
        be.matmul(L.q, rk.h.data(), T, L.q_bias, rk.q.data());
        be.matmul(L.k, rk.h.data(), T, L.k_bias, rk.k.data());
        be.matmul(L.v, rk.h.data(), T, L.v_bias, rk.v.data());
        be.attention(l, rk.q.data(), rk.k.data(), rk.v.data(), L.sinks, L.sliding ? c_.sliding_window : 0,
                     rk.attn.data());
        be.matmul(L.o, rk.attn.data(), T, L.o_bias, rk.part.data());
      }
      all_reduce_add_to_x(TH);
      for (Rank& rk : ranks_) {  // every rank routes every token; computes only its experts
        const LayerWeights& L = rk.w.layers[size_t(l)];
        rk.backend->rmsnorm(rk.x.data(), L.mlp_norm, T, H, c_.rms_norm_eps, rk.h.data());
        moe_local(rk, L, T);
      }
      all_reduce_add_to_x(TH);
    }
    const int64_t V = c_.vocab_size;
    std::vector<float> logits(size_t(T) * size_t(V));
    for (Rank& rk : ranks_) {  // the rank's vocabulary columns, then the all-gather
      rk.backend->rmsnorm(rk.x.data(), rk.w.final_norm, T, H, c_.rms_norm_eps, rk.h.data());
      const int64_t nv = rk.shard.vocab.count;
      std::vector<float> part(size_t(T) * size_t(nv));
      rk.backend->matmul(rk.w.lm_head, rk.h.data(), T, nullptr, part.data());
      for (int t = 0; t < T; ++t)
        std::memcpy(logits.data() + size_t(t) * size_t(V) + size_t(rk.shard.vocab.begin),
                    part.data() + size_t(t) * size_t(nv), size_t(nv) * sizeof(float));
    }
    pos_ += T;
    return logits;
  }

 private:
  struct Rank {
    RankShard shard;
    ModelConfig cfg;
    std::unique_ptr<Backend> backend;
    std::unique_ptr<ShardWeights> sw;
    ModelWeights w;
    std::unique_ptr<KvCache> kv;
    std::vector<float> x, h, q, k, v, attn, part;  // [T, H] or [T, the rank's q_dim / kv_dim]
    std::vector<float> router, xe, gu, z, ye;
  };

  ShardedCpuReference() = default;

  // The all-reduce: the partial sums added in rank order (as a deterministic reduction would), then x += sum on
  // every rank; the partials are cleared for the next op.
  void all_reduce_add_to_x(size_t n) {
    std::vector<float> sum(n, 0.0f);
    for (Rank& rk : ranks_)
      for (size_t i = 0; i < n; ++i) sum[i] += rk.part[i];
    for (Rank& rk : ranks_) {
      for (size_t i = 0; i < n; ++i) rk.x[i] += sum[i];
      std::fill(rk.part.begin(), rk.part.end(), 0.0f);
    }
  }

  // part[T, H] = sum over the k experts of each token that lie on this rank of weight * expert(h): router, top-k
  // of the raw logits (ties to the lower id), softmax over the k selected, clamped SwiGLU (as backend/cpu's moe).
  void moe_local(Rank& rk, const LayerWeights& L, int T) {
    const int E = c_.num_local_experts, K = c_.num_experts_per_tok, H = c_.hidden_size, I = c_.intermediate_size;
    const float limit = float(c_.swiglu_limit);
    const int e0 = int(rk.shard.experts.begin), ne = int(rk.shard.experts.count);
    Backend& be = *rk.backend;
    rk.router.resize(size_t(T) * size_t(E));
    be.matmul(L.router, rk.h.data(), T, L.router_bias, rk.router.data());
    std::vector<std::vector<std::pair<int, float>>> per_expert(static_cast<size_t>(ne));
    std::vector<int> idx(static_cast<size_t>(E));
    for (int t = 0; t < T; ++t) {
      const float* r = rk.router.data() + size_t(t) * size_t(E);
      for (int e = 0; e < E; ++e) idx[size_t(e)] = e;
      std::partial_sort(idx.begin(), idx.begin() + K, idx.end(),
                        [&](int a, int b) { return r[a] != r[b] ? r[a] > r[b] : a < b; });
      const float m = r[idx[0]];
      std::vector<float> wts(static_cast<size_t>(K));
      float sum = 0;
      for (int j = 0; j < K; ++j) sum += (wts[size_t(j)] = std::exp(r[idx[size_t(j)]] - m));
      for (int j = 0; j < K; ++j) {
        const int e = idx[size_t(j)];
        if (e >= e0 && e < e0 + ne) per_expert[size_t(e - e0)].emplace_back(t, wts[size_t(j)] / sum);
      }
    }
    for (int le = 0; le < ne; ++le) {
      const auto& toks = per_expert[size_t(le)];
      if (toks.empty()) continue;
      const int n = int(toks.size());
      rk.xe.resize(size_t(n) * size_t(H));
      rk.gu.resize(size_t(n) * 2 * size_t(I));
      rk.z.resize(size_t(n) * size_t(I));
      rk.ye.resize(size_t(n) * size_t(H));
      for (int i = 0; i < n; ++i)
        std::memcpy(rk.xe.data() + size_t(i) * size_t(H), rk.h.data() + size_t(toks[size_t(i)].first) * size_t(H),
                    size_t(H) * sizeof(float));
      be.matmul(L.gate_up.expert(le), rk.xe.data(), n, L.gate_up_bias + size_t(le) * 2 * size_t(I), rk.gu.data());
      for (size_t i = 0; i < size_t(n) * size_t(I); ++i) {
        const float gate = std::min(rk.gu[2 * i], limit);
        const float up = std::clamp(rk.gu[2 * i + 1], -limit, limit);
        rk.z[i] = (up + 1.0f) * (gate / (1.0f + std::exp(-1.702f * gate)));
      }
      be.matmul(L.down.expert(le), rk.z.data(), n, L.down_bias + size_t(le) * size_t(H), rk.ye.data());
      for (int i = 0; i < n; ++i) {
        const auto [t, wt] = toks[size_t(i)];
        float* pr = rk.part.data() + size_t(t) * size_t(H);
        const float* yr = rk.ye.data() + size_t(i) * size_t(H);
        for (int j = 0; j < H; ++j) pr[j] += wt * yr[j];
      }
    }
  }

  ModelConfig c_;
  ShardPlan plan_;
  std::vector<Rank> ranks_;
  int pos_ = 0;
};

}  // namespace gptoss::test
