// The read-bandwidth ceiling of a single kernel by how many bytes it reads: the decode step's weight
// kernels each read 20-35 MB (q/k/v, o, the 4 selected experts) and reach ~1.45 TB/s, while the
// 1.16 GB lm_head reaches ~3.1 TB/s (bench/cuda_notes.md, round 5). This times the simplest possible
// reader (16-byte loads, grid-stride, one add per load) over sizes from 4 MB to 1 GB, each launch on a
// region the previous launches did not touch (a 4 GB buffer walked in order, so nothing is in the 50 MB
// L2), kernels back to back in one stream; also a CUDA graph of 24 such kernels (a decode step's shape).
// Prints GB/s per size and its ratio to the 1 GB figure of the same run.
//   bench_stream [total MiB to allocate = 4096]
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace {

__global__ void read_sum(const uint4* __restrict__ p, size_t n, unsigned* __restrict__ out) {
  uint32_t acc = 0;
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const uint4 v = __ldg(p + i);
    acc += v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x12345678u) *out = acc;  // keeps the loads; practically never taken
}

#define CK(x)                                                                        \
  do {                                                                               \
    cudaError_t e_ = (x);                                                            \
    if (e_ != cudaSuccess) return std::fprintf(stderr, "%s: %s\n", #x, cudaGetErrorString(e_)), 1; \
  } while (0)

}  // namespace

int main(int argc, char** argv) {
  const size_t total = size_t(argc > 1 ? std::atoi(argv[1]) : 4096) << 20;
  int dev_count = 0;
  if (cudaGetDeviceCount(&dev_count) != cudaSuccess || dev_count == 0) {
    std::printf("bench_stream: no CUDA device, nothing measured\n");
    return 0;
  }
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  uint8_t* buf = nullptr;
  unsigned* out = nullptr;
  CK(cudaMalloc(&buf, total));
  CK(cudaMalloc(&out, 4));
  CK(cudaMemset(buf, 1, total));
  cudaStream_t s;
  CK(cudaStreamCreate(&s));
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  const int blocks = prop.multiProcessorCount * 8, threads = 256;
  std::printf("%s, %d SMs, %d blocks x %d threads, buffer %zu MiB\n", prop.name, prop.multiProcessorCount, blocks,
              threads, total >> 20);
  std::printf("%10s %8s %10s %9s\n", "MB/kernel", "kernels", "GB/s", "x 1GB");
  const size_t sizes_mb[] = {4, 8, 16, 24, 35, 53, 100, 200, 1000};
  std::vector<double> gbs;
  for (size_t mb : sizes_mb) {
    const size_t bytes = mb * 1000 * 1000 / 16 * 16;
    const int per_pass = int(total / bytes);
    const int launches = per_pass < 48 ? per_pass : 48;
    auto run = [&] {
      for (int i = 0; i < launches; ++i)
        read_sum<<<blocks, threads, 0, s>>>(reinterpret_cast<const uint4*>(buf + size_t(i) * bytes), bytes / 16, out);
    };
    run();  // warm-up
    CK(cudaEventRecord(e0, s));
    run();
    CK(cudaEventRecord(e1, s));
    CK(cudaEventSynchronize(e1));
    float ms = 0;
    CK(cudaEventElapsedTime(&ms, e0, e1));
    gbs.push_back(double(bytes) * launches / (ms * 1e-3) / 1e9);
  }
  for (size_t i = 0; i < gbs.size(); ++i)
    std::printf("%10zu %8d %10.0f %9.2f\n", sizes_mb[i], int(total / (sizes_mb[i] * 1000 * 1000)) < 48 ? int(total / (sizes_mb[i] * 1000 * 1000)) : 48, gbs[i], gbs[i] / gbs.back());
  // 24 kernels of 35 MB as one graph (a decode step's MoE-sized reads), replayed.
  {
    const size_t bytes = size_t(35) * 1000 * 1000 / 16 * 16;
    cudaGraph_t g;
    cudaGraphExec_t ge;
    CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    for (int i = 0; i < 24; ++i)
      read_sum<<<blocks, threads, 0, s>>>(reinterpret_cast<const uint4*>(buf + size_t(i) * bytes), bytes / 16, out);
    CK(cudaStreamEndCapture(s, &g));
    CK(cudaGraphInstantiate(&ge, g, 0));
    CK(cudaGraphLaunch(ge, s));
    CK(cudaEventRecord(e0, s));
    for (int r = 0; r < 10; ++r) CK(cudaGraphLaunch(ge, s));
    CK(cudaEventRecord(e1, s));
    CK(cudaEventSynchronize(e1));
    float ms = 0;
    CK(cudaEventElapsedTime(&ms, e0, e1));
    const double g_gbs = double(bytes) * 24 * 10 / (ms * 1e-3) / 1e9;
    std::printf("graph of 24 x 35 MB: %.0f GB/s (x %.2f of 1 GB), %.2f us per kernel\n", g_gbs, g_gbs / gbs.back(),
                ms * 1e3 / 240);
  }
  cudaFree(buf);
  cudaFree(out);
  return 0;
}
