// Minimal NumPy .npy (format 1.0) for float32 C-order arrays, and .npz archives of them: `gptoss logits` writes
// them, tests read the transformers goldens.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"

namespace gptoss {

Status npy_write_f32(const std::string& path, const std::vector<int64_t>& shape, const float* data);

// An .npz (numpy.savez layout): a zip of NAME.npy members, stored uncompressed. `data` must stay valid during
// the call.
struct NpzMember {
  std::string name;
  std::vector<int64_t> shape;
  const float* data = nullptr;
};
Status npz_write_f32(const std::string& path, const std::vector<NpzMember>& members);

struct NpyArray {
  std::vector<int64_t> shape;
  std::vector<float> data;
};
Result<NpyArray> npy_read_f32(const std::string& path);

}  // namespace gptoss
