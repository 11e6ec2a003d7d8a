#include "model/weights.h"

#include <cmath>
#include <cstring>

#include "core/mxfp4.h"

namespace gptoss {

namespace {

std::vector<float> to_f32(const TensorData& t) {
  const size_t n = t.bytes.size() / dtype_size(t.dtype);
  std::vector<float> out(n);
  if (t.dtype == DType::F32) {
    std::memcpy(out.data(), t.bytes.data(), n * 4);
  } else if (t.dtype == DType::BF16) {
    const auto* p = reinterpret_cast<const uint16_t*>(t.bytes.data());
    for (size_t i = 0; i < n; ++i) out[i] = bf16_to_f32(p[i]);
  } else {  // F16: IEEE half, decoded through its bit fields
    const auto* p = reinterpret_cast<const uint16_t*>(t.bytes.data());
    for (size_t i = 0; i < n; ++i) {
      const uint32_t h = p[i], sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
      float v = exp == 0 ? std::ldexp(float(man), -24) : exp == 31 ? (man ? NAN : INFINITY)
                                                            : std::ldexp(float(man | 0x400), int(exp) - 25);
      uint32_t u;
      std::memcpy(&u, &v, 4);
      u |= sign;
      std::memcpy(&out[i], &u, 4);
    }
  }
  return out;
}

}  // namespace

Result<std::unique_ptr<HostWeights>> build_host_weights(const Checkpoint& ck) {
  auto hw = std::make_unique<HostWeights>();
  const ModelConfig& c = ck.config();
  auto get = [&](const std::string& name) -> const TensorData& { return *ck.find(name); };  // validated by open()
  auto small = [&](const std::string& name) -> const float* {
    hw->owned.push_back(to_f32(get(name)));
    return hw->owned.back().data();
  };
  Status bad;
  // A big matrix used in place. Dense float matrices only in F32/BF16 (the kernels' types).
  auto matrix = [&](const std::string& name, bool transposed, int64_t rows, int64_t cols) -> MatrixRef {
    const TensorData& t = get(name);
    MatrixRef m;
    m.data = t.bytes.data();
    m.rows = rows;
    m.cols = cols;
    m.transposed = transposed;
    if (t.dtype == DType::BF16) m.type = WeightType::BF16;
    else if (t.dtype == DType::F32) m.type = WeightType::F32;
    else if (bad.ok()) bad = Error("{}: dtype {} is not supported for matrices (BF16 or F32)", name, dtype_name(t.dtype));
    hw->matrix_bytes += t.bytes.size();
    return m;
  };
  const int64_t H = c.hidden_size, V = c.vocab_size, E = c.num_local_experts, I = c.intermediate_size;
  hw->w.embed = matrix("model.embed_tokens.weight", false, V, H);
  hw->w.lm_head = matrix("lm_head.weight", false, V, H);
  hw->w.final_norm = small("model.norm.weight");
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    LayerWeights L;
    L.sliding = c.layer_is_sliding[size_t(l)];
    L.attn_norm = small(p + "input_layernorm.weight");
    L.q = matrix(p + "self_attn.q_proj.weight", false, c.q_dim(), H);
    L.k = matrix(p + "self_attn.k_proj.weight", false, c.kv_dim(), H);
    L.v = matrix(p + "self_attn.v_proj.weight", false, c.kv_dim(), H);
    L.o = matrix(p + "self_attn.o_proj.weight", false, H, c.q_dim());
    L.q_bias = small(p + "self_attn.q_proj.bias");
    L.k_bias = small(p + "self_attn.k_proj.bias");
    L.v_bias = small(p + "self_attn.v_proj.bias");
    L.o_bias = small(p + "self_attn.o_proj.bias");
    L.sinks = small(p + "self_attn.sinks");
    L.mlp_norm = small(p + "post_attention_layernorm.weight");
    L.router = matrix(p + "mlp.router.weight", false, E, H);
    L.router_bias = small(p + "mlp.router.bias");
    L.gate_up_bias = small(p + "mlp.experts.gate_up_proj_bias");
    L.down_bias = small(p + "mlp.experts.down_proj_bias");
    if (ck.experts() == ExpertStorage::Mxfp4) {
      const TensorData& gb = get(p + "mlp.experts.gate_up_proj_blocks");
      const TensorData& gs = get(p + "mlp.experts.gate_up_proj_scales");
      const TensorData& db = get(p + "mlp.experts.down_proj_blocks");
      const TensorData& ds = get(p + "mlp.experts.down_proj_scales");
      L.gate_up = {{WeightType::MXFP4, gb.bytes.data(), gs.bytes.data(), 2 * I, H, false},
                   gb.bytes.size() / size_t(E), gs.bytes.size() / size_t(E), int(E)};
      L.down = {{WeightType::MXFP4, db.bytes.data(), ds.bytes.data(), H, I, false},
                db.bytes.size() / size_t(E), ds.bytes.size() / size_t(E), int(E)};
      hw->matrix_bytes += gb.bytes.size() + gs.bytes.size() + db.bytes.size() + ds.bytes.size();
    } else {
      // transformers' dense layout [E, in, out]: each expert is a transposed [out, in] matrix.
      L.gate_up = {matrix(p + "mlp.experts.gate_up_proj", true, 2 * I, H),
                   get(p + "mlp.experts.gate_up_proj").bytes.size() / size_t(E), 0, int(E)};
      L.down = {matrix(p + "mlp.experts.down_proj", true, H, I),
                get(p + "mlp.experts.down_proj").bytes.size() / size_t(E), 0, int(E)};
    }
    hw->w.layers.push_back(L);
  }
  if (!bad.ok()) return bad;
  return hw;
}

namespace {
uint64_t matrix_bytes(const MatrixRef& m) {
  const uint64_t n = uint64_t(m.rows) * uint64_t(m.cols);
  switch (m.type) {
    case WeightType::F32: return n * 4;
    case WeightType::BF16: return n * 2;
    case WeightType::MXFP4: return n / 2 + n / 32;
  }
  return 0;
}
}  // namespace

uint64_t decode_bytes_per_token(const ModelConfig& c, const ModelWeights& w) {
  uint64_t b = matrix_bytes(w.lm_head) + matrix_bytes(w.embed) / uint64_t(c.vocab_size);
  for (const auto& L : w.layers)
    b += matrix_bytes(L.q) + matrix_bytes(L.k) + matrix_bytes(L.v) + matrix_bytes(L.o) + matrix_bytes(L.router) +
         uint64_t(c.num_experts_per_tok) * (matrix_bytes(L.gate_up.first) + matrix_bytes(L.down.first));
  return b;
}

}  // namespace gptoss
