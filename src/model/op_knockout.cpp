#include "model/op_knockout.h"

namespace gptoss {

namespace {

class OpKnockout final : public Backend {
 public:
  OpKnockout(Backend& inner, const ModelWeights& w, uint32_t mask) : in_(inner), mask_(mask), final_norm_(w.final_norm) {
    lm_head_ = w.lm_head.data;
    for (const LayerWeights& L : w.layers) {
      attn_norms_.insert(L.attn_norm);
      mlp_norms_.insert(L.mlp_norm);
      for (const MatrixRef* m : {&L.q, &L.k, &L.v}) qkv_.insert(m->data);
      o_.insert(L.o.data);
    }
  }

  std::string name() const override { return in_.name(); }
  Result<ModelWeights> upload(const ModelWeights& host, const ModelConfig& c) override { return in_.upload(host, c); }
  Result<float*> alloc(size_t count) override { return in_.alloc(count); }
  Result<std::unique_ptr<KvCache>> create_kv_cache(const ModelConfig& c, const KvCacheOptions& o) override {
    return in_.create_kv_cache(c, o);
  }

  Status begin_step(const Step& step) override { return in_.begin_step(mark(step)); }
  Status begin_step_chained(const Step& step) override { return in_.begin_step_chained(mark(step)); }

  void embed(const MatrixRef& table, float* x) override { in_.embed(table, x); }
  void rmsnorm(const float* x, const float* w, int T, int n, double eps, float* y) override {
    const uint32_t g = w == final_norm_ ? op_group::lm_head
                       : attn_norms_.count(w) ? op_group::qkv
                       : mlp_norms_.count(w)  ? op_group::moe
                                              : 0u;
    if (!drop(g)) in_.rmsnorm(x, w, T, n, eps, y);
  }
  void matmul(const MatrixRef& W, const float* x, int T, const float* bias, float* y) override {
    const uint32_t g = W.data == lm_head_ ? op_group::lm_head
                       : qkv_.count(W.data) ? op_group::qkv
                       : o_.count(W.data)   ? op_group::o_proj
                                            : 0u;
    if (g == op_group::o_proj && drop(g)) {
      skip_add_ = true;  // the residual add that follows the o product
      return;
    }
    if (!drop(g)) in_.matmul(W, x, T, bias, y);
  }
  void attention(int layer, float* q, float* k, const float* v, const float* sinks, int window, float* out) override {
    if (!drop(op_group::attention)) in_.attention(layer, q, k, v, sinks, window, out);
  }
  void gather_rows(const float* x, int n, float* y) override {
    if (!drop(op_group::lm_head)) in_.gather_rows(x, n, y);
  }
  void moe(const LayerWeights& w, const float* h, int T, float* x) override {
    if (!drop(op_group::moe)) in_.moe(w, h, T, x);
  }
  void add(float* x, const float* y, size_t n) override {
    if (skip_add_) {
      skip_add_ = false;
      return;
    }
    in_.add(x, y, n);
  }
  // A fused op of a dropped group reports itself done.
  bool matmul_add(const MatrixRef& W, const float* x, int T, const float* bias, float* y) override {
    return drop(op_group::o_proj) || in_.matmul_add(W, x, T, bias, y);
  }
  bool norm_qkv(const LayerWeights& L, const float* x, int T, double eps, float* q, float* k, float* v) override {
    return drop(op_group::qkv) || in_.norm_qkv(L, x, T, eps, q, k, v);
  }
  bool norm_moe(const LayerWeights& L, float* x, int T, double eps, float* h) override {
    return drop(op_group::moe) || in_.norm_moe(L, x, T, eps, h);
  }
  Result<int32_t> argmax(const float* x, int n) override { return in_.argmax(x, n); }
  bool argmax_async(const float* x, int n, int chain_pos) override { return in_.argmax_async(x, n, chain_pos); }
  Result<int32_t> argmax_wait() override { return in_.argmax_wait(); }
  Result<int32_t> sample(const float* x, int n, float temperature, double u) override {
    return in_.sample(x, n, temperature, u);
  }
  Result<bool> draw_rows(const float* x, int R, int n, std::span<const float> t, std::span<const double> u,
                         int32_t* out) override {
    return in_.draw_rows(x, R, n, t, u, out);
  }
  Status to_host(const float* src, size_t n, float* dst) override { return in_.to_host(src, n, dst); }
  size_t free_memory_bytes() override { return in_.free_memory_bytes(); }
  bool replay_step() override { return in_.replay_step(); }
  void record_step_begin() override { in_.record_step_begin(); }
  Status record_step_end() override { return in_.record_step_end(); }
  double measure_bandwidth_gbs() override { return in_.measure_bandwidth_gbs(); }

 private:
  // Knock-outs apply to one-token steps; such a step is recorded apart from the unmasked one.
  Step mark(const Step& step) {
    one_token_ = step.rows() == 1;
    Step s = step;
    if (one_token_) s.buffers_key ^= uint64_t(mask_) << 40;
    return s;
  }
  bool drop(uint32_t group) const { return one_token_ && (mask_ & group) != 0; }

  Backend& in_;
  uint32_t mask_;
  bool one_token_ = false, skip_add_ = false;
  const float* final_norm_;
  const void* lm_head_;
  std::unordered_set<const void*> attn_norms_, mlp_norms_, qkv_, o_;
};

}  // namespace

std::unique_ptr<Backend> make_op_knockout(Backend& inner, const ModelWeights& w, uint32_t mask) {
  return std::make_unique<OpKnockout>(inner, w, mask);
}

}  // namespace gptoss
