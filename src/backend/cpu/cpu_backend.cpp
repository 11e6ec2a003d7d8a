#include "backend/cpu/cpu_backend.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "backend/cpu/fast_matmul.h"
#include "backend/cpu/matmul.h"
#include "backend/cpu/membw.h"
#include "backend/cpu/vec_ops.h"
#include "core/dtype.h"
#include "core/threadpool.h"
#include "model/rope.h"

namespace gptoss {

namespace {

// K and V of every layer: [capacity, nkv, d] each, float32 or bf16. Position p lives in slot
// p % capacity; sliding layers keep a ring just large enough for one chunk (kv_capacity in model/backend.h).
class CpuKvCache final : public KvCache {
 public:
  struct Layer {
    int capacity = 0;
    std::unique_ptr<uint8_t[]> k, v;
  };
  std::vector<Layer> layers;
  KvPrecision precision = KvPrecision::F32;
  size_t elem_size = 4;
  size_t total = 0;
  size_t bytes() const override { return total; }
};

inline float load_kv(const uint8_t* base, size_t i, KvPrecision p) {
  if (p == KvPrecision::F32) return reinterpret_cast<const float*>(base)[i];
  return bf16_to_f32(reinterpret_cast<const uint16_t*>(base)[i]);
}

class CpuBackend final : public Backend {
 public:
  CpuBackend(const ModelConfig& c, int threads, CpuMath math)
      : c_(c), pool_(threads), rope_(yarn_rope_params(c)), math_(math) {}

  std::string name() const override {
    return std::string("cpu (") + cpu::matmul_isa() + (math_ == CpuMath::Fast ? " fast" : " exact") + ", " +
           std::to_string(pool_.num_threads()) + " threads)";
  }

  Result<ModelWeights> upload(const ModelWeights& host, const ModelConfig&) override { return host; }

  Result<float*> alloc(size_t count) override {
    // Uninitialised: large buffers stay untouched (not resident) until used.
    buffers_.push_back(std::make_unique_for_overwrite<float[]>(count));
    return buffers_.back().get();
  }

  Result<std::unique_ptr<KvCache>> create_kv_cache(const ModelConfig& c, const KvCacheOptions& o) override {
    auto kv = std::make_unique<CpuKvCache>();
    kv->precision = o.precision;
    kv->elem_size = o.precision == KvPrecision::F32 ? 4 : 2;
    for (int l = 0; l < c.num_hidden_layers; ++l) {
      CpuKvCache::Layer L;
      L.capacity = kv_capacity(c, o, l);
      const size_t n = size_t(L.capacity) * size_t(c.kv_dim()) * kv->elem_size;
      L.k = std::make_unique_for_overwrite<uint8_t[]>(n);
      L.v = std::make_unique_for_overwrite<uint8_t[]>(n);
      kv->total += 2 * n;
      kv->layers.push_back(std::move(L));
    }
    return std::unique_ptr<KvCache>(std::move(kv));
  }

  Status begin_step(const Step& step) override {
    tokens_.assign(step.tokens.begin(), step.tokens.end());
    seqs_.assign(step.seqs.begin(), step.seqs.end());
    out_rows_.assign(step.out_rows.begin(), step.out_rows.end());
    pos_.resize(tokens_.size());
    row_seq_.resize(tokens_.size());
    for (size_t i = 0; i < seqs_.size(); ++i)
      for (int r = 0; r < seqs_[i].n; ++r) {
        pos_[size_t(seqs_[i].row0 + r)] = seqs_[i].pos0 + r;
        row_seq_[size_t(seqs_[i].row0 + r)] = int(i);
      }
    return {};
  }

  void gather_rows(const float* x, int n, float* y) override {
    for (size_t i = 0; i < out_rows_.size(); ++i)
      std::memcpy(y + i * size_t(n), x + size_t(out_rows_[i]) * size_t(n), size_t(n) * sizeof(float));
  }

  void embed(const MatrixRef& table, float* x) override {
    const int64_t H = table.cols;
    for (size_t t = 0; t < tokens_.size(); ++t) {
      float* dst = x + int64_t(t) * H;
      const size_t row = size_t(tokens_[t]) * size_t(H);
      if (table.type == WeightType::BF16) {
        const auto* src = static_cast<const uint16_t*>(table.data) + row;
        for (int64_t i = 0; i < H; ++i) dst[i] = bf16_to_f32(src[i]);
      } else {
        std::memcpy(dst, static_cast<const float*>(table.data) + row, size_t(H) * 4);
      }
    }
  }

  void rmsnorm(const float* x, const float* w, int T, int n, double eps, float* y) override {
    // transformers: float32 mean of squares, rsqrt, times x, then times the weight. Sum in double.
    for (int t = 0; t < T; ++t) {
      const float* xr = x + size_t(t) * size_t(n);
      float* yr = y + size_t(t) * size_t(n);
      double ss = 0;
      for (int i = 0; i < n; ++i) ss += double(xr[i]) * double(xr[i]);
      const float r = float(1.0 / std::sqrt(ss / n + eps));
      for (int i = 0; i < n; ++i) yr[i] = w[i] * (xr[i] * r);
    }
  }

  void matmul(const MatrixRef& W, const float* x, int T, const float* bias, float* y) override {
    product(W, x, T, bias, y);
  }

  void add(float* x, const float* y, size_t n) override {
    for (size_t i = 0; i < n; ++i) x[i] += y[i];
  }

  Status to_host(const float* src, size_t n, float* dst) override {
    if (src != dst) std::memmove(dst, src, n * sizeof(float));
    return {};
  }

  double measure_bandwidth_gbs() override { return cpu::measure_read_bandwidth_gbs(pool_); }

  void attention(int layer, float* q, float* k, const float* v, const float* sinks, int window,
                 float* out) override;
  void moe(const LayerWeights& w, const float* h, int T, float* x) override;

 private:
  void apply_rope(float* v, int heads, int T);
  // Rows per MoE job: a multiple of 16 (the kernels' row groups) and even (gate/up pairs).
  static constexpr int64_t kMoeRows = 64;
  // Every matrix product of the backend: the --cpu-math family.
  void product(const MatrixRef& W, const float* x, int64_t T, const float* bias, float* y) {
    if (math_ == CpuMath::Fast) {
      cpu::matmul_fast(W, x, T, bias, y, pool_);
    } else {
      cpu::matmul(W, x, T, bias, y, pool_);
    }
  }

  ModelConfig c_;
  ThreadPool pool_;
  RopeParams rope_;
  CpuMath math_;
  // The step (begin_step): tokens, sequences, and per row its position and sequence index.
  std::vector<int32_t> tokens_;
  std::vector<StepSeq> seqs_;
  std::vector<int32_t> out_rows_, pos_, row_seq_;
  std::vector<std::unique_ptr<float[]>> buffers_;
  // MoE scratch, grown on demand: gathered inputs, gate_up outputs, activations, expert outputs (rows of all
  // the step's (token, expert) assignments, grouped by expert); the active experts (id, first row); one
  // product per active expert.
  std::vector<float> router_, xe_, gu_, z_, ye_;
  std::vector<std::pair<int, int64_t>> active_;
  std::vector<cpu::RowProduct> prods_;
};

// Half-split (NeoX) rotation with YaRN frequencies; cos/sin from a float32 angle, times mscale (docs/MODEL.md §4.4).
void CpuBackend::apply_rope(float* v, int heads, int T) {
  const int d = c_.head_dim, half = d / 2;
  std::vector<float> cs(static_cast<size_t>(d));
  for (int t = 0; t < T; ++t) {
    const float pos = float(pos_[size_t(t)]);
    for (int i = 0; i < half; ++i) {
      const float angle = pos * rope_.inv_freq[size_t(i)];
      cs[size_t(i)] = std::cos(angle) * rope_.mscale;
      cs[size_t(half + i)] = std::sin(angle) * rope_.mscale;
    }
    for (int hh = 0; hh < heads; ++hh) {
      float* r = v + (size_t(t) * size_t(heads) + size_t(hh)) * size_t(d);
      for (int i = 0; i < half; ++i) {
        const float a = r[i], b = r[i + half], co = cs[size_t(i)], si = cs[size_t(half + i)];
        r[i] = a * co - b * si;
        r[i + half] = b * co + a * si;
      }
    }
  }
}

void CpuBackend::attention(int layer, float* q, float* k, const float* v, const float* sinks, int window,
                           float* out) {
  const int T = int(tokens_.size()), nh = c_.num_attention_heads, nkv = c_.num_key_value_heads, d = c_.head_dim;
  const int group = nh / nkv;
  const size_t kvd = size_t(c_.kv_dim());
  apply_rope(q, nh, T);
  apply_rope(k, nkv, T);
  // Append this step's keys/values at slots (pos % capacity) of each row's own cache.
  for (int t = 0; t < T; ++t) {
    auto& L = static_cast<CpuKvCache&>(*seqs_[size_t(row_seq_[size_t(t)])].kv).layers[size_t(layer)];
    const KvPrecision prec = static_cast<CpuKvCache&>(*seqs_[size_t(row_seq_[size_t(t)])].kv).precision;
    const size_t slot = size_t(pos_[size_t(t)] % L.capacity);
    const float* ks = k + size_t(t) * kvd;
    const float* vs = v + size_t(t) * kvd;
    if (prec == KvPrecision::F32) {
      std::memcpy(L.k.get() + slot * kvd * 4, ks, kvd * 4);
      std::memcpy(L.v.get() + slot * kvd * 4, vs, kvd * 4);
    } else {
      auto* kd = reinterpret_cast<uint16_t*>(L.k.get()) + slot * kvd;
      auto* vd = reinterpret_cast<uint16_t*>(L.v.get()) + slot * kvd;
      for (size_t i = 0; i < kvd; ++i) {
        kd[i] = f32_to_bf16(ks[i]);
        vd[i] = f32_to_bf16(vs[i]);
      }
    }
  }
  const float scale = 1.0f / std::sqrt(float(d));
  const bool fast = math_ == CpuMath::Fast;  // SIMD dot / axpy (vec_ops.h) instead of the exact plain loops
  // One task per (token, query head): scores over the visible keys, softmax with the sink in the
  // denominator only (docs/MODEL.md §4.3), weighted sum of values.
  pool_.parallel_for(int64_t(T) * nh, [&](int64_t b, int64_t e) {
    std::vector<float> s;
    std::vector<float> acc(static_cast<size_t>(d));
    for (int64_t task = b; task < e; ++task) {
      const int t = int(task / nh), hq = int(task % nh), g = hq / group;
      const auto& kv = static_cast<const CpuKvCache&>(*seqs_[size_t(row_seq_[size_t(t)])].kv);
      const auto& L = kv.layers[size_t(layer)];
      const KvPrecision prec = kv.precision;
      const int P = pos_[size_t(t)];
      const int lo = window > 0 ? std::max(0, P - window + 1) : 0;
      const float* qr = q + (size_t(t) * size_t(nh) + size_t(hq)) * size_t(d);
      s.resize(size_t(P - lo + 1));
      float m = sinks[hq];
      for (int j = lo; j <= P; ++j) {
        const size_t base = (size_t(j % L.capacity) * kvd + size_t(g) * size_t(d));
        float dot = 0;
        if (prec == KvPrecision::F32) {
          const float* kr = reinterpret_cast<const float*>(L.k.get()) + base;
          if (fast) {
            dot = cpu::vec_dot(qr, kr, d);
          } else {
            for (int i = 0; i < d; ++i) dot += qr[i] * kr[i];
          }
        } else {
          for (int i = 0; i < d; ++i) dot += qr[i] * load_kv(L.k.get(), base + size_t(i), prec);
        }
        s[size_t(j - lo)] = dot * scale;
        m = std::max(m, dot * scale);
      }
      float denom = std::exp(sinks[hq] - m);
      for (auto& sv : s) {
        sv = std::exp(sv - m);
        denom += sv;
      }
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int j = lo; j <= P; ++j) {
        const size_t base = (size_t(j % L.capacity) * kvd + size_t(g) * size_t(d));
        const float p = s[size_t(j - lo)];
        if (prec == KvPrecision::F32) {
          const float* vr = reinterpret_cast<const float*>(L.v.get()) + base;
          if (fast) {
            cpu::vec_axpy(p, vr, acc.data(), d);
          } else {
            for (int i = 0; i < d; ++i) acc[size_t(i)] += p * vr[i];
          }
        } else {
          for (int i = 0; i < d; ++i) acc[size_t(i)] += p * load_kv(L.v.get(), base + size_t(i), prec);
        }
      }
      float* o = out + (size_t(t) * size_t(nh) + size_t(hq)) * size_t(d);
      const float inv = 1.0f / denom;
      for (int i = 0; i < d; ++i) o[i] = acc[size_t(i)] * inv;
    }
  });
}

void CpuBackend::moe(const LayerWeights& w, const float* h, int T, float* x) {
  const int E = c_.num_local_experts, K = c_.num_experts_per_tok, H = c_.hidden_size, I = c_.intermediate_size;
  const float limit = float(c_.swiglu_limit);
  router_.resize(size_t(T) * size_t(E));
  // The router stays exact in both modes: it is tiny, and a rounding difference here can flip a near-tie in
  // the top-k, which changes the output far more than the experts' own rounding.
  cpu::matmul(w.router, h, T, w.router_bias, router_.data(), pool_);
  // Route: top-k of the raw logits (ties to the lower expert id), softmax over the selected (docs/MODEL.md §4.5).
  std::vector<std::vector<std::pair<int, float>>> per_expert(static_cast<size_t>(E));  // (token, weight)
  std::vector<int> idx(static_cast<size_t>(E));
  for (int t = 0; t < T; ++t) {
    const float* r = router_.data() + size_t(t) * size_t(E);
    for (int e = 0; e < E; ++e) idx[size_t(e)] = e;
    std::partial_sort(idx.begin(), idx.begin() + K, idx.end(),
                      [&](int a, int b) { return r[a] != r[b] ? r[a] > r[b] : a < b; });
    const float m = r[idx[0]];
    float sum = 0, wts[64];
    for (int j = 0; j < K; ++j) sum += (wts[j] = std::exp(r[idx[size_t(j)]] - m));
    for (int j = 0; j < K; ++j) per_expert[size_t(idx[size_t(j)])].emplace_back(t, wts[j] / sum);
  }
  // The active experts in ascending id; expert e's n_e tokens gathered at rows [off_e, off_e + n_e) of xe_.
  active_.clear();
  int64_t A = 0;
  for (int e = 0; e < E; ++e)
    if (!per_expert[size_t(e)].empty()) active_.push_back({e, A}), A += int64_t(per_expert[size_t(e)].size());
  xe_.resize(size_t(A) * size_t(H));
  gu_.resize(size_t(A) * 2 * size_t(I));
  z_.resize(size_t(A) * size_t(I));
  ye_.resize(size_t(A) * size_t(H));
  if (prods_.size() < active_.size()) prods_.resize(active_.size());
  const bool fast = math_ == CpuMath::Fast;
  for (size_t i = 0; i < active_.size(); ++i) {
    const auto [e, off] = active_[i];
    const auto& toks = per_expert[size_t(e)];
    for (size_t j = 0; j < toks.size(); ++j)
      std::memcpy(xe_.data() + (size_t(off) + j) * size_t(H), h + size_t(toks[j].first) * size_t(H), size_t(H) * 4);
    prods_[i].prepare(w.gate_up.expert(e), xe_.data() + size_t(off) * size_t(H), int64_t(toks.size()),
                      w.gate_up_bias + size_t(e) * 2 * size_t(I), gu_.data() + size_t(off) * 2 * size_t(I), fast);
  }
  // All experts' rows in one dispatch per product (not two per expert): jobs of kMoeRows rows of one expert,
  // claimed in turn, so experts with more tokens (longer jobs) do not leave a thread idle. gate_up's jobs
  // also apply the clamped SwiGLU to their rows: interleaved, even = gate, odd = up (kMoeRows is even).
  const int64_t gu_jobs = (2 * int64_t(I) + kMoeRows - 1) / kMoeRows;
  pool_.for_each_job(int64_t(active_.size()) * gu_jobs, [&](int64_t job) {
    const auto [e, off] = active_[size_t(job / gu_jobs)];
    const int64_t r0 = (job % gu_jobs) * kMoeRows, r1 = std::min(2 * int64_t(I), r0 + kMoeRows);
    prods_[size_t(job / gu_jobs)].rows(r0, r1);
    const int64_t n = int64_t(per_expert[size_t(e)].size());
    for (int64_t t = off; t < off + n; ++t) {
      const float* gu = gu_.data() + size_t(t) * 2 * size_t(I);
      float* z = z_.data() + size_t(t) * size_t(I);
      for (int64_t p = r0 / 2; p < r1 / 2; ++p) {
        const float gate = std::min(gu[2 * p], limit);  // gate clamped above only, up both sides; +1 on up
        const float up = std::clamp(gu[2 * p + 1], -limit, limit);
        z[p] = (up + 1.0f) * (gate / (1.0f + std::exp(-1.702f * gate)));
      }
    }
  });
  for (size_t i = 0; i < active_.size(); ++i) {  // z complete: quantized for the int16 kernel here
    const auto [e, off] = active_[i];
    prods_[i].prepare(w.down.expert(e), z_.data() + size_t(off) * size_t(I), int64_t(per_expert[size_t(e)].size()),
                      w.down_bias + size_t(e) * size_t(H), ye_.data() + size_t(off) * size_t(H), fast);
  }
  const int64_t down_jobs = (int64_t(H) + kMoeRows - 1) / kMoeRows;
  pool_.for_each_job(int64_t(active_.size()) * down_jobs, [&](int64_t job) {
    const int64_t r0 = (job % down_jobs) * kMoeRows;
    prods_[size_t(job / down_jobs)].rows(r0, std::min(int64_t(H), r0 + kMoeRows));
  });
  // x[t] += wt * y over token t's experts in ascending id (the order is fixed, so results do not depend on the
  // threads), split by columns.
  pool_.parallel_for(H, [&](int64_t c0, int64_t c1) {
    for (const auto& [e, off] : active_) {
      const auto& toks = per_expert[size_t(e)];
      for (size_t j = 0; j < toks.size(); ++j) {
        const auto [t, wt] = toks[j];
        float* xr = x + size_t(t) * size_t(H);
        const float* yr = ye_.data() + (size_t(off) + j) * size_t(H);
        for (int64_t c = c0; c < c1; ++c) xr[c] += wt * yr[c];
      }
    }
  });
}

}  // namespace

Result<std::unique_ptr<Backend>> create_cpu_backend(const ModelConfig& c, const BackendOptions& o) {
  if (o.threads < 0) return Error("threads must be >= 0, got {}", o.threads);
  if (c.num_experts_per_tok > 64) return Error("num_experts_per_tok {} > 64 is not supported", c.num_experts_per_tok);
  return std::unique_ptr<Backend>(new CpuBackend(c, o.threads, o.cpu_math));
}

}  // namespace gptoss
