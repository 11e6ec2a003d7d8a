// The CUDA backend's memory: every device allocation goes through one DeviceMemory (the --gpu-memory-limit
// accounting, errors that say what the memory was for) and is freed with it; DeviceScratch is a growable buffer
// over it, PinnedBuffer a growable page-locked host buffer. Host code only (no kernels).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <vector>

#include "core/status.h"

namespace gptoss::cuda_impl {

class DeviceMemory {
 public:
  explicit DeviceMemory(size_t limit = 0) : limit_(limit) {}
  DeviceMemory(const DeviceMemory&) = delete;
  DeviceMemory& operator=(const DeviceMemory&) = delete;
  ~DeviceMemory() {
    for (void* p : allocs_) cudaFree(p);
  }

  // At least 16 bytes; an error naming `what` when the limit or the device says no.
  Result<void*> alloc(size_t bytes, const char* what);
  // Frees an allocation of this DeviceMemory (a pointer it handed out, possibly held as const since weights
  // are read-only to the ops); anything else is ignored.
  void free(const void* p, size_t bytes);
  size_t used() const { return used_; }
  size_t limit() const { return limit_; }  // 0: none

 private:
  size_t limit_ = 0;
  size_t used_ = 0;
  std::vector<void*> allocs_;
};

// A device buffer of T that grows to the largest size asked of it. A larger request allocates anew and leaves
// the old memory to the DeviceMemory (freed with the backend), because a recorded graph may still read it;
// growth is rare (the longest step or chunk so far).
template <typename T>
class DeviceScratch {
 public:
  explicit DeviceScratch(const char* what) : what_(what) {}
  DeviceScratch(const DeviceScratch&) = delete;
  DeviceScratch& operator=(const DeviceScratch&) = delete;

  Result<T*> reserve(DeviceMemory& mem, size_t n) {
    if (n <= cap_) return p_;
    GPTOSS_ASSIGN(void* p, mem.alloc(n * sizeof(T), what_));
    p_ = static_cast<T*>(p);
    cap_ = n;
    return p_;
  }
  T* get() const { return p_; }
  size_t capacity() const { return cap_; }
  const char* what() const { return what_; }

 private:
  const char* what_;
  T* p_ = nullptr;
  size_t cap_ = 0;
};

// Page-locked host memory of T (the source or target of asynchronous copies), freed on destruction. Growing
// frees the old buffer first: callers grow it only when no copy from it is in flight.
template <typename T>
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  ~PinnedBuffer() {
    if (p_) cudaFreeHost(p_);
  }

  Status reserve(size_t n) {
    if (n <= cap_) return {};
    if (p_) cudaFreeHost(p_);
    p_ = nullptr;
    cap_ = 0;
    void* p = nullptr;
    const cudaError_t e = cudaMallocHost(&p, n * sizeof(T));
    if (e != cudaSuccess) return Error("cuda: cannot allocate {} bytes of pinned host memory: {}", n * sizeof(T),
                                       cudaGetErrorString(e));
    p_ = static_cast<T*>(p);
    cap_ = n;
    return {};
  }
  T* get() const { return p_; }
  size_t capacity() const { return cap_; }

 private:
  T* p_ = nullptr;
  size_t cap_ = 0;
};

}  // namespace gptoss::cuda_impl
