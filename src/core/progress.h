// A byte-counting progress bar for long jobs (convert, verify, download-like loops), drawn on stderr
// only when stderr is a terminal and the caller did not ask for quiet; otherwise it only counts.
// Thread-safe: any thread may call add(); redraws are rate-limited to 10 per second.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>

namespace gptoss {

class Progress {
 public:
  // `enabled` = draw the bar (callers pass isatty(stderr) && !quiet).
  Progress(std::string label, uint64_t total_bytes, bool enabled);
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  void add(uint64_t bytes);
  // Clears the bar line (the caller then prints its own summary).
  void finish();
  uint64_t done() const { return done_.load(std::memory_order_relaxed); }
  double elapsed_s() const;

 private:
  void draw(bool force);
  std::string label_;
  uint64_t total_;
  bool enabled_;
  bool finished_ = false;
  std::atomic<uint64_t> done_{0};
  std::chrono::steady_clock::time_point start_;
  std::atomic<int64_t> last_draw_ns_{0};
  std::mutex draw_mu_;
};

// Peak resident set size of this process so far (getrusage ru_maxrss), in bytes.
uint64_t peak_rss_bytes();
// "1.23 GB" / "456.7 MB" / "12 B" (decimal units, as disk sizes are quoted).
std::string human_bytes(uint64_t n);

}  // namespace gptoss
