// A fixed pool of worker threads for data-parallel loops over the CPU backend's ops.
//
// The model calls parallel_for a few hundred times per decoded token, so dispatch must cost microseconds:
// workers spin on a generation counter for a short while after each job (the next op usually follows
// within microseconds) and only then block in the kernel (futex via std::atomic::wait). A job is a
// function pointer plus a context pointer to the caller's functor on the caller's stack, so nothing is
// allocated per call.
#pragma once

#include <atomic>
#include <cstdint>
#include <thread>
#include <type_traits>
#include <vector>

namespace gptoss {

class ThreadPool {
 public:
  // num_threads counts the calling thread; 0 = one per hardware thread.
  explicit ThreadPool(int num_threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return num_threads_; }

  // Calls fn(begin, end) on min(n, num_threads()) contiguous, near-equal chunks covering [0, n) and returns
  // when all have finished. The caller and the workers claim chunks from a shared counter, so a worker
  // that the OS has descheduled (a busy machine) does not stall the call: the others take its chunk. A
  // call made while the pool is already running a job (from inside fn, or from another thread) runs
  // fn(0, n) inline instead.
  template <class F>
  void parallel_for(int64_t n, F&& fn) {
    if (n <= 0) return;
    using Fn = std::remove_reference_t<F>;
    run(n, [](void* ctx, int64_t b, int64_t e) { (*static_cast<Fn*>(ctx))(b, e); },
        const_cast<void*>(static_cast<const void*>(&fn)));
  }

  // Calls fn(j) once for every job j in [0, n): each thread claims the next job when it finishes one, so jobs
  // of unequal cost (the MoE's experts with different token counts) keep every thread busy, where
  // parallel_for's equal chunks would leave one waiting.
  template <class F>
  void for_each_job(int64_t n, F&& fn) {
    if (n <= 0) return;
    std::atomic<int64_t> next{0};
    parallel_for(num_threads(), [&](int64_t, int64_t) {
      for (int64_t j = next.fetch_add(1, std::memory_order_relaxed); j < n;
           j = next.fetch_add(1, std::memory_order_relaxed))
        fn(j);
    });
  }

 private:
  using JobFn = void (*)(void* ctx, int64_t begin, int64_t end);

  void run(int64_t n, JobFn fn, void* ctx);
  void worker_loop();
  void stop_workers();  // wakes every worker to exit and joins it
  // Claims and runs chunks of job `generation` until none are left.
  void work_on(uint32_t generation);

  int num_threads_ = 1;
  std::vector<std::thread> workers_;

  // The current job; written by the dispatching thread before claim_ is published (release) and read
  // only by a thread whose claim for that generation succeeded (acquire), so never while rewritten.
  JobFn job_fn_ = nullptr;
  void* job_ctx_ = nullptr;
  int64_t job_n_ = 0;

  // claim_ = generation << 32 | parts << 16 | next chunk index.
  std::atomic<uint64_t> claim_{0};
  std::atomic<int> done_{0};  // chunks of the current job finished
  std::atomic<uint32_t> generation_{0};
  std::atomic<int> sleepers_{0};  // workers blocked in generation_.wait(): notify only if > 0
  std::atomic<bool> busy_{false};
  std::atomic<bool> stop_{false};
};

}  // namespace gptoss
