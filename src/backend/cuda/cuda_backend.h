// The CUDA backend's entry points. Host code includes this header only; it names no CUDA type, so the
// rest of the library builds without the CUDA headers. Compiled when GPTOSS_CUDA is on, into the module
// libgptoss_cuda.so that build/gptoss loads only when it uses the GPU (backend/factory.cpp), and directly
// into the CUDA tests and benchmarks (GPTOSS_WITH_CUDA is defined for them).
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

// What the module gives the backend factory through its one exported symbol, gptoss_cuda_module() (the module
// and the executable are built together, so C++ types cross; `version` catches a stale module file).
inline constexpr int kCudaModuleVersion = 1;
struct CudaModule {
  int version = kCudaModuleVersion;
  bool (*usable)() = nullptr;  // a CUDA device is present and usable
  Result<std::unique_ptr<Backend>> (*create)(const ModelConfig& c, const BackendOptions& o) = nullptr;
  CudaPackStats (*pack_stats)(Backend& b) = nullptr;
};

}  // namespace gptoss

extern "C" const gptoss::CudaModule* gptoss_cuda_module();
