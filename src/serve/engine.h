// The serve engine: one thread owns the model and steps the requests that hold a slot (a Session with its
// own KV cache and token history, weights shared). Requests queue for a free slot; a request takes the
// free slot whose history shares the longest prefix with its prompt, so a conversation's next turn reuses
// its cache. With a Batch (continuous batching), every step runs all running requests at once: one decode
// token of each generating slot, then prompt chunks of the prefilling ones in what is left of the step's
// token budget; requests join and leave between steps. A slot running alone steps by itself (its next step
// starts on the device before the host has the token). Without a Batch, the Scheduler's slots run one
// token each in turn.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "gptoss/generate.h"

namespace gptoss::serve {

// A request as the engine runs it, and its channel back to the HTTP thread that waits on it.
struct Job {
  std::vector<int32_t> prompt;
  GenerateOptions gen;
  // Set by the HTTP side (client gone, stop string seen) or at shutdown: the engine ends the job before
  // its next token.
  std::atomic<bool> cancel{false};

  // Written by the engine thread under mu; the HTTP thread waits on cv.
  std::mutex mu;
  std::condition_variable cv;
  std::vector<int32_t> tokens;  // every token produced so far (a stop token included)
  bool done = false;
  FinishReason finish = FinishReason::None;
  std::string error;  // the engine failed to run it (backend error): the request gets a 500
  int reused_tokens = 0;
  double queued_at = 0, started_at = 0, first_token_at = 0, finished_at = 0;  // engine_clock() seconds

  // Waits until more than `have` tokens exist or the job is done, at most `timeout_s`; returns a copy of
  // the tokens after `have` and whether the job is done (all tokens then delivered).
  bool wait_tokens(size_t have, double timeout_s, std::vector<int32_t>& out);
};

double engine_clock();  // steady seconds

// Slots `gptoss serve` opens when --parallel is not given: on a device with `free_bytes` left after the weights
// and one slot's KV cache (`slot_bytes`), as many slots as fit in what is left beyond a reserve for the batched
// steps' scratch (1 GiB and a tenth of it), at most kMaxAutoSlots (batched steps gain little beyond, and
// time per token grows); kCpuSlots where the backend reports no device memory (free_bytes 0).
inline constexpr int kMaxAutoSlots = 64, kCpuSlots = 4;
int auto_slots(size_t free_bytes, size_t slot_bytes);

// Picks the slots of the next step among the active ones.
class Scheduler {
 public:
  virtual ~Scheduler() = default;
  // `active`: indices of the slots holding a request, ascending. Returns the rows of the next step in
  // the order they run; a slot left out waits.
  virtual std::vector<int> next_rows(const std::vector<int>& active) = 0;
};

// Every active slot gets one token per round; the round starts one slot further each time, so no slot
// is always served first.
class RoundRobinScheduler : public Scheduler {
 public:
  std::vector<int> next_rows(const std::vector<int>& active) override;

 private:
  size_t start_ = 0;
};

struct EngineStats {
  size_t queued = 0, running = 0, slots = 0;
  uint64_t prompt_tokens = 0, reused_tokens = 0, completion_tokens = 0;
};

class Engine {
 public:
  // `sessions`: one per slot, all over one model. Starts the engine thread.
  // `batch` (optional): runs the slots' steps together; its max_seqs should be at least the slot count.
  Engine(std::vector<std::unique_ptr<Session>> sessions,
         std::unique_ptr<Scheduler> scheduler = std::make_unique<RoundRobinScheduler>(),
         std::unique_ptr<Batch> batch = nullptr);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  void submit(std::shared_ptr<Job> job);
  // Cancels what is queued or running and stops the thread (the jobs end with FinishReason::Cancelled).
  void shutdown();
  EngineStats stats() const;
  int max_context() const;

 private:
  struct Slot {
    std::unique_ptr<Session> session;
    std::unique_ptr<Sequence> seq;
    std::unique_ptr<Generation> gen;
    std::shared_ptr<Job> job;
    uint64_t last_used = 0;
  };
  void loop();
  int pick_slot(const Job& job) const;  // a free slot, the longest reusable prefix first (lock held)
  void admit(Slot& slot);
  void step_slot(Slot& slot, bool alone);
  void step_batched(const std::vector<int>& order);
  void emit(Slot& slot, bool device_chain);  // the slot's next token (drawn earlier, or run now) to its job
  void complete(Slot& slot, const std::string& error = {});

  std::vector<Slot> slots_;
  std::unique_ptr<Scheduler> scheduler_;
  std::unique_ptr<Batch> batch_;
  struct Entry {
    int slot;
    size_t n;
  };
  std::vector<Entry> entries_;
  std::vector<Sampler*> samplers_;
  std::vector<int32_t> drawn_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Job>> queue_;
  std::vector<int> admitting_;  // slots given a job under the lock, started outside it
  bool stopping_ = false;
  uint64_t tick_ = 0;
  std::atomic<uint64_t> prompt_tokens_{0}, reused_tokens_{0}, completion_tokens_{0};
  std::atomic<size_t> running_{0};
  std::thread thread_;
};

}  // namespace gptoss::serve
