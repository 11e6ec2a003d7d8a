#include "serve/engine.h"

#include <algorithm>
#include <chrono>

namespace gptoss::serve {

int auto_slots(size_t free_bytes, size_t slot_bytes) {
  if (free_bytes == 0) return kCpuSlots;
  const size_t reserve = (size_t(1) << 30) + free_bytes / 10;
  if (free_bytes <= reserve || slot_bytes == 0) return 1;
  return int(std::min<size_t>(size_t(kMaxAutoSlots), 1 + (free_bytes - reserve) / slot_bytes));
}

double engine_clock() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

bool Job::wait_tokens(size_t have, double timeout_s, std::vector<int32_t>& out) {
  std::unique_lock lk(mu);
  cv.wait_for(lk, std::chrono::duration<double>(timeout_s), [&] { return done || tokens.size() > have; });
  out.assign(tokens.begin() + long(std::min(have, tokens.size())), tokens.end());
  return done;
}

std::vector<int> RoundRobinScheduler::next_rows(const std::vector<int>& active) {
  if (active.empty()) return {};
  const size_t first = start_++ % active.size();
  std::vector<int> rows;
  rows.reserve(active.size());
  for (size_t i = 0; i < active.size(); ++i) rows.push_back(active[(first + i) % active.size()]);
  return rows;
}

Engine::Engine(std::vector<std::unique_ptr<Session>> sessions, std::unique_ptr<Scheduler> scheduler,
               std::unique_ptr<Batch> batch)
    : scheduler_(std::move(scheduler)), batch_(std::move(batch)) {
  slots_.resize(sessions.size());
  for (size_t i = 0; i < sessions.size(); ++i) {
    slots_[i].session = std::move(sessions[i]);
    slots_[i].seq = std::make_unique<Sequence>(*slots_[i].session);
  }
  thread_ = std::thread([this] { loop(); });
}

Engine::~Engine() { shutdown(); }

int Engine::max_context() const { return slots_.empty() ? 0 : slots_[0].session->options().max_context; }

void Engine::submit(std::shared_ptr<Job> job) {
  job->queued_at = engine_clock();
  {
    std::lock_guard lk(mu_);
    if (!stopping_) {
      queue_.push_back(std::move(job));
      cv_.notify_all();
      return;
    }
  }
  std::lock_guard jl(job->mu);
  job->done = true;
  job->finish = FinishReason::Cancelled;
  job->cv.notify_all();
}

void Engine::shutdown() {
  {
    std::lock_guard lk(mu_);
    stopping_ = true;
    cv_.notify_all();
  }
  if (thread_.joinable()) thread_.join();
}

EngineStats Engine::stats() const {
  EngineStats s;
  {
    std::lock_guard lk(mu_);
    s.queued = queue_.size();
  }
  s.running = running_.load();
  s.slots = slots_.size();
  s.prompt_tokens = prompt_tokens_.load();
  s.reused_tokens = reused_tokens_.load();
  s.completion_tokens = completion_tokens_.load();
  return s;
}

int Engine::pick_slot(const Job& job) const {
  int best = -1;
  size_t best_prefix = 0;
  for (size_t i = 0; i < slots_.size(); ++i) {
    const Slot& s = slots_[i];
    if (s.job) continue;
    const size_t p = s.seq->reusable_prefix(job.prompt);
    // Longest prefix; on a tie the least recently used slot, so other conversations' caches live longer.
    if (best < 0 || p > best_prefix || (p == best_prefix && s.last_used < slots_[size_t(best)].last_used)) {
      best = int(i);
      best_prefix = p;
    }
  }
  return best;
}

void Engine::admit(Slot& slot) {
  Job& job = *slot.job;
  job.started_at = engine_clock();
  slot.gen = std::make_unique<Generation>(*slot.seq, job.gen);
  if (job.cancel.load()) {
    slot.gen->finish(FinishReason::Cancelled);
    complete(slot);
    return;
  }
  // Batched: the prompt runs in the steps, in chunks beside the other slots' decode tokens.
  Status st = batch_ ? slot.gen->begin(job.prompt) : slot.gen->start(job.prompt);
  if (!st.ok()) {
    complete(slot, st.message());
    return;
  }
  prompt_tokens_ += job.prompt.size();
  reused_tokens_ += uint64_t(slot.gen->reused_tokens());
  std::lock_guard jl(job.mu);
  job.reused_tokens = slot.gen->reused_tokens();
}

void Engine::step_slot(Slot& slot, bool alone) {
  Job& job = *slot.job;
  if (job.cancel.load()) {
    slot.gen->finish(FinishReason::Cancelled);
    complete(slot);
    return;
  }
  if (slot.gen->prefilling()) {  // begun for a batch (cannot happen without one)
    complete(slot, "engine: a prefilling slot stepped alone");
    return;
  }
  emit(slot, alone);
}

void Engine::emit(Slot& slot, bool device_chain) {
  Job& job = *slot.job;
  auto tok = slot.gen->next(device_chain);
  if (!tok.ok()) {
    complete(slot, tok.status().message());
    return;
  }
  {
    std::lock_guard jl(job.mu);
    job.tokens.push_back(*tok);
    if (job.tokens.size() == 1) job.first_token_at = engine_clock();
  }
  job.cv.notify_all();
  if (slot.gen->finished()) complete(slot);
}

// One batched step: the decode token of every generating slot first, then prompt chunks of the prefilling slots
// in the budget left (so a long prompt delays the running generations by one step at most), in the
// scheduler's order.
void Engine::step_batched(const std::vector<int>& order) {
  entries_.clear();
  batch_->clear();
  for (int pass = 0; pass < 2; ++pass)
    for (int r : order) {
      Slot& slot = slots_[size_t(r)];
      if (!slot.job || !slot.gen || slot.gen->prefilling() != (pass == 1)) continue;
      if (slot.job->cancel.load()) {
        slot.gen->finish(FinishReason::Cancelled);
        complete(slot);
        continue;
      }
      if (slot.gen->ready()) {  // a token drawn earlier, not yet handed over
        emit(slot, false);
        continue;
      }
      if (batch_->size() >= batch_->max_seqs()) continue;
      const int budget = std::min(batch_->rows_left(), slot.session->options().max_batch);
      const auto in = slot.gen->step_input(budget);
      if (in.empty()) continue;
      if (Status st = batch_->add(*slot.session, in); !st.ok()) {
        slot.gen->finish(FinishReason::Cancelled);
        complete(slot, st.message());
        continue;
      }
      entries_.push_back({r, in.size()});
    }
  if (entries_.empty()) return;
  samplers_.clear();
  for (const Entry& e : entries_) samplers_.push_back(&slots_[size_t(e.slot)].gen->sampler());
  Status st = batch_->run();
  if (st.ok()) st = batch_->draw(samplers_, drawn_);
  for (size_t i = 0; i < entries_.size(); ++i) {
    Slot& slot = slots_[size_t(entries_[i].slot)];
    if (!st.ok()) {
      slot.seq->reset();
      slot.gen->finish(FinishReason::Cancelled);
      complete(slot, st.message());
      continue;
    }
    slot.gen->step_done(entries_[i].n, drawn_[i]);
    if (slot.gen->ready()) emit(slot, false);
  }
}

void Engine::complete(Slot& slot, const std::string& error) {
  // The slot is free (and counted so) before the job reads as done.
  std::shared_ptr<Job> job = std::move(slot.job);
  const int generated = slot.gen ? slot.gen->generated() : 0;
  const FinishReason why = slot.gen && slot.gen->finished() ? slot.gen->finish_reason() : FinishReason::Cancelled;
  slot.gen.reset();
  slot.last_used = ++tick_;
  completion_tokens_ += uint64_t(generated);
  --running_;
  {
    std::lock_guard jl(job->mu);
    job->done = true;
    job->finish = why;
    job->error = error;
    job->finished_at = engine_clock();
  }
  job->cv.notify_all();
}

void Engine::loop() {
  for (;;) {
    {
      std::unique_lock lk(mu_);
      auto has_free = [&] {
        return std::any_of(slots_.begin(), slots_.end(), [](const Slot& s) { return !s.job; });
      };
      cv_.wait(lk, [&] { return stopping_ || running_.load() > 0 || (!queue_.empty() && has_free()); });
      if (stopping_) break;
      while (!queue_.empty()) {
        const int s = pick_slot(*queue_.front());
        if (s < 0) break;
        slots_[size_t(s)].job = std::move(queue_.front());
        queue_.pop_front();
        ++running_;
        admitting_.push_back(s);
      }
    }
    for (int s : admitting_) admit(slots_[size_t(s)]);
    admitting_.clear();
    std::vector<int> active;
    for (size_t i = 0; i < slots_.size(); ++i)
      if (slots_[i].job) active.push_back(int(i));
    // The device-chained step only for a slot that runs alone: another session's step in between would
    // discard it (and on the GPU cost a wait).
    const bool alone = active.size() == 1;
    const auto order = scheduler_->next_rows(active);
    if (batch_ && !(alone && !slots_[size_t(active[0])].gen->prefilling())) {
      step_batched(order);
      continue;
    }
    for (int r : order)
      if (slots_[size_t(r)].job) step_slot(slots_[size_t(r)], alone);
  }
  for (Slot& s : slots_)
    if (s.job) {
      if (s.gen) s.gen->finish(FinishReason::Cancelled);
      complete(s);
    }
  std::deque<std::shared_ptr<Job>> left;
  {
    std::lock_guard lk(mu_);
    left.swap(queue_);
  }
  for (auto& j : left) {
    std::lock_guard jl(j->mu);
    j->done = true;
    j->finish = FinishReason::Cancelled;
    j->cv.notify_all();
  }
}

}  // namespace gptoss::serve
