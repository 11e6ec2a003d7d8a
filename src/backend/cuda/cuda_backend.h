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

// Tests: packs a bf16 device matrix (from cuda_upload_bytes) losslessly as upload() packs the projections and
// the output head; the returned ref reads it packed in every op of `b`.
Result<MatrixRef> cuda_pack_bf16(Backend& b, const MatrixRef& m);

// What upload() packed (nothing unless BackendOptions::gpu_pack_bf16): matrices, their weights, the weights
// kept as escapes, and the bytes the packed form takes on the device.
struct CudaPackStats {
  size_t matrices = 0, weights = 0, escapes = 0, bytes = 0;
};
CudaPackStats cuda_pack_stats(Backend& b);

// The device name of a CUDA backend (empty for other backends).
std::string cuda_device_name(Backend& b);

}  // namespace gptoss
