#include "backend/factory.h"

#include <dlfcn.h>
#include <unistd.h>

#include <filesystem>

#include "backend/cpu/cpu_backend.h"

// Defined where the CUDA objects are linked in (tests, benchmarks); null in build/gptoss, which dlopen()s them.
extern "C" const gptoss::CudaModule* gptoss_cuda_module() __attribute__((weak));

namespace gptoss {

namespace {

// The NVIDIA driver is installed: only then is loading the CUDA runtime worth its cost.
bool nvidia_driver_present() {
  return access("/dev/nvidiactl", F_OK) == 0 || access("/proc/driver/nvidia/version", F_OK) == 0;
}

Result<const CudaModule*> load_cuda_module() {
  if (gptoss_cuda_module) return gptoss_cuda_module();
#ifndef GPTOSS_CUDA_MODULE
  return Error("device 'cuda': this build of gptoss has no CUDA backend (configure with -DGPTOSS_CUDA=ON)");
#else
  std::error_code ec;
  const std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  const std::string path = (ec ? std::filesystem::path(".") : exe.parent_path()) / GPTOSS_CUDA_MODULE;
  void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!h) return Error("device 'cuda': cannot load the CUDA backend: {}", dlerror());
  using Entry = const CudaModule* (*)();
  auto entry = reinterpret_cast<Entry>(dlsym(h, "gptoss_cuda_module"));
  if (!entry) return Error("device 'cuda': {} has no gptoss_cuda_module()", path);
  const CudaModule* m = entry();
  if (!m || m->version != kCudaModuleVersion)
    return Error("device 'cuda': {} is from another build of gptoss (module version {}, expected {})", path,
                 m ? m->version : -1, kCudaModuleVersion);
  return m;
#endif
}

}  // namespace

Result<const CudaModule*> cuda_module() {
  static const Result<const CudaModule*> loaded = load_cuda_module();
  return loaded;
}

bool cuda_usable() {
  if (!gptoss_cuda_module && !nvidia_driver_present()) return false;
  auto m = cuda_module();
  return m.ok() && (*m)->usable();
}

Result<std::unique_ptr<Backend>> create_backend(const ModelConfig& c, const BackendOptions& o) {
  if (o.device == "cpu") return create_cpu_backend(c, o);
  if (o.device == "cuda") {
    GPTOSS_ASSIGN(const CudaModule* m, cuda_module());
    return m->create(c, o);
  }
  return Error("unknown device '{}' (expected cpu or cuda)", o.device);
}

}  // namespace gptoss
