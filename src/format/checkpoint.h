// Opens a gpt-oss checkpoint directory of any supported layout and presents every tensor under its
// Hugging Face name and shape, validated against the config, as zero-copy views into mmapped files.
//
// Layouts (detected in this order):
//   Native       gptoss.json manifest + safetensors (what `gptoss convert` writes by default; docs/FORMAT.md)
//   HuggingFace  model.safetensors.index.json (sharded; a layer may straddle shards) or model.safetensors,
//                experts either MXFP4 (…_blocks/_scales) or dense ([E, in, out] bf16/f32 fine-tunes)
//   Original     openai original/ layout (block.N.… names, fused qkv): DIR/original/ or DIR itself
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "format/config.h"
#include "format/safetensors.h"
#include "format/tensor_names.h"

namespace gptoss {

enum class CheckpointLayout : uint8_t { Native, HuggingFace, Original };
const char* layout_name(CheckpointLayout l);

struct TensorData {
  TensorSpec spec;                 // HF name, role, expected (= actual) shape
  DType dtype;                     // as stored
  std::span<const uint8_t> bytes;  // exactly numel * dtype_size bytes
  size_t file_index;               // into Checkpoint::files()
  std::string source_name;         // name in the file (differs for the original layout)
};

struct CheckpointOptions {
  // Expose only the first n layers (and embed/norm/head): --test-only / --layers. -1: all.
  int max_layers = -1;
};

class Checkpoint {
 public:
  static Result<Checkpoint> open(const std::string& dir, const CheckpointOptions& opts = {});

  const std::string& dir() const { return dir_; }
  CheckpointLayout layout() const { return layout_; }
  ExpertStorage experts() const { return experts_; }
  // The config of what is exposed (num_hidden_layers reduced by max_layers).
  const ModelConfig& config() const { return config_; }
  // The directory holding config.json (DIR or DIR/original).
  const std::string& config_dir() const { return config_dir_; }
  const std::vector<TensorData>& tensors() const { return tensors_; }
  const TensorData* find(std::string_view hf_name) const;
  const std::vector<std::unique_ptr<SafetensorsFile>>& files() const { return files_; }
  uint64_t tensor_bytes() const;  // sum over exposed tensors
  // Dtype of the dense expert weights (BF16 or F32), or U8 for MXFP4.
  DType expert_dtype() const;

 private:
  std::string dir_, config_dir_;
  CheckpointLayout layout_ = CheckpointLayout::HuggingFace;
  ExpertStorage experts_ = ExpertStorage::Mxfp4;
  ModelConfig config_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::vector<TensorData> tensors_;
  std::unordered_map<std::string, size_t> index_;
};

}  // namespace gptoss
