// The one table of gpt-oss tensors: Hugging Face names, roles, the shape each must have for a given
// config, and where each comes from in the openai original/ layout (reference §2). The converter,
// the loader and `gptoss inspect` all use this table.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "format/config.h"

namespace gptoss {

enum class TensorRole : uint8_t {
  Embed,         // [V, H]
  AttnNorm,      // [H]
  QWeight,       // [nh*d, H]
  QBias,         // [nh*d]
  KWeight,       // [nkv*d, H]
  KBias,         // [nkv*d]
  VWeight,       // [nkv*d, H]
  VBias,         // [nkv*d]
  OWeight,       // [H, nh*d]
  OBias,         // [H]
  Sinks,         // [nh]
  MlpNorm,       // [H]
  RouterWeight,  // [E, H]
  RouterBias,    // [E]
  GateUpBlocks,  // [E, 2I, H/32, 16] u8, rows interleaved gate0, up0, gate1, ...
  GateUpScales,  // [E, 2I, H/32] u8
  GateUpBias,    // [E, 2I]
  DownBlocks,    // [E, H, I/32, 16] u8
  DownScales,    // [E, H, I/32] u8
  DownBias,      // [E, H]
  GateUpDense,   // [E, H, 2I]  transformers' unquantized layout [E, in, out]
  DownDense,     // [E, I, H]
  FinalNorm,     // [H]
  LmHead,        // [V, H]
};

// How the experts are stored: MXFP4 blocks + scales, or dense float [E, in, out].
enum class ExpertStorage : uint8_t { Mxfp4, Dense };

struct TensorSpec {
  std::string name;  // Hugging Face name, e.g. "model.layers.3.self_attn.q_proj.weight"
  TensorRole role;
  int layer;  // -1 for embed / final norm / lm_head
  std::vector<int64_t> shape;
  bool quantized() const;  // u8 MXFP4 blocks or scales
};

// Every tensor of the model in file order: embed, layers 0..L-1, norm, lm_head.
std::vector<TensorSpec> model_tensor_specs(const ModelConfig& c, ExpertStorage experts);

// Where a Hugging Face tensor lives in the openai original/ checkpoint: a tensor name and, for
// q/k/v (fused as attn.qkv), the row range to take. rows_end == -1: the whole tensor.
struct OriginalSource {
  std::string name;
  int64_t rows_begin = 0;
  int64_t rows_end = -1;
};
OriginalSource original_source(const TensorSpec& s, const ModelConfig& c);

}  // namespace gptoss
