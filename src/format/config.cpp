#include "format/config.h"

#include <cmath>
#include <cstdint>

#include "core/file_io.h"
#include "format/json_util.h"

namespace gptoss {

using json = nlohmann::json;
using L = ConfigLimits;

namespace {

// Reads an integer key into out if present (required keys must exist). Any integer is read in 64
// bits; the range is checked later, per field, in validate().
Status get_int(const json& j, const char* key, int64_t& out, bool required, const std::string& what) {
  auto it = j.find(key);
  if (it == j.end()) {
    if (required) return Error("{}: missing key '{}'", what, key);
    return {};
  }
  if (it->is_number_unsigned()) {
    const uint64_t u = it->get<uint64_t>();
    out = u > uint64_t(INT64_MAX) ? INT64_MAX : int64_t(u);
  } else if (it->is_number_integer()) {
    out = it->get<int64_t>();
  } else {
    return Error("{}: '{}' must be an integer, got {}", what, key, describe_json(*it));
  }
  return {};
}

Status get_float(const json& j, const char* key, double& out, const std::string& what) {
  auto it = j.find(key);
  if (it == j.end()) return {};
  if (!it->is_number()) return Error("{}: '{}' must be a number, got {}", what, key, describe_json(*it));
  out = it->get<double>();
  return {};
}

Status check_range(int64_t v, const char* key, int64_t lo, int64_t hi, const std::string& what) {
  if (v < lo || v > hi) return Error("{}: '{}' is {}, expected {}..{}", what, key, v, lo, hi);
  return {};
}

// The config's integers in 64 bits, before they are narrowed into ModelConfig's ints.
struct RawInts {
  int64_t layers = 0, experts = 0, experts_per_tok = 0, vocab = 0, hidden = 0, intermediate = 0, head_dim = 0,
          heads = 0, kv_heads = 0, sliding_window = 0, max_positions = 131072, original_max_positions = 4096,
          eos = 200002, pad = 199999;
};

Result<ModelConfig> parse_config(const json& j, const std::string& what) {
  if (!j.is_object()) return Error("{}: config is {}, expected a JSON object", what, describe_json(j));
  ModelConfig c;
  RawInts r;
  const bool original = j.contains("num_experts") && !j.contains("num_local_experts");
  GPTOSS_TRY(get_int(j, "num_hidden_layers", r.layers, true, what));
  GPTOSS_TRY(get_int(j, original ? "num_experts" : "num_local_experts", r.experts, true, what));
  if (original) {
    GPTOSS_TRY(get_int(j, "experts_per_token", r.experts_per_tok, true, what));
  } else if (j.contains("num_experts_per_tok")) {
    GPTOSS_TRY(get_int(j, "num_experts_per_tok", r.experts_per_tok, true, what));
  } else {
    GPTOSS_TRY(get_int(j, "experts_per_token", r.experts_per_tok, true, what));
  }
  GPTOSS_TRY(get_int(j, "vocab_size", r.vocab, true, what));
  GPTOSS_TRY(get_int(j, "hidden_size", r.hidden, true, what));
  GPTOSS_TRY(get_int(j, "intermediate_size", r.intermediate, true, what));
  GPTOSS_TRY(get_int(j, "head_dim", r.head_dim, true, what));
  GPTOSS_TRY(get_int(j, "num_attention_heads", r.heads, true, what));
  GPTOSS_TRY(get_int(j, "num_key_value_heads", r.kv_heads, true, what));
  GPTOSS_TRY(get_int(j, "sliding_window", r.sliding_window, true, what));
  GPTOSS_TRY(get_float(j, "swiglu_limit", c.swiglu_limit, what));
  GPTOSS_TRY(get_float(j, "rope_theta", c.rope_theta, what));
  GPTOSS_TRY(get_float(j, "rms_norm_eps", c.rms_norm_eps, what));
  if (original) {
    GPTOSS_TRY(get_int(j, "initial_context_length", r.original_max_positions, false, what));
    GPTOSS_TRY(get_float(j, "rope_scaling_factor", c.rope_factor, what));
    GPTOSS_TRY(get_float(j, "rope_ntk_beta", c.rope_beta_fast, what));
    GPTOSS_TRY(get_float(j, "rope_ntk_alpha", c.rope_beta_slow, what));
    GPTOSS_TRY(check_range(r.original_max_positions, "initial_context_length", 1, L::kMaxPositions, what));
    if (!std::isfinite(c.rope_factor) || c.rope_factor <= 0 || c.rope_factor > double(L::kMaxPositions))
      return Error("{}: 'rope_scaling_factor' is {}, expected a finite number in (0, {}]", what, c.rope_factor,
                   L::kMaxPositions);
    // The context the original model was trained to: initial length x YaRN factor (checked in double,
    // before it becomes an integer).
    const double ctx = double(r.original_max_positions) * c.rope_factor;
    if (ctx < 1 || ctx > double(L::kMaxPositions))
      return Error("{}: initial_context_length {} x rope_scaling_factor {} = {} positions, expected 1..{}", what,
                   r.original_max_positions, c.rope_factor, ctx, L::kMaxPositions);
    r.max_positions = int64_t(ctx);
  } else {
    GPTOSS_TRY(get_int(j, "max_position_embeddings", r.max_positions, false, what));
    auto rs = j.find("rope_scaling");
    if (rs != j.end() && !rs->is_null()) {
      if (!rs->is_object()) return Error("{}: 'rope_scaling' is {}, expected an object", what, describe_json(*rs));
      std::string type = "yarn";
      for (const char* k : {"rope_type", "type"}) {
        auto t = rs->find(k);
        if (t == rs->end()) continue;
        if (!t->is_string()) return Error("{}: rope_scaling.{} is {}, expected a string", what, k, describe_json(*t));
        type = t->get<std::string>();
        break;
      }
      if (type != "yarn")
        return Error("{}: rope_scaling.rope_type {} is not supported (expected 'yarn')", what,
                     describe_json(json(type)));
      GPTOSS_TRY(get_float(*rs, "factor", c.rope_factor, what));
      GPTOSS_TRY(get_float(*rs, "beta_fast", c.rope_beta_fast, what));
      GPTOSS_TRY(get_float(*rs, "beta_slow", c.rope_beta_slow, what));
      GPTOSS_TRY(get_int(*rs, "original_max_position_embeddings", r.original_max_positions, false, what));
      auto t = rs->find("truncate");
      if (t != rs->end()) {
        if (!t->is_boolean())
          return Error("{}: rope_scaling.truncate is {}, expected a boolean", what, describe_json(*t));
        c.rope_truncate = t->get<bool>();
      }
    }
    GPTOSS_TRY(get_int(j, "eos_token_id", r.eos, false, what));
    GPTOSS_TRY(get_int(j, "pad_token_id", r.pad, false, what));
  }
  // Ranges first (so the narrowing below is exact), then the relations between fields.
  GPTOSS_TRY(check_range(r.layers, "num_hidden_layers", 1, L::kMaxLayers, what));
  GPTOSS_TRY(check_range(r.experts, original ? "num_experts" : "num_local_experts", 1, L::kMaxExperts, what));
  GPTOSS_TRY(
      check_range(r.experts_per_tok, original ? "experts_per_token" : "num_experts_per_tok", 1, r.experts, what));
  GPTOSS_TRY(check_range(r.vocab, "vocab_size", 1, L::kMaxVocab, what));
  GPTOSS_TRY(check_range(r.hidden, "hidden_size", 32, L::kMaxHidden, what));
  GPTOSS_TRY(check_range(r.intermediate, "intermediate_size", 32, L::kMaxHidden, what));
  GPTOSS_TRY(check_range(r.head_dim, "head_dim", 2, L::kMaxHeadDim, what));
  GPTOSS_TRY(check_range(r.heads, "num_attention_heads", 1, L::kMaxHeads, what));
  GPTOSS_TRY(check_range(r.kv_heads, "num_key_value_heads", 1, r.heads, what));
  GPTOSS_TRY(check_range(r.max_positions, "max_position_embeddings", 1, L::kMaxPositions, what));
  GPTOSS_TRY(check_range(r.sliding_window, "sliding_window", 1, r.max_positions, what));
  GPTOSS_TRY(check_range(r.original_max_positions, "original_max_position_embeddings", 1, L::kMaxPositions, what));
  GPTOSS_TRY(check_range(r.eos, "eos_token_id", 0, INT32_MAX, what));
  GPTOSS_TRY(check_range(r.pad, "pad_token_id", 0, INT32_MAX, what));
  c.num_hidden_layers = int(r.layers);
  c.num_local_experts = int(r.experts);
  c.num_experts_per_tok = int(r.experts_per_tok);
  c.vocab_size = int(r.vocab);
  c.hidden_size = int(r.hidden);
  c.intermediate_size = int(r.intermediate);
  c.head_dim = int(r.head_dim);
  c.num_attention_heads = int(r.heads);
  c.num_key_value_heads = int(r.kv_heads);
  c.max_position_embeddings = int(r.max_positions);
  c.sliding_window = int(r.sliding_window);
  c.rope_original_max_position = int(r.original_max_positions);
  c.eos_token_id = int(r.eos);
  c.pad_token_id = int(r.pad);

  c.layer_is_sliding.assign(size_t(c.num_hidden_layers), false);
  auto lt = j.find("layer_types");
  if (lt != j.end()) {
    if (!lt->is_array() || lt->size() != size_t(c.num_hidden_layers))
      return Error("{}: 'layer_types' is {}, expected an array of num_hidden_layers = {} entries", what,
                   describe_json(*lt), c.num_hidden_layers);
    for (size_t i = 0; i < lt->size(); ++i) {
      const json& e = (*lt)[i];
      if (e == "sliding_attention") c.layer_is_sliding[i] = true;
      else if (e == "full_attention") c.layer_is_sliding[i] = false;
      else
        return Error("{}: layer_types[{}] is {}, expected \"sliding_attention\" or \"full_attention\"", what, i,
                     describe_json(e));
    }
  } else {
    for (int i = 0; i < c.num_hidden_layers; ++i) c.layer_is_sliding[size_t(i)] = (i % 2 == 0);
  }
  GPTOSS_TRY(c.validate(what));
  return c;
}

}  // namespace

Status ModelConfig::validate(const std::string& what) const {
  GPTOSS_TRY(check_range(num_hidden_layers, "num_hidden_layers", 1, L::kMaxLayers, what));
  GPTOSS_TRY(check_range(num_local_experts, "num_local_experts", 1, L::kMaxExperts, what));
  GPTOSS_TRY(check_range(num_experts_per_tok, "num_experts_per_tok", 1, num_local_experts, what));
  GPTOSS_TRY(check_range(vocab_size, "vocab_size", 1, L::kMaxVocab, what));
  GPTOSS_TRY(check_range(hidden_size, "hidden_size", 32, L::kMaxHidden, what));
  GPTOSS_TRY(check_range(intermediate_size, "intermediate_size", 32, L::kMaxHidden, what));
  GPTOSS_TRY(check_range(head_dim, "head_dim", 2, L::kMaxHeadDim, what));
  GPTOSS_TRY(check_range(num_attention_heads, "num_attention_heads", 1, L::kMaxHeads, what));
  GPTOSS_TRY(check_range(num_key_value_heads, "num_key_value_heads", 1, num_attention_heads, what));
  GPTOSS_TRY(check_range(max_position_embeddings, "max_position_embeddings", 1, L::kMaxPositions, what));
  GPTOSS_TRY(check_range(sliding_window, "sliding_window", 1, max_position_embeddings, what));
  GPTOSS_TRY(check_range(rope_original_max_position, "original_max_position_embeddings", 1, L::kMaxPositions, what));
  const int64_t attention_dim = int64_t(num_attention_heads) * int64_t(head_dim);
  if (attention_dim > L::kMaxAttentionDim)
    return Error("{}: num_attention_heads {} x head_dim {} = {}, expected at most {}", what, num_attention_heads,
                 head_dim, attention_dim, L::kMaxAttentionDim);
  if (num_attention_heads % num_key_value_heads != 0)
    return Error("{}: num_attention_heads {} is not a multiple of num_key_value_heads {}", what, num_attention_heads,
                 num_key_value_heads);
  if (head_dim % 2 != 0) return Error("{}: head_dim {} must be even for RoPE", what, head_dim);
  if (hidden_size % 32 != 0 || intermediate_size % 32 != 0)
    return Error("{}: hidden_size {} and intermediate_size {} must be multiples of 32 (MXFP4 blocks)", what,
                 hidden_size, intermediate_size);
  // YaRN takes logs of theta, factor and (original context / beta): all must be finite and positive.
  const std::pair<double, const char*> positive[] = {{rope_factor, "rope_scaling.factor"},
                                                     {rope_beta_fast, "rope_scaling.beta_fast"},
                                                     {rope_beta_slow, "rope_scaling.beta_slow"},
                                                     {swiglu_limit, "swiglu_limit"},
                                                     {rms_norm_eps, "rms_norm_eps"}};
  for (const auto& [v, k] : positive)
    if (!std::isfinite(v) || v <= 0) return Error("{}: '{}' is {}, expected a finite positive number", what, k, v);
  if (!std::isfinite(rope_theta) || rope_theta <= 1)
    return Error("{}: 'rope_theta' is {}, expected a finite number above 1", what, rope_theta);
  if (rms_norm_eps >= 1) return Error("{}: 'rms_norm_eps' is {}, expected below 1", what, rms_norm_eps);
  if (layer_is_sliding.size() != size_t(num_hidden_layers))
    return Error("{}: {} layer types for {} layers", what, layer_is_sliding.size(), num_hidden_layers);
  return {};
}

Result<ModelConfig> ModelConfig::from_json(const json& j, const std::string& what) {
  // nlohmann's typed accessors throw on a wrong type, allocation may fail: keep both inside the library.
  try {
    return parse_config(j, what);
  } catch (const std::exception& e) {
    return Error("{}: invalid config: {}", what, e.what());
  }
}

Result<ModelConfig> ModelConfig::from_json_text(std::string_view text, const std::string& what) {
  GPTOSS_ASSIGN(json j, parse_json_strict(text, what));
  return from_json(j, what);
}

Result<ModelConfig> ModelConfig::load(const std::string& path) {
  GPTOSS_ASSIGN(std::string text, read_regular_file(path, kMaxJsonFileBytes));
  return from_json_text(text, path);
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
