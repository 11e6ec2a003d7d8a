// libFuzzer entry point for config.json: arbitrary text must give a config whose every derived size is
// in bounds, or an error Status, never a crash, a hang or an unbounded allocation.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "format/config.h"
#include "format/tensor_names.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using gptoss::ConfigLimits;
  auto r = gptoss::ModelConfig::from_json_text(std::string_view(reinterpret_cast<const char*>(data), size),
                                               "config.json");
  if (!r.ok()) {
    if (r.status().message().size() > 1000) std::abort();  // errors describe values briefly
    return 0;
  }
  const auto& c = *r;
  if (c.num_hidden_layers < 1 || c.num_hidden_layers > ConfigLimits::kMaxLayers) std::abort();
  if (int64_t(c.num_attention_heads) * c.head_dim > ConfigLimits::kMaxAttentionDim) std::abort();
  if (c.q_dim() <= 0 || c.kv_dim() <= 0 || c.sliding_window > c.max_position_embeddings) std::abort();
  if (c.layer_is_sliding.size() != size_t(c.num_hidden_layers)) std::abort();
  // The tensor table derived from it: every shape positive.
  for (const auto& s : gptoss::model_tensor_specs(c, gptoss::ExpertStorage::Mxfp4))
    for (int64_t d : s.shape)
      if (d <= 0) std::abort();
  return 0;
}
