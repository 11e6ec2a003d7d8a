#include "core/threadpool.h"

#include <chrono>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define GPTOSS_CPU_RELAX() _mm_pause()
#else
#define GPTOSS_CPU_RELAX() ((void)0)
#endif

namespace gptoss {
namespace {

// How long an idle worker polls before blocking. Ops of one decode step follow each other within a few
// microseconds, while a pause between requests should not keep cores busy; 100 us covers the former.
constexpr auto kSpinTime = std::chrono::microseconds(100);
constexpr int kMaxParts = 0xFFFF;  // parts and chunk index are 16-bit fields of claim_

}  // namespace

ThreadPool::ThreadPool(int num_threads) {
  if (num_threads <= 0) num_threads = int(std::thread::hardware_concurrency());
  num_threads_ = num_threads < 1 ? 1 : (num_threads > kMaxParts ? kMaxParts : num_threads);
  workers_.reserve(size_t(num_threads_ - 1));
  try {
    for (int i = 1; i < num_threads_; ++i) workers_.emplace_back([this] { worker_loop(); });
  } catch (...) {  // a thread that cannot start: join the started ones (a joinable std::thread's destructor aborts)
    stop_workers();
    throw;
  }
}

ThreadPool::~ThreadPool() { stop_workers(); }

void ThreadPool::stop_workers() {
  stop_.store(true, std::memory_order_relaxed);
  generation_.fetch_add(1, std::memory_order_seq_cst);
  generation_.notify_all();
  for (auto& t : workers_) t.join();
  workers_.clear();
}

void ThreadPool::work_on(uint32_t generation) {
  uint64_t c = claim_.load(std::memory_order_acquire);
  for (;;) {
    const int parts = int((c >> 16) & 0xFFFF), index = int(c & 0xFFFF);
    if (uint32_t(c >> 32) != generation || index >= parts) return;
    if (!claim_.compare_exchange_weak(c, c + 1, std::memory_order_acq_rel, std::memory_order_acquire)) continue;
    const int64_t begin = job_n_ * index / parts, end = job_n_ * (index + 1) / parts;
    job_fn_(job_ctx_, begin, end);
    done_.fetch_add(1, std::memory_order_release);
    c = claim_.load(std::memory_order_acquire);
  }
}

void ThreadPool::run(int64_t n, JobFn fn, void* ctx) {
  const int parts = int(n < num_threads_ ? n : num_threads_);
  if (parts <= 1 || busy_.exchange(true, std::memory_order_acquire)) {
    fn(ctx, 0, n);
    return;
  }
  job_fn_ = fn;
  job_ctx_ = ctx;
  job_n_ = n;
  done_.store(0, std::memory_order_relaxed);
  const uint32_t g = generation_.load(std::memory_order_relaxed) + 1;
  claim_.store(uint64_t(g) << 32 | uint64_t(parts) << 16, std::memory_order_release);
  // seq_cst pairs with the workers' sleepers_ increment: either we see a sleeper and wake it, or it sees
  // the new generation before blocking.
  generation_.store(g, std::memory_order_seq_cst);
  if (sleepers_.load(std::memory_order_seq_cst) > 0) generation_.notify_all();

  work_on(g);
  // Chunks are near-equal, so claimed ones finish about when ours did; yield if a worker was descheduled.
  for (int spins = 0; done_.load(std::memory_order_acquire) != parts; ++spins) {
    if (spins < 4096) {
      GPTOSS_CPU_RELAX();
    } else {
      std::this_thread::yield();
    }
  }
  busy_.store(false, std::memory_order_release);
}

void ThreadPool::worker_loop() {
  uint32_t seen = 0;
  for (;;) {
    uint32_t g = generation_.load(std::memory_order_acquire);
    if (g == seen) {
      const auto start = std::chrono::steady_clock::now();
      for (int i = 1;; ++i) {
        GPTOSS_CPU_RELAX();
        g = generation_.load(std::memory_order_acquire);
        if (g != seen) break;
        if (i % 64 == 0 && std::chrono::steady_clock::now() - start > kSpinTime) break;
      }
      if (g == seen) {
        sleepers_.fetch_add(1, std::memory_order_seq_cst);
        while ((g = generation_.load(std::memory_order_seq_cst)) == seen) generation_.wait(seen);
        sleepers_.fetch_sub(1, std::memory_order_relaxed);
      }
    }
    seen = g;
    if (stop_.load(std::memory_order_relaxed)) return;
    work_on(g);
  }
}

}  // namespace gptoss
