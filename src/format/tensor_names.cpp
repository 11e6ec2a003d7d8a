#include "format/tensor_names.h"

#include <fmt/format.h>

namespace gptoss {

bool TensorSpec::quantized() const {
  return role == TensorRole::GateUpBlocks || role == TensorRole::GateUpScales || role == TensorRole::DownBlocks ||
         role == TensorRole::DownScales;
}

std::vector<TensorSpec> model_tensor_specs(const ModelConfig& c, ExpertStorage experts) {
  const int64_t H = c.hidden_size, V = c.vocab_size, E = c.num_local_experts, I = c.intermediate_size;
  const int64_t Q = c.q_dim(), KV = c.kv_dim(), NH = c.num_attention_heads;
  using R = TensorRole;
  std::vector<TensorSpec> out;
  out.push_back({"model.embed_tokens.weight", R::Embed, -1, {V, H}});
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    auto n = [&](const char* s) { return fmt::format("model.layers.{}.{}", l, s); };
    out.push_back({n("input_layernorm.weight"), R::AttnNorm, l, {H}});
    out.push_back({n("self_attn.q_proj.weight"), R::QWeight, l, {Q, H}});
    out.push_back({n("self_attn.q_proj.bias"), R::QBias, l, {Q}});
    out.push_back({n("self_attn.k_proj.weight"), R::KWeight, l, {KV, H}});
    out.push_back({n("self_attn.k_proj.bias"), R::KBias, l, {KV}});
    out.push_back({n("self_attn.v_proj.weight"), R::VWeight, l, {KV, H}});
    out.push_back({n("self_attn.v_proj.bias"), R::VBias, l, {KV}});
    out.push_back({n("self_attn.o_proj.weight"), R::OWeight, l, {H, Q}});
    out.push_back({n("self_attn.o_proj.bias"), R::OBias, l, {H}});
    out.push_back({n("self_attn.sinks"), R::Sinks, l, {NH}});
    out.push_back({n("post_attention_layernorm.weight"), R::MlpNorm, l, {H}});
    out.push_back({n("mlp.router.weight"), R::RouterWeight, l, {E, H}});
    out.push_back({n("mlp.router.bias"), R::RouterBias, l, {E}});
    if (experts == ExpertStorage::Mxfp4) {
      out.push_back({n("mlp.experts.gate_up_proj_blocks"), R::GateUpBlocks, l, {E, 2 * I, H / 32, 16}});
      out.push_back({n("mlp.experts.gate_up_proj_scales"), R::GateUpScales, l, {E, 2 * I, H / 32}});
      out.push_back({n("mlp.experts.gate_up_proj_bias"), R::GateUpBias, l, {E, 2 * I}});
      out.push_back({n("mlp.experts.down_proj_blocks"), R::DownBlocks, l, {E, H, I / 32, 16}});
      out.push_back({n("mlp.experts.down_proj_scales"), R::DownScales, l, {E, H, I / 32}});
      out.push_back({n("mlp.experts.down_proj_bias"), R::DownBias, l, {E, H}});
    } else {
      out.push_back({n("mlp.experts.gate_up_proj"), R::GateUpDense, l, {E, H, 2 * I}});
      out.push_back({n("mlp.experts.gate_up_proj_bias"), R::GateUpBias, l, {E, 2 * I}});
      out.push_back({n("mlp.experts.down_proj"), R::DownDense, l, {E, I, H}});
      out.push_back({n("mlp.experts.down_proj_bias"), R::DownBias, l, {E, H}});
    }
  }
  out.push_back({"model.norm.weight", R::FinalNorm, -1, {H}});
  out.push_back({"lm_head.weight", R::LmHead, -1, {V, H}});
  return out;
}

OriginalSource original_source(const TensorSpec& s, const ModelConfig& c) {
  using R = TensorRole;
  const int64_t Q = c.q_dim(), KV = c.kv_dim();
  auto b = [&](const char* suffix) { return fmt::format("block.{}.{}", s.layer, suffix); };
  switch (s.role) {
    case R::Embed: return {"embedding.weight"};
    case R::AttnNorm: return {b("attn.norm.scale")};
    case R::QWeight: return {b("attn.qkv.weight"), 0, Q};
    case R::QBias: return {b("attn.qkv.bias"), 0, Q};
    case R::KWeight: return {b("attn.qkv.weight"), Q, Q + KV};
    case R::KBias: return {b("attn.qkv.bias"), Q, Q + KV};
    case R::VWeight: return {b("attn.qkv.weight"), Q + KV, Q + 2 * KV};
    case R::VBias: return {b("attn.qkv.bias"), Q + KV, Q + 2 * KV};
    case R::OWeight: return {b("attn.out.weight")};
    case R::OBias: return {b("attn.out.bias")};
    case R::Sinks: return {b("attn.sinks")};
    case R::MlpNorm: return {b("mlp.norm.scale")};
    case R::RouterWeight: return {b("mlp.gate.weight")};
    case R::RouterBias: return {b("mlp.gate.bias")};
    case R::GateUpBlocks: return {b("mlp.mlp1_weight.blocks")};
    case R::GateUpScales: return {b("mlp.mlp1_weight.scales")};
    case R::GateUpBias: return {b("mlp.mlp1_bias")};
    case R::DownBlocks: return {b("mlp.mlp2_weight.blocks")};
    case R::DownScales: return {b("mlp.mlp2_weight.scales")};
    case R::DownBias: return {b("mlp.mlp2_bias")};
    case R::GateUpDense:
    case R::DownDense: return {};  // the original layout is always MXFP4
    case R::FinalNorm: return {"norm.scale"};
    case R::LmHead: return {"unembedding.weight"};
  }
  return {};
}

}  // namespace gptoss
