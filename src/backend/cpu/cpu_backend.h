// The CPU backend: weights used in place from the mmapped checkpoint, SIMD kernels from matmul.h,
// all cores through one ThreadPool. It is also the reference every CUDA op is tested against.
#pragma once

#include <memory>

#include "model/backend.h"

namespace gptoss {

Result<std::unique_ptr<Backend>> create_cpu_backend(const ModelConfig& c, const BackendOptions& o);

}  // namespace gptoss
