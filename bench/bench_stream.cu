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

// The decode matvec's pattern without its arithmetic: warp per row of `row_bytes`, kBatch 16-byte loads
// per lane in flight, then the next kBatch (8 warps per block).
template <int kBatch>
__global__ void read_rows(const uint8_t* __restrict__ p, int64_t rows, int row_bytes, unsigned* __restrict__ out) {
  const int64_t r = int64_t(blockIdx.x) * 8 + threadIdx.x / 32;
  if (r >= rows) return;
  const int lane = threadIdx.x % 32, n16 = row_bytes / 16;
  const uint4* row = reinterpret_cast<const uint4*>(p + r * row_bytes);
  uint32_t acc = 0;
  for (int c0 = lane; c0 < n16; c0 += kBatch * 32) {
    uint4 v[kBatch];
#pragma unroll
    for (int u = 0; u < kBatch; ++u) v[u] = c0 + 32 * u < n16 ? __ldg(row + c0 + 32 * u) : make_uint4(0, 0, 0, 0);
#pragma unroll
    for (int u = 0; u < kBatch; ++u) acc += v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
  }
  if (acc == 0x12345678u) *out = acc;
}

// Block per group of 8 rows read as one contiguous span, the block's 256 threads striding through it.
__global__ void read_row_groups(const uint8_t* __restrict__ p, int64_t rows, int row_bytes, unsigned* __restrict__ out) {
  const int64_t r0 = int64_t(blockIdx.x) * 8;
  if (r0 >= rows) return;
  const int64_t n16 = (rows - r0 < 8 ? rows - r0 : 8) * row_bytes / 16;
  const uint4* span = reinterpret_cast<const uint4*>(p + r0 * row_bytes);
  uint32_t acc = 0;
  for (int64_t i = threadIdx.x; i < n16; i += blockDim.x) {
    const uint4 v = __ldg(span + i);
    acc += v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x12345678u) *out = acc;
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
  // Row-wise readers over 35 MB (rows of 5760 bytes: a bf16 row of 2880, the q/k/v/lm_head width), back to
  // back in one stream on fresh regions, beside the grid-stride reader.
  {
    const int row_bytes = 5760;
    const int64_t rows = int64_t(35) * 1000 * 1000 / row_bytes;
    const size_t bytes = size_t(rows) * row_bytes;
    const int launches = int(total / bytes) < 48 ? int(total / bytes) : 48;
    auto timed = [&](const char* name, auto launch) -> int {
      for (int i = 0; i < launches; ++i) launch(buf + size_t(i) * bytes);
      CK(cudaEventRecord(e0, s));
      for (int i = 0; i < launches; ++i) launch(buf + size_t(i) * bytes);
      CK(cudaEventRecord(e1, s));
      CK(cudaEventSynchronize(e1));
      float ms = 0;
      CK(cudaEventElapsedTime(&ms, e0, e1));
      const double g = double(bytes) * launches / (ms * 1e-3) / 1e9;
      std::printf("35 MB as rows of 5760 B, %-44s %6.0f GB/s (x %.2f of 1 GB), %.2f us per kernel\n", name, g,
                  g / gbs.back(), ms * 1e3 / launches);
      return 0;
    };
    const unsigned rb = unsigned((rows + 7) / 8);
    timed("grid-stride (as above)", [&](const uint8_t* p) {
      read_sum<<<blocks, threads, 0, s>>>(reinterpret_cast<const uint4*>(p), bytes / 16, out);
    });
    timed("warp per row, 8 loads per lane in flight", [&](const uint8_t* p) {
      read_rows<8><<<rb, 256, 0, s>>>(p, rows, row_bytes, out);
    });
    timed("warp per row, 12 loads per lane (whole row)", [&](const uint8_t* p) {
      read_rows<12><<<rb, 256, 0, s>>>(p, rows, row_bytes, out);
    });
    timed("warp per row, 2 loads per lane in flight", [&](const uint8_t* p) {
      read_rows<2><<<rb, 256, 0, s>>>(p, rows, row_bytes, out);
    });
    timed("block per 8 rows (contiguous span)", [&](const uint8_t* p) {
      read_row_groups<<<rb, 256, 0, s>>>(p, rows, row_bytes, out);
    });
  }
  cudaFree(buf);
  cudaFree(out);
  return 0;
}
