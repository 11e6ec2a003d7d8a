// Model configuration, read from a Hugging Face config.json or an openai original/config.json
// (docs/MODEL.md §1). Field names follow the Hugging Face keys.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/status.h"

namespace gptoss {

struct ModelConfig {
  int num_hidden_layers = 0;
  int num_local_experts = 0;
  int num_experts_per_tok = 0;
  int vocab_size = 0;
  int hidden_size = 0;
  int intermediate_size = 0;  // per expert
  int head_dim = 0;
  int num_attention_heads = 0;
  int num_key_value_heads = 0;
  int sliding_window = 0;
  int max_position_embeddings = 131072;
  double rms_norm_eps = 1e-5;
  double swiglu_limit = 7.0;
  double rope_theta = 150000.0;
  // YaRN (rope_scaling): factor, beta_fast, beta_slow, original context; truncate=false keeps the
  // correction range fractional (reference §4.4).
  double rope_factor = 32.0;
  double rope_beta_fast = 32.0;
  double rope_beta_slow = 1.0;
  int rope_original_max_position = 4096;
  bool rope_truncate = false;
  std::vector<bool> layer_is_sliding;  // even layers slide in gpt-oss
  int eos_token_id = 200002;
  int pad_token_id = 199999;

  int q_dim() const { return num_attention_heads * head_dim; }
  int kv_dim() const { return num_key_value_heads * head_dim; }

  // Parses either flavour (detected by its keys) and checks every value for sanity.
  static Result<ModelConfig> from_json(const nlohmann::json& j, const std::string& what);
  static Result<ModelConfig> load(const std::string& path);
  // Hugging Face config.json for this configuration; `quant` adds the MXFP4 quantization_config.
  nlohmann::json to_hf_json(bool mxfp4_experts) const;
  // Same model restricted to its first n layers (--test-only / --layers).
  ModelConfig first_layers(int n) const;
};

}  // namespace gptoss
