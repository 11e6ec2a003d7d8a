// The native format's manifest `gptoss.json` (docs/FORMAT.md): the tensor list with each tensor's file,
// dtype, shape, absolute offset, byte count and XXH3-64 checksum. Parsed strictly: a manifest that
// does not describe a well-formed list is refused here; whether it matches the safetensors files is
// checked by Checkpoint::open.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/dtype.h"
#include "core/status.h"

namespace gptoss {

struct ManifestTensor {
  std::string name;   // Hugging Face name
  std::string file;   // a file name in the checkpoint directory (no directory part)
  DType dtype = DType::U8;
  std::vector<int64_t> shape;
  uint64_t offset = 0;  // absolute byte offset in `file`
  uint64_t nbytes = 0;  // numel x dtype size
  uint64_t xxh3 = 0;    // XXH3-64, seed 0, of the tensor's bytes
};

struct Manifest {
  std::string dtype;         // "mxfp4" | "bf16" | "f32"
  std::string source_layout;
  int64_t num_hidden_layers = 0;
  std::vector<ManifestTensor> tensors;  // in file order, names unique, at least one
};

// `what` names the file in messages. Exposed separately for the fuzzer.
Result<Manifest> parse_manifest(std::string_view text, const std::string& what);
Result<Manifest> load_manifest(const std::string& path);

}  // namespace gptoss
