// The generation layer (include/gptoss/generate.h) and the serve engine's scheduling (src/serve/engine.h)
// on a golden tiny checkpoint, CPU.
#include <gtest/gtest.h>

#include <algorithm>

#include "gptoss/generate.h"
#include "serve/engine.h"
#include "test_util.h"

namespace gptoss {
namespace {

using test::golden_dir;

std::unique_ptr<Model> open_tiny() {
  auto m = Model::open(golden_dir("tiny_b"), {.device = "cpu", .threads = 2});
  EXPECT_TRUE(m.ok()) << m.status().message();
  return std::move(*m);
}

std::unique_ptr<Session> session(Model& m, int ctx = 256) {
  auto s = Session::create(m, {.max_context = ctx, .max_batch = 16});
  EXPECT_TRUE(s.ok()) << s.status().message();
  return std::move(*s);
}

// Greedy tokens the long way: one forward per token, argmax on the host.
std::vector<int32_t> greedy_reference(Model& m, const std::vector<int32_t>& prompt, int n) {
  auto s = session(m);
  std::vector<int32_t> out;
  auto logits = s->forward(prompt);
  for (int i = 0; i < n; ++i) {
    const int32_t t = int32_t(std::max_element(logits->begin(), logits->end()) - logits->begin());
    out.push_back(t);
    logits = s->forward(std::span<const int32_t>(&t, 1));
  }
  return out;
}

TEST(StopStrings, HoldsBackPrefixesAndDropsTheMatch) {
  StopStrings s({"STOP", "xy"});
  EXPECT_EQ(s.push("hello S"), "hello ");  // "S" may begin "STOP"
  EXPECT_EQ(s.push("T"), "");
  EXPECT_EQ(s.push("ART "), "START ");  // not a stop after all
  EXPECT_EQ(s.push("ax"), "a");
  EXPECT_EQ(s.push("yz"), "");  // "xy" found: nothing from it on
  EXPECT_TRUE(s.matched());
  EXPECT_EQ(s.push("more"), "");
  EXPECT_EQ(s.flush(), "");
  StopStrings t({"STOP"});
  EXPECT_EQ(t.push("abST"), "ab");
  EXPECT_EQ(t.flush(), "ST");  // end of stream: the held tail was text
  StopStrings none;
  EXPECT_EQ(none.push("STOP"), "STOP");
}

TEST(Generate, GreedyMatchesTheLongWayAndStopsAtMaxTokens) {
  auto m = open_tiny();
  auto s = session(*m);
  Sequence seq(*s);
  const std::vector<int32_t> prompt = {1, 2, 3, 4, 5};
  GenerateOptions go{.sampler = {.temperature = 0}, .max_tokens = 6};
  std::vector<int32_t> seen;
  auto r = generate(seq, prompt, go, [&](int32_t t) { return seen.push_back(t), true; });
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->tokens, greedy_reference(*m, prompt, 6));
  EXPECT_EQ(seen, r->tokens);
  EXPECT_EQ(r->finish, FinishReason::Length);
  // The session holds the prompt and every token but the last (not run yet).
  EXPECT_EQ(seq.tokens().size(), prompt.size() + 5);
  EXPECT_EQ(s->position(), int(prompt.size()) + 5);
}

TEST(Generate, StopTokenCancelAndContextEnd) {
  auto m = open_tiny();
  const std::vector<int32_t> prompt = {7, 8, 9};
  const auto ref = greedy_reference(*m, prompt, 8);
  auto s = session(*m);
  Sequence seq(*s);
  // Stop at the first occurrence of ref[3]: emitted, then the end.
  GenerateOptions go{.sampler = {.temperature = 0}, .max_tokens = 8, .stop_tokens = {ref[3]}};
  auto r = generate(seq, prompt, go, nullptr);
  ASSERT_TRUE(r.ok());
  const size_t first = size_t(std::find(ref.begin(), ref.end(), ref[3]) - ref.begin());
  EXPECT_EQ(r->tokens, std::vector<int32_t>(ref.begin(), ref.begin() + long(first) + 1));
  EXPECT_EQ(r->finish, FinishReason::StopToken);
  // The callback cancels after two tokens.
  int n = 0;
  r = generate(seq, prompt, {.sampler = {.temperature = 0}, .max_tokens = 8}, [&](int32_t) { return ++n < 2; });
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->tokens.size(), 2u);
  EXPECT_EQ(r->finish, FinishReason::Cancelled);
  // A cancel flag already set: no token.
  std::atomic<bool> cancel{true};
  r = generate(seq, prompt, {.sampler = {.temperature = 0}}, nullptr, &cancel);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->tokens.empty());
  EXPECT_EQ(r->finish, FinishReason::Cancelled);
  // A context of prompt + 3: tokens at positions 3..5 are run, the 4th token is the last.
  auto small = session(*m, int(prompt.size()) + 3);
  Sequence sseq(*small);
  r = generate(sseq, prompt, {.sampler = {.temperature = 0}}, nullptr);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->finish, FinishReason::ContextFull);
  EXPECT_EQ(r->tokens, std::vector<int32_t>(ref.begin(), ref.begin() + 4));
}

TEST(Generate, PrefixReuseGivesTheSameTokens) {
  auto m = open_tiny();
  auto s = session(*m);
  Sequence seq(*s);
  const std::vector<int32_t> a = {11, 12, 13, 14, 15, 16};
  GenerateOptions go{.sampler = {.temperature = 0}, .max_tokens = 4};
  auto r1 = generate(seq, a, go, nullptr);
  ASSERT_TRUE(r1.ok());
  EXPECT_EQ(r1->reused_tokens, 0);
  // The next turn: the first answer and more tokens after it; only the new tail runs.
  std::vector<int32_t> b = a;
  b.insert(b.end(), r1->tokens.begin(), r1->tokens.end());
  b.insert(b.end(), {20, 21});
  auto r2 = generate(seq, b, go, nullptr);
  ASSERT_TRUE(r2.ok());
  EXPECT_EQ(r2->reused_tokens, int(a.size() + r1->tokens.size() - 1));  // the last answer token never ran
  EXPECT_EQ(r2->tokens, greedy_reference(*m, b, 4));
  // The same prompt again: everything but its last token is reused.
  auto r3 = generate(seq, b, go, nullptr);
  ASSERT_TRUE(r3.ok());
  EXPECT_EQ(r3->reused_tokens, int(b.size()) - 1);
  EXPECT_EQ(r3->tokens, r2->tokens);
  // A prompt that shares only a prefix of the first: truncated there.
  std::vector<int32_t> c = {11, 12, 13, 40, 41};
  auto r4 = generate(seq, c, go, nullptr);
  ASSERT_TRUE(r4.ok());
  EXPECT_EQ(r4->reused_tokens, 3);
  EXPECT_EQ(r4->tokens, greedy_reference(*m, c, 4));
}

TEST(Generate, SeededSamplingIsTheSameChainedOrNot) {
  auto m = open_tiny();
  const std::vector<int32_t> prompt = {3, 1, 4, 1, 5};
  std::vector<std::vector<int32_t>> runs;
  for (bool chain : {true, false}) {
    auto s = session(*m);
    Sequence seq(*s);
    Generation g(seq, {.sampler = {.temperature = 1.0f, .seed = 42}, .max_tokens = 12});
    ASSERT_TRUE(g.start(prompt).ok());
    std::vector<int32_t> out;
    while (!g.finished()) {
      auto t = g.next(chain);
      ASSERT_TRUE(t.ok());
      out.push_back(*t);
    }
    runs.push_back(out);
  }
  EXPECT_EQ(runs[0], runs[1]);
  EXPECT_EQ(runs[0].size(), 12u);
}

TEST(ServeEngine, RoundRobinRotates) {
  serve::RoundRobinScheduler rr;
  EXPECT_EQ(rr.next_rows({0, 2, 3}), (std::vector<int>{0, 2, 3}));
  EXPECT_EQ(rr.next_rows({0, 2, 3}), (std::vector<int>{2, 3, 0}));
  EXPECT_EQ(rr.next_rows({0, 2, 3}), (std::vector<int>{3, 0, 2}));
  EXPECT_TRUE(rr.next_rows({}).empty());
}

std::vector<int32_t> wait_all(serve::Job& j) {
  std::vector<int32_t> got;
  while (!j.wait_tokens(0, 5.0, got)) {
  }
  return got;
}

TEST(ServeEngine, InterleavedJobsGetTheirOwnTokensAndReuseTheirSlot) {
  auto m = open_tiny();
  // References first: only the engine thread may run the model while the engine lives.
  const std::vector<std::vector<int32_t>> prompts = {{1, 2, 3}, {9, 8, 7, 6}, {5, 5, 5}};
  std::vector<std::vector<int32_t>> want;
  for (const auto& p : prompts) want.push_back(greedy_reference(*m, p, 10));
  std::vector<int32_t> follow_up = prompts[2];  // the job that ran last: its history is still in a slot
  follow_up.insert(follow_up.end(), want[2].begin(), want[2].end() - 1);
  follow_up.push_back(42);
  const auto want_follow_up = greedy_reference(*m, follow_up, 3);
  std::vector<std::unique_ptr<Session>> sessions;
  for (int i = 0; i < 2; ++i) sessions.push_back(session(*m));
  serve::Engine engine(std::move(sessions));
  std::vector<std::shared_ptr<serve::Job>> jobs;
  for (const auto& p : prompts) {  // three jobs on two slots: one waits in the queue
    auto j = std::make_shared<serve::Job>();
    j->prompt = p;
    j->gen = {.sampler = {.temperature = 0}, .max_tokens = 10};
    engine.submit(j);
    jobs.push_back(j);
  }
  for (size_t i = 0; i < jobs.size(); ++i) {
    EXPECT_EQ(wait_all(*jobs[i]), want[i]) << "job " << i;
    EXPECT_EQ(jobs[i]->finish, FinishReason::Length);
  }
  // The third job's conversation goes on: it lands in the slot that holds its history.
  auto next = std::make_shared<serve::Job>();
  next->prompt = follow_up;
  next->gen = {.sampler = {.temperature = 0}, .max_tokens = 3};
  engine.submit(next);
  EXPECT_EQ(wait_all(*next), want_follow_up);
  EXPECT_EQ(next->reused_tokens, int(next->prompt.size()) - 1);
  // A cancelled job ends at once and frees its slot.
  auto c = std::make_shared<serve::Job>();
  c->prompt = {1, 2};
  c->gen = {.sampler = {.temperature = 0}, .max_tokens = 200};
  c->cancel.store(true);
  engine.submit(c);
  wait_all(*c);
  EXPECT_EQ(c->finish, FinishReason::Cancelled);
  EXPECT_EQ(engine.stats().running, 0u);
  engine.shutdown();
  auto late = std::make_shared<serve::Job>();
  late->prompt = {1};
  engine.submit(late);
  wait_all(*late);
  EXPECT_EQ(late->finish, FinishReason::Cancelled);
}

}  // namespace
}  // namespace gptoss
