// A weight matrix as the kernels see it, whatever its storage. Shared by the CPU and CUDA backends;
// pointers live in the owning backend's memory space (host mmap for CPU, device memory for CUDA).
#pragma once

#include <cstddef>
#include <cstdint>

namespace gptoss {

enum class WeightType : uint8_t { F32, BF16, MXFP4 };

// Logical shape [rows = out_features, cols = in_features]: y = W x.
//  F32 / BF16, transposed == false: data is row-major [rows, cols] (PyTorch Linear layout).
//  F32 / BF16, transposed == true:  data is row-major [cols, rows] (transformers' dense expert layout
//                                   [in, out], used by unquantized gpt-oss checkpoints).
//  MXFP4: data = blocks [rows, cols/32, 16] u8 (low nibble first), scales = [rows, cols/32] u8 (E8M0).
struct MatrixRef {
  WeightType type = WeightType::F32;
  const void* data = nullptr;
  const uint8_t* scales = nullptr;  // MXFP4 only
  int64_t rows = 0;
  int64_t cols = 0;
  bool transposed = false;
};

// `count` matrices of one shape stored one after another (a layer's experts): expert e's data lies
// e * stride bytes after expert 0's, its MXFP4 scales e * scales_stride bytes after (strides in bytes, at
// least one matrix's size; a checkpoint's may be larger).
struct ExpertStack {
  MatrixRef first;  // expert 0
  size_t stride = 0, scales_stride = 0;
  int count = 0;

  MatrixRef expert(int e) const {
    MatrixRef m = first;
    m.data = static_cast<const uint8_t*>(first.data) + size_t(e) * stride;
    if (m.scales) m.scales += size_t(e) * scales_stride;
    return m;
  }
};

}  // namespace gptoss
