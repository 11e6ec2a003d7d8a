// The read-bandwidth ceiling of a single kernel by how many bytes it reads: the decode step's weight
// kernels each read 20-35 MB (q/k/v, o, the 4 selected experts) and reach ~1.45 TB/s, while the
// 1.16 GB lm_head reaches ~3.1 TB/s (bench/cuda_notes.md, round 5). This times the simplest possible
// reader (16-byte loads, grid-stride, one add per load) over sizes from 4 MB to 1 GB, each launch on a
// region the previous launches did not touch (a 4 GB buffer walked in order, so nothing is in the 50 MB
// L2), kernels back to back in one stream; also a CUDA graph of 24 such kernels (a decode step's shape), row
// readers of the matvec's shape, the MoE down kernel's reads taken apart (expert ids, z staging), the
// tensor-core gate_up kernel's read pattern (16-row tiles, 256 bytes per row per round) against contiguous
// rounds, and the bulk copy engine (cp.async.bulk into shared memory) against the grid-stride reader.
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

// The MoE down kernel's reads without its arithmetic (moe_decode.cu): warp per output row, the 4 selected
// experts' MXFP4 rows (90 blocks of 16 code bytes + 90 scale bytes for I = 2880), 3 blocks per lane,
// kInFlight experts requested per round. kIdxHop: the expert ids come from device memory (one dependent L2
// round trip before any weight is requested, as in the real kernel); kStageZ: 4 x 2880 floats copied to
// shared memory with cp.async first (the real kernel's z), waited for after the first round is requested.
template <int kInFlight, bool kIdxHop, bool kStageZ>
__global__ void __launch_bounds__(256, 3)
    read_moe_down(const uint8_t* __restrict__ codes, const uint8_t* __restrict__ scales, const int* __restrict__ ids,
                  int first_expert, const float* __restrict__ z, unsigned* __restrict__ out) {
  constexpr int kRows = 2880, kNb = 90, kE = 32, kK = 4;
  extern __shared__ __align__(16) float zs[];
  const int64_t r = int64_t(blockIdx.x) * 8 + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if constexpr (kStageZ) {
    for (int i = threadIdx.x; i < kK * kRows / 4; i += blockDim.x) {
      const unsigned dst = unsigned(__cvta_generic_to_shared(zs + 4 * i));
      asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(z + 4 * i));
    }
    asm volatile("cp.async.commit_group;\n" ::);
  }
  uint32_t acc = 0;
  for (int j0 = 0; j0 < kK; j0 += kInFlight) {
    uint4 q[kInFlight][3];
    uint32_t sc[kInFlight][3];
#pragma unroll
    for (int jj = 0; jj < kInFlight; ++jj) {
      const int e = kIdxHop ? ids[j0 + jj] : (first_expert + j0 + jj) % kE;
      const uint4* row = reinterpret_cast<const uint4*>(codes + (int64_t(e) * kRows + r) * kNb * 16);
      const uint8_t* srow = scales + (int64_t(e) * kRows + r) * kNb;
#pragma unroll
      for (int i = 0; i < 3; ++i) {
        const int b = lane + 32 * i;
        q[jj][i] = r < kRows && b < kNb ? __ldg(row + b) : make_uint4(0, 0, 0, 0);
        sc[jj][i] = r < kRows && b < kNb ? __ldg(srow + b) : 0u;
      }
    }
    if (kStageZ && j0 == 0) {
      asm volatile("cp.async.wait_group 0;\n" ::: "memory");
      __syncthreads();
    }
#pragma unroll
    for (int jj = 0; jj < kInFlight; ++jj)
#pragma unroll
      for (int i = 0; i < 3; ++i) acc += q[jj][i].x ^ q[jj][i].y ^ q[jj][i].z ^ q[jj][i].w ^ sc[jj][i];
  }
  if (kStageZ) acc += __float_as_uint(zs[threadIdx.x]);
  if (acc == 0x12345678u) *out = acc;
}

// Hopper's bulk copy engine (cp.async.bulk, completion on an mbarrier): block b reads its own contiguous span
// (1/grid of the bytes, as a matvec block would own a range of rows); one thread keeps kStages copies of
// kChunk bytes in flight into shared memory, the block's 256 threads consume each chunk once it lands. No
// registers hold loads in flight, so the bytes in flight per SM are set by shared memory alone.
template <int kChunk, int kStages>
__global__ void __launch_bounds__(256) read_bulk(const uint8_t* __restrict__ p, size_t bytes, unsigned* __restrict__ out) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  extern __shared__ __align__(128) uint8_t sbuf[];
  __shared__ __align__(8) uint64_t bar[kStages];
  const size_t per = bytes / gridDim.x / 16 * 16;
  const size_t beg = per * blockIdx.x, end = blockIdx.x + 1 == gridDim.x ? bytes / 16 * 16 : beg + per;
  const int nchunks = int((end - beg + kChunk - 1) / kChunk);
  if (threadIdx.x == 0) {
    for (int st = 0; st < kStages; ++st)
      asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;\n" ::"r"(unsigned(__cvta_generic_to_shared(bar + st))));
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();
  auto issue = [&](int c) {
    const int st = c % kStages;
    const size_t off = beg + size_t(c) * kChunk;
    const unsigned n = unsigned(end - off < size_t(kChunk) ? end - off : size_t(kChunk));
    const unsigned b = unsigned(__cvta_generic_to_shared(bar + st));
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(b), "r"(n) : "memory");
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(
                     unsigned(__cvta_generic_to_shared(sbuf + size_t(st) * kChunk))),
                 "l"(p + off), "r"(n), "r"(b)
                 : "memory");
  };
  if (threadIdx.x == 0)
    for (int c = 0; c < kStages && c < nchunks; ++c) issue(c);
  uint32_t acc = 0;
  for (int c = 0; c < nchunks; ++c) {
    const int st = c % kStages;
    const unsigned b = unsigned(__cvta_generic_to_shared(bar + st)), parity = unsigned(c / kStages) & 1u;
    unsigned done = 0;
    while (!done)
      asm volatile(
          "{ .reg .pred P; mbarrier.try_wait.parity.shared::cta.b64 P, [%1], %2; selp.u32 %0, 1, 0, P; }\n"
          : "=r"(done)
          : "r"(b), "r"(parity)
          : "memory");
    const size_t off = beg + size_t(c) * kChunk;
    const int n16 = int((end - off < size_t(kChunk) ? end - off : size_t(kChunk)) / 16);
    const uint4* v4 = reinterpret_cast<const uint4*>(sbuf + size_t(st) * kChunk);
    for (int i = threadIdx.x; i < n16; i += blockDim.x) {
      const uint4 v = v4[i];
      acc += v.x ^ v.y ^ v.z ^ v.w;
    }
    __syncthreads();  // stage st is read: it may be refilled
    if (threadIdx.x == 0 && c + kStages < nchunks) issue(c + kStages);
  }
  if (acc == 0x12345678u) *out = acc;
#endif
}

// The tensor-core gate_up kernel's reads without its arithmetic (moe_decode_tc.cu): block = 4 warps, warp = a
// tile of 16 rows (5,760 rows of 90 MXFP4 blocks per expert, the 4 selected experts as blockIdx.y), lane (g, q)
// reads rows g and g + 8, block b0 + 4 s + q for s < 4 per round (so a round is 256 bytes of each of the 16 rows,
// rows 1,440 bytes apart) plus the two scale bytes, 6 rounds. kContiguous: the same bytes per warp, but each
// round one contiguous 4 KB piece of the warp's 23 KB (what a tile-major weight layout would give).
template <bool kContiguous>
__global__ void __launch_bounds__(128, 4)
    read_gate_up_tiles(const uint8_t* __restrict__ codes, const uint8_t* __restrict__ scales, int first_expert,
                       unsigned* __restrict__ out) {
  constexpr int kRows = 5760, kNb = 90, kE = 32, kSteps = 4;
  const int e = (first_expert + int(blockIdx.y)) % kE;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, q = lane % 4;
  const int64_t r0 = (int64_t(blockIdx.x) * 4 + warp) * 16;
  const uint8_t* base = codes + (int64_t(e) * kRows + r0) * kNb * 16;  // the warp's 16 rows: 23,040 bytes
  const uint8_t* sbase = scales + (int64_t(e) * kRows + r0) * kNb;
  uint32_t acc = 0;
  for (int b0 = 0; b0 < kNb; b0 += 4 * kSteps) {
    uint4 wa[kSteps], wb[kSteps];
    uint32_t ca[kSteps], cb[kSteps];
#pragma unroll
    for (int st = 0; st < kSteps; ++st) {
      const int b = b0 + 4 * st + q;
      const bool in = b < kNb;
      if constexpr (kContiguous) {  // round b0 / 16: bytes [round * 4096, +4096) of the warp's span, 8 x 16 per lane
        const int64_t off = int64_t(b0 / 16) * 4096 + (2 * st) * 512 + lane * 16;
        wa[st] = off < 23040 ? __ldg(reinterpret_cast<const uint4*>(base + off)) : make_uint4(0, 0, 0, 0);
        wb[st] = off + 512 < 23040 ? __ldg(reinterpret_cast<const uint4*>(base + off + 512)) : make_uint4(0, 0, 0, 0);
      } else {
        wa[st] = in ? __ldg(reinterpret_cast<const uint4*>(base + (int64_t(g) * kNb + b) * 16)) : make_uint4(0, 0, 0, 0);
        wb[st] = in ? __ldg(reinterpret_cast<const uint4*>(base + (int64_t(g + 8) * kNb + b) * 16)) : make_uint4(0, 0, 0, 0);
      }
      ca[st] = in ? __ldg(sbase + g * kNb + b) : 0u;
      cb[st] = in ? __ldg(sbase + (g + 8) * kNb + b) : 0u;
    }
#pragma unroll
    for (int st = 0; st < kSteps; ++st)
      acc += wa[st].x ^ wa[st].y ^ wa[st].z ^ wa[st].w ^ wb[st].x ^ wb[st].y ^ wb[st].z ^ wb[st].w ^ ca[st] ^ cb[st];
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
  // launch(i) for i < n once (warm-up), then again between two events: the second pass's milliseconds,
  // or a negative number on a CUDA error.
  auto time_ms = [&](int n, auto launch) -> float {
    for (int i = 0; i < n; ++i) launch(i);
    float ms = -1;
    if (cudaEventRecord(e0, s) != cudaSuccess) return ms;
    for (int i = 0; i < n; ++i) launch(i);
    if (cudaEventRecord(e1, s) == cudaSuccess && cudaEventSynchronize(e1) == cudaSuccess &&
        cudaEventElapsedTime(&ms, e0, e1) == cudaSuccess && cudaGetLastError() == cudaSuccess)
      return ms;
    return -1;
  };
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
    const float ms = time_ms(launches, [&](int i) {
      read_sum<<<blocks, threads, 0, s>>>(reinterpret_cast<const uint4*>(buf + size_t(i) * bytes), bytes / 16, out);
    });
    if (ms < 0) return std::fprintf(stderr, "bench_stream: CUDA error\n"), 1;
    gbs.push_back(double(bytes) * launches / (ms * 1e-3) / 1e9);
  }
  for (size_t i = 0; i < gbs.size(); ++i)
    std::printf("%10zu %8d %10.0f %9.2f\n", sizes_mb[i], int(total / (sizes_mb[i] * 1000 * 1000)) < 48 ? int(total / (sizes_mb[i] * 1000 * 1000)) : 48, gbs[i], gbs[i] / gbs.back());
  // Times launch(i) for i < launches (time_ms) and prints the read rate of `bytes` per launch beside the 1 GB
  // figure: "what, name (padded to width)  GB/s ..."; 1 on a CUDA error.
  auto report = [&](const char* what, int width, const char* name, size_t bytes, int launches, auto launch) -> int {
    const float ms = time_ms(launches, launch);
    if (ms < 0) return std::fprintf(stderr, "bench_stream: CUDA error\n"), 1;
    const double g = double(bytes) * launches / (ms * 1e-3) / 1e9;
    std::printf("%s, %-*s %6.0f GB/s (x %.2f of 1 GB), %.2f us per kernel\n", what, width, name, g, g / gbs.back(),
                ms * 1e3 / launches);
    return 0;
  };
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
    auto timed = [&](const char* name, auto launch) {
      return report("35 MB as rows of 5760 B", 44, name, bytes, launches,
                    [&](int i) { launch(buf + size_t(i) * bytes); });
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
  // The MoE down kernel's pattern: 4 of 32 experts per launch (17.6 MB), launch i reading experts 4i..4i+3
  // (mod 32) of a 141 MB expert array, so each launch finds its experts out of L2.
  {
    constexpr int kRows = 2880, kNb = 90, kE = 32, kK = 4;
    const size_t code_bytes = size_t(kE) * kRows * kNb * 16, scale_bytes = size_t(kE) * kRows * kNb;
    const size_t read = size_t(kK) * kRows * kNb * 17;
    if (code_bytes + scale_bytes + 64 * 1024 * 1024 > total) {
      std::printf("MoE down pattern: buffer too small\n");
    } else {
      const uint8_t* codes = buf;
      const uint8_t* scales = buf + code_bytes;
      const float* z = reinterpret_cast<const float*>(buf + code_bytes + scale_bytes);
      const int launches = 48;
      int* ids = nullptr;  // launch i: experts 4i .. 4i+3 (mod 32), as the arithmetic of the "ids known" variants
      std::vector<int> h_ids(size_t(launches) * kK);
      for (size_t i = 0; i < h_ids.size(); ++i) h_ids[i] = int(i % kE);
      CK(cudaMalloc(&ids, h_ids.size() * sizeof(int)));
      CK(cudaMemcpy(ids, h_ids.data(), h_ids.size() * sizeof(int), cudaMemcpyHostToDevice));
      const size_t zsmem = size_t(kK) * kRows * sizeof(float);
      const unsigned rb = kRows / 8;
      auto timed = [&](const char* name, size_t bytes, auto launch) {
        return report("MoE down pattern", 58, name, bytes, launches, launch);
      };
      CK(cudaFuncSetAttribute(read_moe_down<2, true, true>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(zsmem)));
      CK(cudaFuncSetAttribute(read_moe_down<4, true, true>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(zsmem)));
      timed("grid-stride over the 4 experts' codes (16.6 MB)", size_t(kK) * kRows * kNb * 16, [&](int i) {
        const size_t per_expert = size_t(kRows) * kNb * 16;
        read_sum<<<blocks, threads, 0, s>>>(reinterpret_cast<const uint4*>(codes + size_t((4 * i) % kE) * per_expert),
                                            kK * per_expert / 16, out);
      });
      timed("2 experts per round, ids known", read, [&](int i) {
        read_moe_down<2, false, false><<<rb, 256, 0, s>>>(codes, scales, ids, 4 * i, z, out);
      });
      timed("4 experts per round, ids known", read, [&](int i) {
        read_moe_down<4, false, false><<<rb, 256, 0, s>>>(codes, scales, ids, 4 * i, z, out);
      });
      timed("2 per round, ids from memory", read, [&](int i) {
        read_moe_down<2, true, false><<<rb, 256, 0, s>>>(codes, scales, ids + kK * i, 4 * i, z, out);
      });
      timed("2 per round, ids from memory, z staged (the real kernel)", read, [&](int i) {
        read_moe_down<2, true, true><<<rb, 256, zsmem, s>>>(codes, scales, ids + kK * i, 4 * i, z, out);
      });
      timed("4 per round, ids from memory, z staged", read, [&](int i) {
        read_moe_down<4, true, true><<<rb, 256, zsmem, s>>>(codes, scales, ids + kK * i, 4 * i, z, out);
      });
      cudaFree(ids);
    }
  }

  // The gate_up kernel's pattern: 4 of 32 experts per launch (35.6 MB), launch i reading experts 4i..4i+3 (mod 32)
  // of a 282 MB expert array; beside it the same bytes in contiguous 4 KB pieces per warp round, and the
  // grid-stride reader over the 4 experts' codes.
  {
    constexpr int kRows = 5760, kNb = 90, kE = 32, kK = 4;
    const size_t per_expert = size_t(kRows) * kNb * 16, code_bytes = size_t(kE) * per_expert;
    const size_t scale_bytes = size_t(kE) * kRows * kNb;
    if (code_bytes + scale_bytes > total) {
      std::printf("gate_up pattern: buffer too small\n");
    } else {
      const uint8_t* codes = buf;
      const uint8_t* scales = buf + code_bytes;
      const int launches = 48;
      const size_t read = size_t(kK) * kRows * kNb * 17;
      const dim3 grid{unsigned(kRows / 64), unsigned(kK)};
      auto timed = [&](const char* name, size_t bytes, auto launch) {
        return report("gate_up pattern", 60, name, bytes, launches, launch);
      };
      if (timed("grid-stride over the 4 experts' codes (33.2 MB)", kK * per_expert, [&](int i) {
            read_sum<<<blocks, threads, 0, s>>>(
                reinterpret_cast<const uint4*>(codes + size_t((4 * i) % kE) * per_expert), kK * per_expert / 16, out);
          }) ||
          timed("16-row tiles, 256 B of each row per round (the real kernel)", read, [&](int i) {
            read_gate_up_tiles<false><<<grid, 128, 0, s>>>(codes, scales, 4 * i, out);
          }) ||
          timed("16-row tiles, one contiguous 4 KB per round (tile-major)", read, [&](int i) {
            read_gate_up_tiles<true><<<grid, 128, 0, s>>>(codes, scales, 4 * i, out);
          }))
        return 1;
    }
  }
  // The bulk copy engine against the grid-stride reader at the decode kernels' sizes (16-35 MB), each kernel on
  // fresh regions, back to back in one stream: does a deep queue of large copies per SM get closer to the 1 GB
  // rate than loads held in registers? (H100, round 7: no, 0.84-0.93x of the grid-stride reader.)
  {
    // The grid-stride reader of `bytes` per launch, timed once per size: the reference of every bulk variant.
    auto grid_stride = [&](size_t bytes, int launches) {
      return time_ms(launches, [&](int i) {
        read_sum<<<blocks, threads, 0, s>>>(reinterpret_cast<const uint4*>(buf + size_t(i) * bytes), bytes / 16, out);
      });
    };
    auto run_bulk = [&](const char* name, size_t mb, size_t bytes, int launches, float ms_g, int grid, size_t smem,
                        auto kern) -> int {
      if (cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)) != cudaSuccess)
        return std::fprintf(stderr, "bench_stream: %s: shared memory\n", name), 1;
      const float ms_b = time_ms(launches, [&](int i) { kern<<<grid, 256, smem, s>>>(buf + size_t(i) * bytes, bytes, out); });
      if (ms_b < 0 || ms_g < 0) return std::fprintf(stderr, "bench_stream: CUDA error (%s)\n", name), 1;
      const double gb = double(bytes) * launches / (ms_b * 1e-3) / 1e9, gg = double(bytes) * launches / (ms_g * 1e-3) / 1e9;
      std::printf("bulk %3zu MB, %-30s grid %3d: %6.0f GB/s, %6.2f us per kernel (grid-stride: %6.0f GB/s) x %.2f\n", mb,
                  name, grid, gb, ms_b * 1e3 / launches, gg, gb / gg);
      return 0;
    };
    const int sms = prop.multiProcessorCount;
    for (size_t mb : {16, 24, 35}) {
      const size_t bytes = mb * 1000 * 1000 / 16 * 16;
      const int launches = int(total / bytes) < 48 ? int(total / bytes) : 48;
      const float ms_g = grid_stride(bytes, launches);
      if (run_bulk("16 KB x 4 stages", mb, bytes, launches, ms_g, sms, 4 * 16384, read_bulk<16384, 4>) ||
          run_bulk("16 KB x 4 stages", mb, bytes, launches, ms_g, 2 * sms, 4 * 16384, read_bulk<16384, 4>) ||
          run_bulk("16 KB x 8 stages", mb, bytes, launches, ms_g, sms, 8 * 16384, read_bulk<16384, 8>) ||
          run_bulk("32 KB x 6 stages", mb, bytes, launches, ms_g, sms, 6 * 32768, read_bulk<32768, 6>) ||
          run_bulk("8 KB x 8 stages", mb, bytes, launches, ms_g, 2 * sms, 8 * 8192, read_bulk<8192, 8>) ||
          run_bulk("8 KB x 8 stages", mb, bytes, launches, ms_g, 3 * sms, 8 * 8192, read_bulk<8192, 8>))
        return 1;
    }
  }
  cudaFree(buf);
  cudaFree(out);
  return 0;
}
