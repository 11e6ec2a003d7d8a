// The module's one exported entry point (see cuda_backend.h); backend/factory.cpp finds it.
#include <cuda_runtime_api.h>

#include "backend/cuda/cuda_backend.h"

namespace gptoss {
namespace {

bool cuda_device_usable() {
  int n = 0;
  const bool ok = cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
  cudaGetLastError();  // a failed query leaves its error behind: clear it for the next CUDA call
  return ok;
}

const CudaModule kModule{kCudaModuleVersion, cuda_device_usable, create_cuda_backend, cuda_pack_stats};

}  // namespace
}  // namespace gptoss

extern "C" __attribute__((visibility("default"))) const gptoss::CudaModule* gptoss_cuda_module() {
  return &gptoss::kModule;
}
