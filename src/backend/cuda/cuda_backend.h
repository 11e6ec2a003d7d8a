// The CUDA backend's entry point. Host code includes this header only; it names no CUDA type, so the
// rest of the library builds without the CUDA headers. Compiled when GPTOSS_CUDA is on
// (GPTOSS_WITH_CUDA is then defined for every target that links gptoss_lib).
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "model/backend.h"

namespace gptoss {

// Opens device 0 (or the first visible device), creates its stream and cuBLAS handle. Fails with a
// clear message when no CUDA device is usable. gpu_memory_limit (bytes, 0 = none) caps what upload()
// and create_kv_cache() may take.
Result<std::unique_ptr<Backend>> create_cuda_backend(const ModelConfig& c, const BackendOptions& o);

// Whether a CUDA device is present and usable (for tests and the CLI's default device).
bool cuda_device_available();

// Tests and benchmarks: copies `bytes` host bytes into device memory owned by `b` (a CUDA backend).
Result<void*> cuda_upload_bytes(Backend& b, const void* host, size_t bytes);

// The device name of a CUDA backend (empty for other backends).
std::string cuda_device_name(Backend& b);

}  // namespace gptoss
