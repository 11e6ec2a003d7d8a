#include "cli/text_generate.h"

#include <cstdio>

#include "cli/chat_runner.h"
#include "cli/command.h"

namespace gptoss::cli {

void add_text_options(CLI::App* app, TextOptions& t) {
  app->add_option("--tokenizer", t.tokenizer,
                  "tokenizer.json or o200k .tiktoken file (default: tokenizer.json in the model directory)");
  app->add_option("--system", t.system, "Developer instructions for the conversation");
  app->add_option("--reasoning-effort", t.reasoning_effort, "low, medium or high")
      ->check(CLI::IsMember({"low", "medium", "high"}));
  app->add_flag("--show-reasoning", t.show_reasoning, "Print the analysis channel too (dimmed on a terminal)");
  app->add_option("--max-tokens", t.max_tokens, "Most tokens per answer")->check(CLI::PositiveNumber);
  app->add_option("--temperature,-t", t.sampler.temperature, "Sampling temperature; 0 = greedy")
      ->check(CLI::NonNegativeNumber);
  app->add_option("--top-k", t.sampler.top_k, "Keep the k most likely tokens (0 = off)");
  app->add_option("--top-p", t.sampler.top_p, "Nucleus sampling threshold")->check(CLI::Range(0.0, 1.0));
  app->add_option("--seed", t.sampler.seed, "Random seed");
}

Result<Tokenizer> load_tokenizer(const TextOptions& t, const std::string& model_dir) {
  if (!t.tokenizer.empty()) return Tokenizer::from_file(t.tokenizer);
  auto tok = Tokenizer::from_model_dir(model_dir);
  if (!tok.ok())
    return tok.status().with_context("no tokenizer in the model directory (pass --tokenizer FILE)");
  return tok;
}

int run_prompt(RunOptions& o, const TextOptions& t, const std::string& prompt) {
  auto tok = load_tokenizer(t, o.model);
  if (!tok.ok()) return fail(tok.status());
  o.max_context = std::max(o.max_context, int(prompt.size()) + t.max_tokens + 512);
  auto l = load_model(o);
  if (!l.ok()) return fail(l.status());
  const bool tty = stderr_is_tty();
  if (t.raw) {  // plain text completion: no chat format, stop at <|endoftext|> / <|return|>
    if (tok->token_count() > uint32_t(l->model->config().vocab_size))
      return fail(Error("the tokenizer has {} ids but the model's vocabulary has only {} rows", tok->token_count(),
                        l->model->config().vocab_size));
    auto ids = tok->encode_ordinary(prompt);
    if (ids.empty()) return fail(Error("the prompt is empty"));
    std::vector<int32_t> in(ids.begin(), ids.end());
    auto r = l->session->forward(in);
    if (!r.ok()) return fail(r.status());
    Sampler sampler(t.sampler);
    StreamDecoder dec(*tok);
    const auto eot = tok->special_token_id("<|endoftext|>"), ret = tok->special_token_id("<|return|>");
    int32_t next = sampler.sample(*r);
    for (int i = 0; i < t.max_tokens; ++i) {
      if ((eot && TokenId(next) == *eot) || (ret && TokenId(next) == *ret)) break;
      std::string s = dec.push(TokenId(next));
      std::fwrite(s.data(), 1, s.size(), stdout);
      std::fflush(stdout);
      if (i + 1 == t.max_tokens) break;
      auto nx = l->session->forward_sample(std::span<const int32_t>(&next, 1), sampler);  // draw on the GPU if there
      if (!nx.ok()) return fail(nx.status());
      next = *nx;
    }
    std::string s = dec.finish();
    std::fwrite(s.data(), 1, s.size(), stdout);
    std::fputs("\n", stdout);
    return 0;
  }
  ChatSettings cs;
  cs.effort = t.reasoning_effort == "low"    ? harmony::ReasoningEffort::low
              : t.reasoning_effort == "high" ? harmony::ReasoningEffort::high
                                             : harmony::ReasoningEffort::medium;
  cs.developer_instructions = t.system;
  cs.sampler = t.sampler;
  cs.max_tokens = t.max_tokens;
  auto runner = ChatRunner::create(*l->model, *l->session, *tok, cs);
  if (!runner.ok()) return fail(runner.status());
  auto on_text = [&](const std::string& channel, const std::string& text) {
    if (channel == "final") {
      std::fwrite(text.data(), 1, text.size(), stdout);
      std::fflush(stdout);
    } else if (t.show_reasoning) {
      std::fprintf(stderr, "%s%s%s", tty ? "\x1b[2m" : "", text.c_str(), tty ? "\x1b[0m" : "");
    }
  };
  auto r = (*runner)->ask(prompt, on_text, nullptr);
  std::fputs("\n", stdout);
  if (!r.ok()) return fail(r.status());
  std::fprintf(stderr, "[%d tokens, %.1f tokens/s%s]\n", r->generated,
               r->decode_seconds > 0 ? r->generated / r->decode_seconds : 0.0,
               r->parse_error.empty() ? "" : (", output is not valid Harmony: " + r->parse_error).c_str());
  return 0;
}

}  // namespace gptoss::cli
