// The backend factory (create_backend and cuda_usable are declared in model/backend.h, the contract) and
// the CUDA module it loads. The CUDA backend lives in libgptoss_cuda.so beside the executable, loaded on the
// first use of the GPU, so that a process that never touches it does not load the CUDA runtime and cuBLAS
// (about 0.3 s and 200 MB at every start otherwise). Programs that link the CUDA objects themselves (the
// unit tests, benchmarks) use those instead: one copy of the backend per process either way.
#pragma once

#include "backend/cuda/cuda_backend.h"

namespace gptoss {

// The CUDA module: loaded once (later calls return the same result), or why it cannot be.
Result<const CudaModule*> cuda_module();

}  // namespace gptoss
