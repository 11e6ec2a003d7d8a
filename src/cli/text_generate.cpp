#include "cli/text_generate.h"

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/chat_runner.h"
#include "cli/command.h"
#include "generate/text_stream.h"
#include "gptoss/generate.h"
#include "model/model.h"

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

Result<ChatSettings> chat_settings(const TextOptions& t) {
  const auto effort = harmony::parse_reasoning_effort(t.reasoning_effort);
  if (!effort) return Error("reasoning effort '{}': expected low, medium or high", t.reasoning_effort);
  return ChatSettings{
      .effort = *effort, .developer_instructions = t.system, .sampler = t.sampler, .max_tokens = t.max_tokens};
}

Result<Tokenizer> load_tokenizer(const TextOptions& t, const std::string& model_dir) {
  if (!t.tokenizer.empty()) return Tokenizer::from_file(t.tokenizer);
  auto tok = Tokenizer::from_model_dir(model_dir);
  if (!tok.ok())
    return tok.status().with_context("no tokenizer in the model directory (pass --tokenizer FILE)");
  return tok;
}

namespace {

// generate --prompt --json: what was said and how long it took.
void print_json(const std::string& text, const std::string& reasoning, int prompt_tokens, int completion_tokens,
                double prefill_s, double decode_s, const char* finish, const std::string& harmony_error = {}) {
  nlohmann::ordered_json j = {
      {"text", text},
      {"reasoning", reasoning},
      {"prompt_tokens", prompt_tokens},
      {"completion_tokens", completion_tokens},
      {"finish_reason", finish},
      {"prefill_seconds", prefill_s},
      {"decode_seconds", decode_s},
      {"decode_tokens_per_s", completion_tokens > 1 && decode_s > 0 ? (completion_tokens - 1) / decode_s : 0.0},
      {"harmony_error", harmony_error.empty() ? nlohmann::ordered_json() : nlohmann::ordered_json(harmony_error)}};
  std::printf("%s\n", j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace).c_str());
}

}  // namespace

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
    const std::vector<int32_t> in(ids.begin(), ids.end());
    GenerateOptions go;
    go.sampler = t.sampler;
    go.max_tokens = t.max_tokens;
    for (const char* name : {"<|endoftext|>", "<|return|>"})
      if (auto id = tok->special_token_id(name)) go.stop_tokens.push_back(int32_t(*id));
    TextStream text(*tok, {});
    std::string all;
    auto out = [&](const std::string& s) {
      if (t.json) return all.append(s), void();
      std::fwrite(s.data(), 1, s.size(), stdout);
      std::fflush(stdout);
    };
    Sequence seq(*l->session);
    auto r = generate(seq, in, go, [&](int32_t id) {
      if (std::find(go.stop_tokens.begin(), go.stop_tokens.end(), id) == go.stop_tokens.end()) out(text.push(id));
      return true;
    });
    if (!r.ok()) return fail(r.status());
    out(text.finish());
    if (t.json)
      print_json(all, "", r->prompt_tokens, int(r->tokens.size()), r->prefill_seconds, r->decode_seconds,
                 finish_reason_name(r->finish));
    else
      std::fputs("\n", stdout);
    return 0;
  }
  auto cs = chat_settings(t);
  if (!cs.ok()) return fail(cs.status());
  auto runner = ChatRunner::create(*l->model, *l->session, *tok, *cs);
  if (!runner.ok()) return fail(runner.status());
  std::string final_text, reasoning;
  auto on_text = [&](const std::string& channel, const std::string& text) {
    if (channel == "final") {
      final_text += text;
      if (t.json) return;
      std::fwrite(text.data(), 1, text.size(), stdout);
      std::fflush(stdout);
    } else {
      reasoning += text;
      if (t.show_reasoning && !t.json)
        std::fprintf(stderr, "%s%s%s", tty ? "\x1b[2m" : "", text.c_str(), tty ? "\x1b[0m" : "");
    }
  };
  auto r = (*runner)->ask(prompt, on_text, nullptr);
  if (!t.json) std::fputs("\n", stdout);
  if (!r.ok()) return fail(r.status());
  if (t.json) {
    print_json(final_text, reasoning, r->prompt_tokens, r->generated, r->prefill_seconds, r->decode_seconds,
               r->interrupted ? "cancelled" : r->hit_limit ? "length" : "stop", r->parse_error);
    return 0;
  }
  std::fprintf(stderr, "[%d tokens, %.1f tokens/s%s]\n", r->generated,
               r->decode_seconds > 0 ? r->generated / r->decode_seconds : 0.0,
               r->parse_error.empty() ? "" : (", output is not valid Harmony: " + r->parse_error).c_str());
  return 0;
}

}  // namespace gptoss::cli
