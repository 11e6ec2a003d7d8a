#include "format/config.h"

#include "core/file_io.h"

#include <fstream>
#include <sstream>

namespace gptoss {

using json = nlohmann::json;

namespace {

// Reads an integer key; `required` keys must exist. Returns false and sets err on a type error.
Status get_int(const json& j, const char* key, int& out, bool required, const std::string& what) {
  auto it = j.find(key);
  if (it == j.end()) {
    if (required) return Error("{}: missing key '{}'", what, key);
    return {};
  }
  if (!it->is_number_integer() || it->get<int64_t>() < 0 || it->get<int64_t>() > (1ll << 31) - 1)
    return Error("{}: '{}' must be a non-negative integer, got {}", what, key, it->dump());
  out = int(it->get<int64_t>());
  return {};
}

Status get_float(const json& j, const char* key, double& out, const std::string& what) {
  auto it = j.find(key);
  if (it == j.end()) return {};
  if (!it->is_number()) return Error("{}: '{}' must be a number, got {}", what, key, it->dump());
  out = it->get<double>();
  return {};
}

Status check_positive(int v, const char* key, const std::string& what) {
  if (v <= 0) return Error("{}: '{}' must be positive, got {}", what, key, v);
  return {};
}

}  // namespace

namespace {
Result<ModelConfig> parse_config(const json& j, const std::string& what);
}

Result<ModelConfig> ModelConfig::from_json(const json& j, const std::string& what) {
  // nlohmann's typed accessors throw on a wrong type; keep that inside the library.
  try {
    return parse_config(j, what);
  } catch (const std::exception& e) {
    return Error("{}: invalid config: {}", what, e.what());
  }
}

namespace {
Result<ModelConfig> parse_config(const json& j, const std::string& what) {
  if (!j.is_object()) return Error("{}: config is not a JSON object", what);
  ModelConfig c;
  const bool original = j.contains("num_experts") && !j.contains("num_local_experts");
  GPTOSS_TRY(get_int(j, "num_hidden_layers", c.num_hidden_layers, true, what));
  GPTOSS_TRY(get_int(j, original ? "num_experts" : "num_local_experts", c.num_local_experts, true, what));
  if (original) {
    GPTOSS_TRY(get_int(j, "experts_per_token", c.num_experts_per_tok, true, what));
  } else if (j.contains("num_experts_per_tok")) {
    GPTOSS_TRY(get_int(j, "num_experts_per_tok", c.num_experts_per_tok, true, what));
  } else {
    GPTOSS_TRY(get_int(j, "experts_per_token", c.num_experts_per_tok, true, what));
  }
  GPTOSS_TRY(get_int(j, "vocab_size", c.vocab_size, true, what));
  GPTOSS_TRY(get_int(j, "hidden_size", c.hidden_size, true, what));
  GPTOSS_TRY(get_int(j, "intermediate_size", c.intermediate_size, true, what));
  GPTOSS_TRY(get_int(j, "head_dim", c.head_dim, true, what));
  GPTOSS_TRY(get_int(j, "num_attention_heads", c.num_attention_heads, true, what));
  GPTOSS_TRY(get_int(j, "num_key_value_heads", c.num_key_value_heads, true, what));
  GPTOSS_TRY(get_int(j, "sliding_window", c.sliding_window, true, what));
  GPTOSS_TRY(get_float(j, "swiglu_limit", c.swiglu_limit, what));
  GPTOSS_TRY(get_float(j, "rope_theta", c.rope_theta, what));
  GPTOSS_TRY(get_float(j, "rms_norm_eps", c.rms_norm_eps, what));
  if (original) {
    GPTOSS_TRY(get_int(j, "initial_context_length", c.rope_original_max_position, false, what));
    GPTOSS_TRY(get_float(j, "rope_scaling_factor", c.rope_factor, what));
    GPTOSS_TRY(get_float(j, "rope_ntk_beta", c.rope_beta_fast, what));
    GPTOSS_TRY(get_float(j, "rope_ntk_alpha", c.rope_beta_slow, what));
    c.max_position_embeddings = int(double(c.rope_original_max_position) * c.rope_factor);
  } else {
    GPTOSS_TRY(get_int(j, "max_position_embeddings", c.max_position_embeddings, false, what));
    auto rs = j.find("rope_scaling");
    if (rs != j.end() && !rs->is_null()) {
      if (!rs->is_object()) return Error("{}: 'rope_scaling' must be an object", what);
      std::string type = rs->value("rope_type", rs->value("type", std::string("yarn")));
      if (type != "yarn") return Error("{}: rope_scaling.rope_type '{}' is not supported (expected 'yarn')", what, type);
      GPTOSS_TRY(get_float(*rs, "factor", c.rope_factor, what));
      GPTOSS_TRY(get_float(*rs, "beta_fast", c.rope_beta_fast, what));
      GPTOSS_TRY(get_float(*rs, "beta_slow", c.rope_beta_slow, what));
      GPTOSS_TRY(get_int(*rs, "original_max_position_embeddings", c.rope_original_max_position, false, what));
      auto t = rs->find("truncate");
      if (t != rs->end()) {
        if (!t->is_boolean()) return Error("{}: rope_scaling.truncate must be a boolean", what);
        c.rope_truncate = t->get<bool>();
      }
    }
    GPTOSS_TRY(get_int(j, "eos_token_id", c.eos_token_id, false, what));
    GPTOSS_TRY(get_int(j, "pad_token_id", c.pad_token_id, false, what));
  }
  for (auto [v, k] : {std::pair{c.num_hidden_layers, "num_hidden_layers"}, {c.num_local_experts, "num_local_experts"},
                      {c.num_experts_per_tok, "num_experts_per_tok"}, {c.vocab_size, "vocab_size"},
                      {c.hidden_size, "hidden_size"}, {c.intermediate_size, "intermediate_size"},
                      {c.head_dim, "head_dim"}, {c.num_attention_heads, "num_attention_heads"},
                      {c.num_key_value_heads, "num_key_value_heads"}, {c.sliding_window, "sliding_window"}})
    GPTOSS_TRY(check_positive(v, k, what));
  if (c.num_experts_per_tok > c.num_local_experts)
    return Error("{}: num_experts_per_tok {} exceeds num_local_experts {}", what, c.num_experts_per_tok,
                 c.num_local_experts);
  if (c.num_attention_heads % c.num_key_value_heads != 0)
    return Error("{}: num_attention_heads {} is not a multiple of num_key_value_heads {}", what,
                 c.num_attention_heads, c.num_key_value_heads);
  if (c.head_dim % 2 != 0) return Error("{}: head_dim {} must be even for RoPE", what, c.head_dim);
  if (c.hidden_size % 32 != 0 || c.intermediate_size % 32 != 0)
    return Error("{}: hidden_size {} and intermediate_size {} must be multiples of 32 (MXFP4 blocks)", what,
                 c.hidden_size, c.intermediate_size);
  if (c.rope_factor <= 0 || c.rope_theta <= 1) return Error("{}: invalid rope_theta/factor", what);
  c.layer_is_sliding.resize(size_t(c.num_hidden_layers));
  auto lt = j.find("layer_types");
  if (lt != j.end()) {
    if (!lt->is_array() || lt->size() != size_t(c.num_hidden_layers))
      return Error("{}: layer_types must list {} entries", what, c.num_hidden_layers);
    for (size_t i = 0; i < lt->size(); ++i) {
      const json& e = (*lt)[i];
      if (e == "sliding_attention") c.layer_is_sliding[i] = true;
      else if (e == "full_attention") c.layer_is_sliding[i] = false;
      else return Error("{}: layer_types[{}] is {}, expected sliding_attention or full_attention", what, i, e.dump());
    }
  } else {
    for (int i = 0; i < c.num_hidden_layers; ++i) c.layer_is_sliding[size_t(i)] = (i % 2 == 0);
  }
  return c;
}
}  // namespace

Result<ModelConfig> ModelConfig::load(const std::string& path) {
  GPTOSS_ASSIGN(std::string text, read_file(path));
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded()) return Error("{}: config is not valid JSON", path);
  return from_json(j, path);
}

json ModelConfig::to_hf_json(bool mxfp4_experts) const {
  json layer_types = json::array();
  for (bool s : layer_is_sliding) layer_types.push_back(s ? "sliding_attention" : "full_attention");
  json j = {
      {"architectures", {"GptOssForCausalLM"}},
      {"model_type", "gpt_oss"},
      {"attention_bias", true},
      {"attention_dropout", 0.0},
      {"eos_token_id", eos_token_id},
      {"pad_token_id", pad_token_id},
      {"hidden_act", "silu"},
      {"head_dim", head_dim},
      {"hidden_size", hidden_size},
      {"initializer_range", 0.02},
      {"intermediate_size", intermediate_size},
      {"max_position_embeddings", max_position_embeddings},
      {"num_attention_heads", num_attention_heads},
      {"num_experts_per_tok", num_experts_per_tok},
      {"experts_per_token", num_experts_per_tok},
      {"num_hidden_layers", num_hidden_layers},
      {"num_key_value_heads", num_key_value_heads},
      {"num_local_experts", num_local_experts},
      {"layer_types", layer_types},
      {"output_router_logits", false},
      {"rms_norm_eps", rms_norm_eps},
      {"rope_scaling",
       {{"rope_type", "yarn"},
        {"factor", rope_factor},
        {"beta_fast", rope_beta_fast},
        {"beta_slow", rope_beta_slow},
        {"original_max_position_embeddings", rope_original_max_position},
        {"truncate", rope_truncate}}},
      {"rope_theta", rope_theta},
      {"router_aux_loss_coef", 0.9},
      {"sliding_window", sliding_window},
      {"swiglu_limit", swiglu_limit},
      {"tie_word_embeddings", false},
      {"torch_dtype", "bfloat16"},
      {"use_cache", true},
      {"vocab_size", vocab_size},
  };
  if (mxfp4_experts)
    j["quantization_config"] = {
        {"quant_method", "mxfp4"},
        {"modules_to_not_convert",
         {"model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"}}};
  return j;
}

ModelConfig ModelConfig::first_layers(int n) const {
  ModelConfig c = *this;
  c.num_hidden_layers = n;
  c.layer_is_sliding.resize(size_t(n));
  return c;
}

}  // namespace gptoss
