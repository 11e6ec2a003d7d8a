// The NCCL communicators (parallel/nccl/nccl_comm.h): collectives over every visible GPU (one rank where there is
// one GPU), each rank on its own thread as the multi-GPU engine will run them, and the latency of the
// all-reduces a decode step needs. Built with CUDA and NCCL only; skipped with a notice where no GPU is present.
#ifdef GPTOSS_WITH_NCCL

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <numeric>
#include <thread>

#include "parallel/nccl/nccl_comm.h"

using namespace gptoss;

namespace {

const char* nvls_setting() {
  const char* v = std::getenv("NCCL_NVLS_ENABLE");
  return v ? v : "(unset)";
}

int gpu_count() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;
}

#define REQUIRE_GPU()                                                            \
  do {                                                                           \
    if (gpu_count() < 1) GTEST_SKIP() << "no CUDA device: NCCL test skipped"; \
  } while (0)

#define CUDA_OK(call)                                                          \
  do {                                                                         \
    if (cudaError_t e_ = (call); e_ != cudaSuccess) return cudaGetErrorString(e_); \
  } while (0)

// One rank's part: fills buf with (rank + 1) * (i % 7) (integers: the sum is exact in float), all-reduces it,
// all-gathers rank * 1000 + i, checks both, then times `iters` all-reduces of `count` floats. Returns an error
// text or "" (a failed CUDA call returns at once, and may leave the other ranks waiting).
std::string run_rank(NcclComm& comm, size_t count, int iters, double* us_per_op) {
  const int r = comm.rank(), n = comm.size();
  CUDA_OK(cudaSetDevice(comm.device()));
  cudaStream_t s = nullptr;
  CUDA_OK(cudaStreamCreate(&s));
  float *buf = nullptr, *gathered = nullptr;
  CUDA_OK(cudaMalloc(reinterpret_cast<void**>(&buf), count * sizeof(float)));
  CUDA_OK(cudaMalloc(reinterpret_cast<void**>(&gathered), size_t(n) * count * sizeof(float)));
  std::vector<float> h(count), g(size_t(n) * count);
  for (size_t i = 0; i < count; ++i) h[i] = float((r + 1) * int(i % 7));
  CUDA_OK(cudaMemcpy(buf, h.data(), count * sizeof(float), cudaMemcpyHostToDevice));
  if (Status st = comm.all_reduce_sum(buf, count, s); !st.ok()) return st.message();
  CUDA_OK(cudaStreamSynchronize(s));
  CUDA_OK(cudaMemcpy(h.data(), buf, count * sizeof(float), cudaMemcpyDeviceToHost));
  // A wrong value is noted, not returned on: the other ranks wait for this one's next collectives.
  std::string wrong;
  for (size_t i = 0; i < count && wrong.empty(); ++i)
    if (h[i] != float(int(i % 7) * n * (n + 1) / 2)) wrong = "all-reduce: wrong sum at " + std::to_string(i);
  for (size_t i = 0; i < count; ++i) h[i] = float(r * 1000 + int(i));
  CUDA_OK(cudaMemcpy(buf, h.data(), count * sizeof(float), cudaMemcpyHostToDevice));
  if (Status st = comm.all_gather(buf, count, gathered, s); !st.ok()) return st.message();
  CUDA_OK(cudaStreamSynchronize(s));
  CUDA_OK(cudaMemcpy(g.data(), gathered, g.size() * sizeof(float), cudaMemcpyDeviceToHost));
  for (int q = 0; q < n && wrong.empty(); ++q)
    for (size_t i = 0; i < count && wrong.empty(); ++i)
      if (g[size_t(q) * count + i] != float(q * 1000 + int(i)))
        wrong = "all-gather: wrong value from rank " + std::to_string(q);
  const auto t0 = std::chrono::steady_clock::now();
  for (int it = 0; it < iters; ++it)
    if (Status st = comm.all_reduce_sum(buf, count, s); !st.ok()) return st.message();
  CUDA_OK(cudaStreamSynchronize(s));
  *us_per_op = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / iters;
  if (Status st = comm.async_error(); !st.ok()) return st.message();
  CUDA_OK(cudaFree(buf));
  CUDA_OK(cudaFree(gathered));
  CUDA_OK(cudaStreamDestroy(s));
  return wrong;
}

}  // namespace

TEST(NcclComm, VersionAndBadRank) {
  EXPECT_EQ(nccl_version().rfind("2.", 0), 0u) << nccl_version();
  NcclId id;
  auto c = NcclComm::create_rank(id, 2, 5, 0);
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("rank 5 of 2 ranks"), std::string::npos) << c.status().message();
}

// Every visible GPU a rank; 2880 floats is the hidden size (one decode row of gpt-oss), 64 x 2880 a batched step.
TEST(NcclComm, AllReduceAndAllGatherOverEveryGpu) {
  REQUIRE_GPU();
  const size_t gpus = size_t(gpu_count());
  std::vector<int> devices(gpus);
  std::iota(devices.begin(), devices.end(), 0);
  auto comms = NcclComm::create_all(devices);
  ASSERT_TRUE(comms.ok()) << comms.status().message();
  for (size_t count : {size_t(2880), size_t(64) * 2880}) {
    std::vector<std::string> errors(devices.size());
    std::vector<double> us(devices.size());
    std::vector<std::thread> threads;
    for (size_t r = 0; r < devices.size(); ++r)
      threads.emplace_back([&, r] { errors[r] = run_rank(*(*comms)[r], count, 200, &us[r]); });
    for (auto& t : threads) t.join();
    for (size_t r = 0; r < devices.size(); ++r) EXPECT_EQ(errors[r], "") << "rank " << r;
    std::printf("NCCL %s, %zu GPU(s), NCCL_NVLS_ENABLE=%s: all-reduce of %zu floats: %.1f us (rank 0, 200 back to "
                "back)\n", nccl_version().c_str(), devices.size(), nvls_setting(), count, us[0]);
  }
  EXPECT_STREQ(nvls_setting(), "0");
}

#endif  // GPTOSS_WITH_NCCL
