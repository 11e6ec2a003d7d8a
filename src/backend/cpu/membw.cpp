#include "backend/cpu/membw.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

namespace gptoss::cpu {
namespace {

constexpr size_t kBufferBytes = size_t(256) << 20;
constexpr int kPasses = 5;

// Sum of 64-bit words read as kStreams concurrent sequential streams (one per quarter of the range), as
// the matvec kernels read several weight rows at once: one stream per core leaves DRAM bandwidth unused
// on some CPUs. Several accumulators keep the loop bound by loads, not add latency.
constexpr int kStreams = 4;
uint64_t read_sum(const uint64_t* p, size_t n) {
  const size_t len = n / kStreams / 8 * 8;
  uint64_t a[kStreams][2] = {};
  for (size_t i = 0; i < len; i += 8)
    for (int s = 0; s < kStreams; ++s) {
      const uint64_t* q = p + size_t(s) * len + i;
      a[s][0] += q[0] + q[2] + q[4] + q[6];
      a[s][1] += q[1] + q[3] + q[5] + q[7];
    }
  uint64_t sum = 0;
  for (size_t i = len * kStreams; i < n; ++i) sum += p[i];
  for (int s = 0; s < kStreams; ++s) sum += a[s][0] + a[s][1];
  return sum;
}

}  // namespace

double measure_read_bandwidth_gbs(ThreadPool& pool) {
  const size_t words = kBufferBytes / sizeof(uint64_t);
  std::unique_ptr<uint64_t[]> buf(new uint64_t[words]);
  std::vector<uint64_t> sums(size_t(pool.num_threads()) * 8);  // one cache line per thread
  // First touch from the threads that will read, so pages land on their memory node.
  pool.parallel_for(int64_t(words), [&](int64_t b, int64_t e) {
    std::memset(buf.get() + b, 1, size_t(e - b) * sizeof(uint64_t));
  });
  double best = 0;
  for (int pass = 0; pass < kPasses; ++pass) {
    const auto t0 = std::chrono::steady_clock::now();
    pool.parallel_for(pool.num_threads(), [&](int64_t b, int64_t e) {
      for (int64_t part = b; part < e; ++part) {
        const size_t lo = words * size_t(part) / size_t(pool.num_threads());
        const size_t hi = words * size_t(part + 1) / size_t(pool.num_threads());
        sums[size_t(part) * 8] += read_sum(buf.get() + lo, hi - lo);
      }
    });
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (s > 0) best = std::max(best, double(kBufferBytes) / s / 1e9);
  }
  // Keep the sums observable so the reads are not optimised away.
  volatile uint64_t sink = 0;
  for (uint64_t v : sums) sink = sink + v;
  return best;
}

}  // namespace gptoss::cpu
