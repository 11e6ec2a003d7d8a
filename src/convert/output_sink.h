// Where converted tensors go. The converter declares every output tensor up front, then streams
// their bytes in declaration order; a sink decides the files. One sink per --format:
//   safetensors shards + index (native and safetensors formats; native adds the gptoss.json manifest)
//   Orbax PyTree (orbax format: jax_params/ with one zarr array per leaf)
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/status.h"
#include "format/safetensors.h"

namespace gptoss {

class OutputSink {
 public:
  virtual ~OutputSink() = default;
  // Declares every tensor, in the order its bytes will arrive.
  virtual Status begin(const std::vector<TensorDecl>& tensors) = 0;
  // Bytes of the declared tensors, in order; a call may span tensors.
  virtual Status append(const void* data, size_t n) = 0;
  // All bytes written: close, fsync, write the index/metadata. checksums[i] = xxh3-64 of tensor i.
  virtual Status finish(const std::vector<uint64_t>& checksums) = 0;
  // Data files written so far (relative names), for the summary.
  virtual size_t files_written() const = 0;
};

struct SafetensorsSinkOptions {
  uint64_t max_shard_bytes = 4ull << 30;  // a tensor larger than this gets a shard of its own
  // Non-null: also write gptoss.json (docs/FORMAT.md) with these top-level keys plus the tensor list.
  std::unique_ptr<nlohmann::ordered_json> manifest;
};

// Shards named model-00001-of-0000N.safetensors (1-based, as transformers' save_pretrained names
// them) and model.safetensors.index.json, in `dir`, tensor data 64-byte aligned.
std::unique_ptr<OutputSink> make_safetensors_sink(std::string dir, SafetensorsSinkOptions opts);
// An Orbax checkpoint in dir/jax_params/; leaf names are the dotted Hugging Face names.
std::unique_ptr<OutputSink> make_orbax_sink(std::string dir);

// Writes a small file and fsyncs it (configs, index, manifest).
Status write_file_synced(const std::string& path, const std::string& text);

}  // namespace gptoss
