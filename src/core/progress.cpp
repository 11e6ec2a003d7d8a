#include "core/progress.h"

#include <sys/resource.h>

#include <cstdio>
#include <fmt/format.h>

namespace gptoss {

Progress::Progress(std::string label, uint64_t total_bytes, bool enabled)
    : label_(std::move(label)), total_(total_bytes), enabled_(enabled), start_(std::chrono::steady_clock::now()) {}

Progress::~Progress() { finish(); }

double Progress::elapsed_s() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void Progress::add(uint64_t bytes) {
  done_.fetch_add(bytes, std::memory_order_relaxed);
  if (enabled_) draw(false);
}

void Progress::draw(bool force) {
  const int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start_).count();
  int64_t last = last_draw_ns_.load(std::memory_order_relaxed);
  if (!force && now - last < 100'000'000) return;
  if (!last_draw_ns_.compare_exchange_strong(last, now) && !force) return;
  std::lock_guard<std::mutex> lock(draw_mu_);
  if (finished_) return;
  const uint64_t d = done();
  const double secs = double(now) * 1e-9;
  const double rate = secs > 0 ? double(d) / secs : 0.0;
  const double frac = total_ ? std::min(1.0, double(d) / double(total_)) : 1.0;
  constexpr int kWidth = 30;
  const int fill = int(frac * kWidth);
  std::string bar(size_t(fill), '#');
  bar.resize(kWidth, '-');
  std::string eta = "--:--";
  if (rate > 0 && d < total_) {
    const int s = int(double(total_ - d) / rate);
    eta = fmt::format("{:02d}:{:02d}", s / 60, s % 60);
  }
  std::fprintf(stderr, "\r%s [%s] %5.1f%% %s / %s  %.1f MB/s  ETA %s \033[K", label_.c_str(), bar.c_str(),
               frac * 100, human_bytes(d).c_str(), human_bytes(total_).c_str(), rate / 1e6, eta.c_str());
  std::fflush(stderr);
}

void Progress::finish() {
  std::lock_guard<std::mutex> lock(draw_mu_);
  if (finished_) return;
  finished_ = true;
  if (enabled_) {
    std::fprintf(stderr, "\r\033[K");
    std::fflush(stderr);
  }
}

uint64_t peak_rss_bytes() {
  struct rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return uint64_t(ru.ru_maxrss) * 1024;  // Linux reports KiB
}

std::string human_bytes(uint64_t n) {
  if (n >= 1000ull * 1000 * 1000) return fmt::format("{:.2f} GB", double(n) / 1e9);
  if (n >= 1000ull * 1000) return fmt::format("{:.1f} MB", double(n) / 1e6);
  if (n >= 1000) return fmt::format("{:.1f} kB", double(n) / 1e3);
  return fmt::format("{} B", n);
}

}  // namespace gptoss
