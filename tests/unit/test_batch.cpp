// Batched steps (gptoss::Batch) against each sequence run alone: on the CPU a row's result must not depend on
// its neighbours, so every sequence's logits in random mixes of prefill chunks and decode tokens match its own
// single run; and the serve engine's batched steps produce the tokens each request gets alone.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "gptoss/generate.h"
#include "model/model.h"
#include "serve/engine.h"
#include "test_util.h"

using namespace gptoss;
using gptoss::test::golden_dir;
using gptoss::test::rel_err;

namespace {

std::vector<int32_t> random_tokens(std::mt19937& rng, size_t n, int vocab) {
  std::uniform_int_distribution<int32_t> d(0, vocab - 1);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = d(rng);
  return t;
}

// Every position's logits of `tokens` run alone in one session ([n, vocab]).
std::vector<float> alone(Model& m, const std::vector<int32_t>& tokens, int max_context) {
  auto s = Session::create(m, {.max_context = max_context, .max_batch = 8});
  EXPECT_TRUE(s.ok());
  std::vector<float> all;
  EXPECT_TRUE((*s)->forward(tokens, &all).ok());
  return all;
}

// Random mixes: sequences of different lengths (past the sliding window of 16, one filling its context to the
// brim), two sharing a prefix, joining late and sitting out steps, chunks of 1..8 tokens; each step's logits of
// each sequence against the same position run alone, within `tol` per row.
void each_sequence_matches_its_run_alone(CpuMath math, double tol) {
  auto model = Model::open(golden_dir("tiny_b"), {.device = "cpu", .threads = 2, .cpu_math = math});
  ASSERT_TRUE(model.ok()) << model.status().message();
  Model& m = **model;
  const int V = m.config().vocab_size, ctx = 64;
  std::mt19937 rng(7);
  std::vector<std::vector<int32_t>> seqs;
  for (size_t n : {40, 64, 5, 33, 50}) seqs.push_back(random_tokens(rng, n, V));
  std::copy_n(seqs[1].begin(), 20, seqs[3].begin());  // a shared prefix
  std::vector<std::vector<float>> ref;
  for (const auto& s : seqs) ref.push_back(alone(m, s, ctx));

  auto batch = Batch::create(m, {.max_rows = 24, .max_seqs = 5});
  ASSERT_TRUE(batch.ok()) << batch.status().message();
  std::vector<std::unique_ptr<Session>> sessions;
  for (size_t i = 0; i < seqs.size(); ++i) {
    auto s = Session::create(m, {.max_context = ctx, .max_batch = 8});
    ASSERT_TRUE(s.ok());
    sessions.push_back(std::move(*s));
  }
  std::vector<size_t> done(seqs.size(), 0);
  double worst = 0;
  int steps = 0, mixed = 0;
  for (; steps < 400; ++steps) {
    struct Added {
      size_t seq, n;
    };
    std::vector<Added> added;
    bool has_decode = false, has_chunk = false;
    for (size_t i = 0; i < seqs.size(); ++i) {
      if (done[i] == seqs[i].size()) continue;
      if (i == 4 && steps < 6) continue;      // joins late
      if (std::uniform_int_distribution<int>(0, 4)(rng) == 0) continue;  // sits this step out
      const size_t left = seqs[i].size() - done[i];
      // Half the rows are single tokens (as decode steps are), the rest chunks of 2..8.
      const int want = std::uniform_int_distribution<int>(0, 1)(rng) ? 1 : std::uniform_int_distribution<int>(2, 8)(rng);
      const size_t n = std::min<size_t>({left, size_t(want), size_t((*batch)->rows_left())});
      if (n == 0) break;
      ASSERT_TRUE((*batch)->add(*sessions[i], std::span<const int32_t>(seqs[i]).subspan(done[i], n)).ok());
      added.push_back({i, n});
      (n == 1 ? has_decode : has_chunk) = true;
    }
    if (added.empty()) {
      if (std::all_of(done.begin(), done.end(), [&, i = size_t(0)](size_t d) mutable { return d == seqs[i++].size(); }))
        break;
      continue;
    }
    mixed += has_decode && has_chunk;
    ASSERT_TRUE((*batch)->run().ok());
    for (size_t e = 0; e < added.size(); ++e) {
      const auto [i, n] = added[e];
      done[i] += n;
      EXPECT_EQ(sessions[i]->position(), int(done[i]));
      auto lg = (*batch)->logits(int(e));
      ASSERT_TRUE(lg.ok()) << lg.status().message();
      const float* want = ref[i].data() + (done[i] - 1) * size_t(V);
      const double err = rel_err(lg->data(), want, size_t(V));
      worst = std::max(worst, err);
      EXPECT_LE(err, tol) << "sequence " << i << " at position " << done[i] - 1 << " (step " << steps << ")";
    }
  }
  for (size_t i = 0; i < seqs.size(); ++i) EXPECT_EQ(done[i], seqs[i].size()) << "sequence " << i;
  EXPECT_GT(mixed, 3) << "too few steps mixed decode tokens with prefill chunks";
  std::printf("%s: batched vs alone over %d steps (%d mixed): worst relative error %.3g\n",
              math == CpuMath::Exact ? "exact" : "fast", steps, mixed, worst);
}

}  // namespace

// --cpu-math exact: a row's result does not depend on its neighbours (the same float32 sums in every step).
TEST(Batch, EachSequenceMatchesItsRunAlone) { each_sequence_matches_its_run_alone(CpuMath::Exact, 1e-5); }

// --cpu-math fast (the default, so what serve runs): the kernels depend on how many tokens an expert gets in
// the step (int16 activations below 8, rows decoded once above), so a row moves with its neighbours, but stays
// within the fast path's own tolerance of its run alone.
TEST(Batch, FastMathSequencesStayCloseToTheirRunsAlone) {
  each_sequence_matches_its_run_alone(CpuMath::Fast, 1e-2);
}

// Greedy draws of a batch are each row's argmax; a failed add changes nothing.
TEST(Batch, DrawsAndLimits) {
  auto model = Model::open(golden_dir("tiny_a"), {.device = "cpu"});
  ASSERT_TRUE(model.ok()) << model.status().message();
  Model& m = **model;
  const int V = m.config().vocab_size;
  auto batch = Batch::create(m, {.max_rows = 6, .max_seqs = 2});
  ASSERT_TRUE(batch.ok());
  auto a = Session::create(m, {.max_context = 8, .max_batch = 4});
  auto b = Session::create(m, {.max_context = 8, .max_batch = 4});
  auto c = Session::create(m, {.max_context = 8, .max_batch = 4});
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  Batch& B = **batch;
  const std::vector<int32_t> three = {1, 2, 3}, five = {1, 2, 3, 4, 5}, bad = {1, V};
  EXPECT_FALSE(B.add(**a, five).ok());  // more than the session's max_batch (4)
  EXPECT_FALSE(B.add(**a, bad).ok());   // token out of range
  EXPECT_FALSE(B.add(**a, {}).ok());
  EXPECT_TRUE(B.empty());
  ASSERT_TRUE(B.add(**a, three).ok());
  EXPECT_FALSE(B.add(**a, three).ok());  // the same session twice
  EXPECT_FALSE(B.add(**b, std::vector<int32_t>{1, 2, 3, 4}).ok());  // 7 rows > 6
  ASSERT_TRUE(B.add(**b, three).ok());
  EXPECT_FALSE(B.add(**c, std::vector<int32_t>{1}).ok());  // a third session > max_seqs
  EXPECT_EQ(B.rows(), 6);
  ASSERT_TRUE(B.run().ok());
  EXPECT_TRUE(B.empty());
  EXPECT_EQ((*a)->position(), 3);
  std::vector<int32_t> ids;
  Sampler* greedy[2] = {nullptr, nullptr};
  ASSERT_TRUE(B.draw(greedy, ids).ok());
  for (int i = 0; i < 2; ++i) {
    auto lg = B.logits(i);
    ASSERT_TRUE(lg.ok());
    EXPECT_EQ(ids[size_t(i)], int32_t(std::max_element(lg->begin(), lg->end()) - lg->begin()));
  }
  EXPECT_FALSE(B.logits(2).ok());
  // Context: 3 + 5 > 8 fails, nothing added.
  EXPECT_FALSE(B.add(**a, std::vector<int32_t>(5, 1)).ok());
  EXPECT_TRUE(B.empty());
  EXPECT_FALSE(B.run().ok());  // nothing to run
}

// The serve engine with a Batch: concurrent greedy requests (prompts of different lengths, some longer than one
// step's chunk) get exactly the tokens each gets alone.
TEST(Batch, EngineBatchedMatchesAlone) {
  // Exact math: with the fast kernels a near-tie could flip with the batch's make-up (see above).
  auto model = Model::open(golden_dir("tiny_b"), {.device = "cpu", .threads = 2, .cpu_math = CpuMath::Exact});
  ASSERT_TRUE(model.ok()) << model.status().message();
  Model& m = **model;
  const int V = m.config().vocab_size;
  std::mt19937 rng(3);
  std::vector<std::vector<int32_t>> prompts;
  for (size_t n : {3, 30, 12, 1, 21, 9}) prompts.push_back(random_tokens(rng, n, V));
  GenerateOptions go;
  go.sampler.temperature = 0;
  go.max_tokens = 12;
  std::vector<std::vector<int32_t>> want;
  for (const auto& p : prompts) {
    auto s = Session::create(m, {.max_context = 64, .max_batch = 8});
    ASSERT_TRUE(s.ok());
    Sequence seq(**s);
    auto r = generate(seq, p, go, nullptr);
    ASSERT_TRUE(r.ok()) << r.status().message();
    want.push_back(r->tokens);
  }
  std::vector<std::unique_ptr<Session>> sessions;
  for (int i = 0; i < 4; ++i) {
    auto s = Session::create(m, {.max_context = 64, .max_batch = 8});
    ASSERT_TRUE(s.ok());
    sessions.push_back(std::move(*s));
  }
  auto batch = Batch::create(m, {.max_rows = 16, .max_seqs = 4});
  ASSERT_TRUE(batch.ok());
  serve::Engine engine(std::move(sessions), std::make_unique<serve::RoundRobinScheduler>(), std::move(*batch));
  std::vector<std::shared_ptr<serve::Job>> jobs;
  for (const auto& p : prompts) {
    auto j = std::make_shared<serve::Job>();
    j->prompt = p;
    j->gen = go;
    engine.submit(j);
    jobs.push_back(j);
  }
  for (size_t i = 0; i < jobs.size(); ++i) {
    std::vector<int32_t> got;
    while (!jobs[i]->wait_tokens(0, 30.0, got)) {
    }
    EXPECT_TRUE(jobs[i]->error.empty()) << jobs[i]->error;
    EXPECT_EQ(got, want[i]) << "request " << i;
    EXPECT_EQ(jobs[i]->finish, FinishReason::Length);
  }
  engine.shutdown();
}

// On the GPU: batched steps (decode rows beside prefill chunks, more than 8 rows: the prefill kernels) against
// each sequence run alone (one token at a time after its prompt: the decode kernels), bf16 KV cache: within
// 1e-2 relative and the same top-1 token, as the CUDA backend's own decode and prefill paths agree.
TEST(Batch, CudaSequencesMatchTheirRunsAlone) {
  if (!cuda_usable()) GTEST_SKIP() << "no CUDA device: CUDA test skipped";
  auto model = Model::open(golden_dir("tiny_b"), {.device = "cuda"});
  ASSERT_TRUE(model.ok()) << model.status().message();
  Model& m = **model;
  const int V = m.config().vocab_size, ctx = 96;
  std::mt19937 rng(5);
  std::vector<std::vector<int32_t>> seqs;
  for (size_t n : {70, 9, 40, 96}) seqs.push_back(random_tokens(rng, n, V));
  const SessionOptions so{.max_context = ctx, .max_batch = 16, .kv_precision = KvPrecision::BF16};
  std::vector<std::vector<float>> ref;
  for (const auto& s : seqs) {
    auto a = Session::create(m, so);
    ASSERT_TRUE(a.ok());
    std::vector<float> all;
    ASSERT_TRUE((*a)->forward(s, &all).ok());
    ref.push_back(std::move(all));
  }
  auto batch = Batch::create(m, {.max_rows = 40, .max_seqs = 4});
  ASSERT_TRUE(batch.ok());
  std::vector<std::unique_ptr<Session>> sessions;
  for (size_t i = 0; i < seqs.size(); ++i) sessions.push_back(std::move(*Session::create(m, so)));
  std::vector<size_t> done(seqs.size(), 0);
  int rows_checked = 0, top1_same = 0;
  double worst = 0;
  for (int step = 0; step < 200; ++step) {
    std::vector<std::pair<size_t, size_t>> added;
    for (size_t i = 0; i < seqs.size(); ++i) {
      const size_t n = std::min({seqs[i].size() - done[i], size_t(1 + (step * 7 + int(i) * 3) % 16),
                                 size_t((*batch)->rows_left())});
      if (n == 0) continue;
      ASSERT_TRUE((*batch)->add(*sessions[i], std::span<const int32_t>(seqs[i]).subspan(done[i], n)).ok());
      added.emplace_back(i, n);
    }
    if (added.empty()) break;
    ASSERT_TRUE((*batch)->run().ok());
    for (size_t e = 0; e < added.size(); ++e) {
      const auto [i, n] = added[e];
      done[i] += n;
      auto lg = (*batch)->logits(int(e));
      ASSERT_TRUE(lg.ok()) << lg.status().message();
      const float* want = ref[i].data() + (done[i] - 1) * size_t(V);
      const double err = rel_err(lg->data(), want, size_t(V));
      worst = std::max(worst, err);
      EXPECT_LE(err, 1e-2) << "sequence " << i << " at position " << done[i] - 1;
      ++rows_checked;
      top1_same += std::max_element(lg->begin(), lg->end()) - lg->begin() == std::max_element(want, want + V) - want;
    }
  }
  for (size_t i = 0; i < seqs.size(); ++i) EXPECT_EQ(done[i], seqs[i].size());
  EXPECT_GE(top1_same, rows_checked * 99 / 100) << top1_same << " of " << rows_checked << " top-1 agree";
  std::printf("CUDA batched vs alone: %d rows, worst relative error %.3g, top-1 %d/%d\n", rows_checked, worst,
              top1_same, rows_checked);
}

// On the GPU, continuous batching's decode steps: 40 sequences joining at different steps, each its prompt in
// chunks (of up to 12 rows: the prefill kernel beside the others' decode rows) then one token per step, so most
// steps carry many one-token sequences (attended to in one launch per layer) beside a few chunks. Caches of two
// sizes (the full layer's decode split counts differ within a launch), lengths past the window of 16. Every
// step's logits of every sequence against the sequence run alone (its prompt, then one token at a time: the
// one-token decode path): within 1e-2 relative and the same top-1 token (99% of rows).
TEST(Batch, CudaManyDecodingSequencesMatchTheirRunsAlone) {
  if (!cuda_usable()) GTEST_SKIP() << "no CUDA device: CUDA test skipped";
  auto model = Model::open(golden_dir("tiny_b"), {.device = "cuda"});
  ASSERT_TRUE(model.ok()) << model.status().message();
  Model& m = **model;
  const int V = m.config().vocab_size;
  constexpr size_t kSeqs = 40;
  std::mt19937 rng(11);
  std::vector<std::vector<int32_t>> seqs;
  std::vector<size_t> prompt;
  std::vector<SessionOptions> opts;
  for (size_t i = 0; i < kSeqs; ++i) {
    seqs.push_back(random_tokens(rng, 20 + (i * 13) % 45, V));  // 20..64 tokens
    prompt.push_back(1 + (i * 7) % 17);                           // 1..17 of them the prompt
    // 1024 positions (tiny_b's largest): several decode splits of the full layer; 64: one.
    opts.push_back({.max_context = i % 2 ? 64 : 1024, .max_batch = 16, .kv_precision = KvPrecision::BF16});
  }
  std::vector<std::vector<float>> ref;  // [length, vocab] each
  for (size_t i = 0; i < kSeqs; ++i) {
    auto a = Session::create(m, opts[i]);
    ASSERT_TRUE(a.ok()) << a.status().message();
    std::vector<float> all;
    ASSERT_TRUE((*a)->forward(std::span<const int32_t>(seqs[i]).first(prompt[i]), &all).ok());
    for (size_t p = prompt[i]; p < seqs[i].size(); ++p) {
      auto lg = (*a)->forward(std::span<const int32_t>(seqs[i]).subspan(p, 1));
      ASSERT_TRUE(lg.ok()) << lg.status().message();
      all.insert(all.end(), lg->begin(), lg->end());
    }
    ASSERT_EQ(all.size(), seqs[i].size() * size_t(V));
    ref.push_back(std::move(all));
  }
  auto batch = Batch::create(m, {.max_rows = 64, .max_seqs = int(kSeqs)});
  ASSERT_TRUE(batch.ok()) << batch.status().message();
  std::vector<std::unique_ptr<Session>> sessions;
  for (size_t i = 0; i < kSeqs; ++i) {
    auto s = Session::create(m, opts[i]);
    ASSERT_TRUE(s.ok());
    sessions.push_back(std::move(*s));
  }
  std::vector<size_t> done(kSeqs, 0);
  int rows_checked = 0, top1_same = 0, most_decoding = 0;
  double worst = 0;
  for (int step = 0; step < 400; ++step) {
    std::vector<std::pair<size_t, size_t>> added;
    int decoding = 0;
    for (size_t i = 0; i < kSeqs; ++i) {
      if (done[i] == seqs[i].size() || step < int(i / 3)) continue;  // finished, or joins later
      const size_t want = done[i] < prompt[i] ? std::min<size_t>(prompt[i] - done[i], 12) : 1;
      const size_t n = std::min(want, size_t((*batch)->rows_left()));
      if (n == 0) continue;
      ASSERT_TRUE((*batch)->add(*sessions[i], std::span<const int32_t>(seqs[i]).subspan(done[i], n)).ok());
      added.emplace_back(i, n);
      decoding += n == 1;
    }
    if (added.empty()) break;
    most_decoding = std::max(most_decoding, decoding);
    ASSERT_TRUE((*batch)->run().ok());
    for (size_t e = 0; e < added.size(); ++e) {
      const auto [i, n] = added[e];
      done[i] += n;
      auto lg = (*batch)->logits(int(e));
      ASSERT_TRUE(lg.ok()) << lg.status().message();
      const float* want = ref[i].data() + (done[i] - 1) * size_t(V);
      const double err = rel_err(lg->data(), want, size_t(V));
      worst = std::max(worst, err);
      EXPECT_LE(err, 1e-2) << "sequence " << i << " at position " << done[i] - 1 << " (step " << step << ")";
      ++rows_checked;
      top1_same += std::max_element(lg->begin(), lg->end()) - lg->begin() == std::max_element(want, want + V) - want;
    }
  }
  for (size_t i = 0; i < kSeqs; ++i) EXPECT_EQ(done[i], seqs[i].size()) << "sequence " << i;
  EXPECT_GE(most_decoding, 20) << "too few one-token sequences in one step";
  // Steps of more than 8 rows run the projections as bf16 hi/lo GEMMs (about 16 bits): a near tie may flip.
  EXPECT_GE(top1_same, rows_checked * 99 / 100) << top1_same << " of " << rows_checked << " top-1 agree";
  std::printf("CUDA %zu sequences batched vs alone: %d rows, worst relative error %.3g, top-1 %d/%d, up to %d "
              "one-token sequences a step\n",
              kSeqs, rows_checked, worst, top1_same, rows_checked, most_decoding);
}

// serve's default slot count: 4 where the backend reports no device memory (the CPU), else what fits beyond the
// reserve, between 1 and kMaxAutoSlots.
TEST(ServeSlots, AutoFromFreeMemory) {
  using gptoss::serve::auto_slots;
  constexpr size_t GiB = size_t(1) << 30, MiB = size_t(1) << 20;
  EXPECT_EQ(auto_slots(0, 200 * MiB), gptoss::serve::kCpuSlots);
  EXPECT_EQ(auto_slots(GiB, 200 * MiB), 1);             // nothing beyond the reserve: the slot already made
  EXPECT_EQ(auto_slots(11 * GiB, 1 * GiB), 9);          // 11 - (1 + 1.1) = 8.9 GiB: 8 more slots
  EXPECT_EQ(auto_slots(60 * GiB, 200 * MiB), gptoss::serve::kMaxAutoSlots);
  EXPECT_EQ(auto_slots(10 * GiB, 0), 1);
}
