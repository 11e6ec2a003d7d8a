#include "core/threadpool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

namespace gptoss {
namespace {

TEST(ThreadPool, CoversRangeOnceInContiguousChunks) {
  for (int threads : {1, 2, 3, 8}) {
    ThreadPool pool(threads);
    EXPECT_EQ(pool.num_threads(), threads);
    for (int64_t n : {1, 2, 3, 7, 64, 1000}) {
      std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
      std::atomic<int> calls{0};
      pool.parallel_for(n, [&](int64_t b, int64_t e) {
        ASSERT_LT(b, e);
        calls.fetch_add(1);
        for (int64_t i = b; i < e; ++i) hits[size_t(i)].fetch_add(1);
      });
      EXPECT_EQ(calls.load(), std::min<int64_t>(n, threads)) << "threads=" << threads << " n=" << n;
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[size_t(i)].load(), 1) << "i=" << i;
    }
  }
}

TEST(ThreadPool, ForEachJobRunsEveryJobOnce) {
  for (int threads : {1, 2, 3, 8}) {
    ThreadPool pool(threads);
    for (int64_t n : {0, 1, 2, 7, 1000}) {
      std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
      pool.for_each_job(n, [&](int64_t j) {
        ASSERT_GE(j, 0);
        ASSERT_LT(j, n);
        hits[size_t(j)].fetch_add(1);
        if (j % 7 == 0) std::this_thread::sleep_for(std::chrono::microseconds(50));  // unequal costs
      });
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[size_t(i)].load(), 1) << "threads=" << threads << " i=" << i;
    }
  }
}

TEST(ThreadPool, ZeroMeansAllCoresAndEmptyRangeIsNoop) {
  ThreadPool pool(0);
  EXPECT_GE(pool.num_threads(), 1);
  bool called = false;
  pool.parallel_for(0, [&](int64_t, int64_t) { called = true; });
  EXPECT_FALSE(called);
}

TEST(ThreadPool, UsesSeveralThreadsAndCaller) {
  ThreadPool pool(2);
  std::atomic<int> caller_chunks{0};
  const auto caller = std::this_thread::get_id();
  pool.parallel_for(2, [&](int64_t, int64_t) {
    if (std::this_thread::get_id() == caller) caller_chunks.fetch_add(1);
  });
  EXPECT_GE(caller_chunks.load(), 1);  // the caller works too (and takes a late worker's chunk)
}

TEST(ThreadPool, NestedCallRunsInline) {
  ThreadPool pool(2);
  std::atomic<int64_t> total{0};
  pool.parallel_for(4, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      pool.parallel_for(10, [&](int64_t b2, int64_t e2) { total.fetch_add(e2 - b2); });
  });
  EXPECT_EQ(total.load(), 40);
}

TEST(ThreadPool, ManyBackToBackCallsAndAfterSleep) {
  ThreadPool pool(2);
  int64_t sum = 0;
  std::vector<int64_t> part(2);
  for (int it = 0; it < 4000; ++it) {
    pool.parallel_for(2, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) part[size_t(i)] = i + it;
    });
    sum += part[0] + part[1];
    if (it == 2000) std::this_thread::sleep_for(std::chrono::milliseconds(5));  // workers go to sleep
  }
  EXPECT_EQ(sum, 4000LL * 1 + 2LL * (4000LL * 3999 / 2));
}

TEST(ThreadPool, DispatchOverheadIsSmall) {
  ThreadPool pool(2);
  std::atomic<int64_t> sink{0};
  constexpr int kCalls = 5000;
  const auto t0 = std::chrono::steady_clock::now();
  for (int it = 0; it < kCalls; ++it) pool.parallel_for(2, [&](int64_t b, int64_t) { sink.fetch_add(b); });
  const double us =
      std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / kCalls;
  std::printf("parallel_for dispatch: %.2f us per call (2 threads)\n", us);
  // Very loose bound: on a shared, oversubscribed machine a call waits for the scheduler.
  EXPECT_LT(us, 5000.0);
}

}  // namespace
}  // namespace gptoss
