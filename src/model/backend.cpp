#include "model/backend.h"

#include "backend/cpu/cpu_backend.h"
#ifdef GPTOSS_WITH_CUDA
#include <cuda_runtime_api.h>

#include "backend/cuda/cuda_backend.h"
#endif

namespace gptoss {

bool cuda_available() {
#ifdef GPTOSS_WITH_CUDA
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
#else
  return false;
#endif
}

Result<std::unique_ptr<Backend>> create_backend(const ModelConfig& c, const BackendOptions& o) {
  if (o.device == "cpu") return create_cpu_backend(c, o);
  if (o.device == "cuda") {
#ifdef GPTOSS_WITH_CUDA
    return create_cuda_backend(c, o);
#else
    return Error("device 'cuda': this build of gptoss has no CUDA backend (configure with -DGPTOSS_CUDA=ON)");
#endif
  }
  return Error("unknown device '{}' (expected cpu or cuda)", o.device);
}

}  // namespace gptoss
