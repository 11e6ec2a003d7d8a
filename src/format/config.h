// Model configuration, read from a Hugging Face config.json or an openai original/config.json
// (docs/MODEL.md §1). Field names follow the Hugging Face keys.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace gptoss {

// Bounds on config.json values: each a few times the largest gpt-oss (or any published MoE) value, and
// small enough that every size derived from them (tensor shapes, byte counts, KV cache rows) is
// computed without overflow in 64 bits and every per-layer table stays small.
struct ConfigLimits {
  static constexpr int64_t kMaxLayers = 1024;            // gpt-oss-120b: 36
  static constexpr int64_t kMaxExperts = 1024;           // 128
  static constexpr int64_t kMaxVocab = 1 << 22;          // 201088
  static constexpr int64_t kMaxHidden = 1 << 16;         // 2880 (also intermediate_size)
  static constexpr int64_t kMaxHeadDim = 1024;           // 64
  static constexpr int64_t kMaxHeads = 1024;             // 64
  static constexpr int64_t kMaxAttentionDim = 1 << 16;   // num_attention_heads * head_dim: 4096
  static constexpr int64_t kMaxPositions = 1 << 24;      // 131072 (also sliding_window <= max positions)
};

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

  // Parses either flavour (detected by its keys) and checks every value against ConfigLimits; an
  // error names the field, its value and the bound. `what` names the file in messages.
  static Result<ModelConfig> from_json(const nlohmann::json& j, const std::string& what);
  // The same from the file's text (strict JSON: json_util.h), and from a file (a regular file of
  // at most kMaxJsonFileBytes).
  static Result<ModelConfig> from_json_text(std::string_view text, const std::string& what);
  static Result<ModelConfig> load(const std::string& path);
  // Checks the values of a config built in code (from_json runs it too).
  Status validate(const std::string& what) const;
  // Hugging Face config.json for this configuration; `quant` adds the MXFP4 quantization_config.
  nlohmann::json to_hf_json(bool mxfp4_experts) const;
  // Same model restricted to its first n layers (--test-only / --layers).
  ModelConfig first_layers(int n) const;
};

}  // namespace gptoss
