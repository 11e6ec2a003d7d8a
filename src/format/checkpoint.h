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
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/progress.h"
#include "format/config.h"
#include "format/manifest.h"
#include "format/safetensors.h"
#include "format/tensor_names.h"
#include "gptoss/options.h"

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

// A tensor of a native checkpoint with the checksum its manifest records for it.
struct ChecksummedTensor {
  std::string name;
  size_t file_index;               // into Checkpoint::files()
  std::span<const uint8_t> bytes;  // the tensor's bytes in the mapping
  uint64_t xxh3;                   // what gptoss.json says
};

class Checkpoint {
 public:
  // Never throws: allocation failures and filesystem exceptions come back as errors too.
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

  // Native layout: every tensor of the manifest (all layers, whatever max_layers exposes), already
  // cross-checked with the safetensors headers (same names, files, dtypes, shapes, offsets). Empty
  // for the other layouts.
  const std::vector<ChecksummedTensor>& checksummed() const { return checksummed_; }
  // The manifest checksum of an exposed tensor (by Hugging Face name); nullptr when there is none.
  const ChecksummedTensor* checksum_of(std::string_view hf_name) const;
  // Hashes every tensor of checksummed() (the whole native checkpoint) and fails on the first
  // mismatch with one line naming the file and tensor; also fails when the layout is not native.
  // `progress` (optional) counts the bytes hashed.
  Status verify_checksums(Progress* progress = nullptr) const;
  // Fails when an input file became shorter than its mapping (someone truncated it): reading it
  // then would fault. Cheap (one fstat per file).
  Status check_files_unchanged() const;

 private:
  std::string dir_, config_dir_;
  CheckpointLayout layout_ = CheckpointLayout::HuggingFace;
  ExpertStorage experts_ = ExpertStorage::Mxfp4;
  ModelConfig config_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::vector<TensorData> tensors_;
  std::unordered_map<std::string, size_t> index_;
  std::vector<ChecksummedTensor> checksummed_;
  std::unordered_map<std::string, size_t> checksum_index_;
  int full_layers_ = 0;  // config.json's num_hidden_layers (config_ may expose fewer)

  // name in a file -> (index into files_, its header entry)
  using TensorLocations = std::unordered_map<std::string, std::pair<size_t, const TensorInfo*>>;
  static Result<Checkpoint> open_impl(const std::string& dir, const CheckpointOptions& opts);
  Status load_manifest_checksums(const TensorLocations& where);
};

// XXH3-64 of bytes that lie in a file mapping; false when the mapping faulted (the file shrank).
bool xxh3_of_mapped(std::span<const uint8_t> bytes, uint64_t& out, Progress* progress = nullptr,
                    const MappedFile* drop_after = nullptr);

}  // namespace gptoss
