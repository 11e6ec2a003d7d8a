// gptoss serve: an OpenAI-compatible HTTP server (src/serve/) over one model with --parallel slots.
#include <filesystem>

#include "cli/command.h"
#include "cli/run_options.h"
#include "model/model.h"
#include "serve/openai_api.h"
#include "serve/server.h"
#include "tokenizer/harmony.h"

namespace gptoss::cli {

namespace {

struct ServeCmd {
  RunOptions o;
  serve::ServerOptions so;
  std::string tokenizer;
  std::string conversation_date;
  std::string model_name;
  int parallel = 0;  // 0: serve::auto_slots
  int batch_tokens = 256;
  bool no_batching = false;
  int run() {
    if (!conversation_date.empty() && !serve::is_valid_conversation_date(conversation_date))
      return fail(Error("--conversation-date '{}': expected YYYY-MM-DD", conversation_date));
    auto tok = tokenizer.empty() ? Tokenizer::from_model_dir(o.model) : Tokenizer::from_file(tokenizer);
    if (!tok.ok()) return fail(tok.status().with_context("serve needs the tokenizer (--tokenizer FILE)"));
    auto l = load_model(o);
    if (!l.ok()) return fail(l.status());
    const int vocab = l->model->config().vocab_size;
    if (tok->token_count() > uint32_t(vocab))
      return fail(Error("the tokenizer has {} ids but the model's vocabulary has only {} rows", tok->token_count(),
                        vocab));
    auto enc = harmony::HarmonyEncoding::create(*tok);
    if (!enc.ok()) return fail(enc.status());
    std::vector<std::unique_ptr<Session>> sessions;
    const SessionOptions sopts = l->session->options();
    if (parallel == 0) {
      const size_t slot_bytes = l->session->kv_bytes();
      parallel = serve::auto_slots(l->model->backend().free_memory_bytes(), slot_bytes);
      fmt::print(stderr, "serve: {} slots of {} positions, {:.2f} GB of KV cache each (--parallel to choose)\n",
                 parallel, sopts.max_context, double(slot_bytes) / 1e9);
    }
    sessions.push_back(std::move(l->session));
    for (int i = 1; i < parallel; ++i) {
      auto s = Session::create(*l->model, sopts);
      if (!s.ok()) return fail(s.status().with_context(fmt::format("slot {} of --parallel {}", i + 1, parallel)));
      sessions.push_back(std::move(*s));
    }
    serve::ServeContext ctx;
    ctx.encoding = &*enc;
    ctx.mapping.conversation_date = conversation_date;
    ctx.max_context = sopts.max_context;
    ctx.vocab_size = vocab;
    ctx.model_id = !model_name.empty() ? model_name
                                       : std::filesystem::path(o.model).lexically_normal().filename().string();
    if (ctx.model_id.empty()) ctx.model_id = std::filesystem::path(o.model).lexically_normal().parent_path().filename();
    if (ctx.model_id.empty()) ctx.model_id = "gpt-oss";
    std::unique_ptr<Batch> batch;
    if (!no_batching) {
      auto b = Batch::create(*l->model, {.max_rows = std::max(batch_tokens, parallel), .max_seqs = parallel});
      if (!b.ok()) return fail(b.status().with_context("--batch-tokens"));
      batch = std::move(*b);
    }
    serve::Engine engine(std::move(sessions), std::make_unique<serve::RoundRobinScheduler>(), std::move(batch));
    Status st = serve::run_server(engine, ctx, so);
    engine.shutdown();
    if (!st.ok()) return fail(st);
    return 0;
  }
};

}  // namespace

GPTOSS_REGISTER_COMMAND(47, [](CLI::App& app, CommandContext& ctx) {
  auto cmd = std::make_shared<ServeCmd>();
  auto* sub = app.add_subcommand("serve", "OpenAI-compatible HTTP server: /v1/chat/completions, /v1/responses, "
                                          "/v1/completions, /v1/models, /health, /metrics");
  add_run_options(sub, cmd->o);
  sub->add_option("--host", cmd->so.host, "Address to listen on (default 127.0.0.1: this machine only)");
  sub->add_option("--port", cmd->so.port, "Port (0: any free port, printed on stderr)")->check(CLI::Range(0, 65535));
  sub->add_option("--api-key", cmd->so.api_key, "Require 'Authorization: Bearer KEY' on every route but /health");
  sub->add_option("--parallel", cmd->parallel,
                  "Requests served at once (slots, each with its own KV cache). Default: on a GPU as many as its free "
                  "memory holds after the weights, at most 64 (a batched step runs them all at once); 4 on the CPU")
      ->check(CLI::Range(1, 256));
  sub->add_option("--batch-tokens", cmd->batch_tokens,
                  "Tokens one batched step carries, all requests together: a decode token per generating request, "
                  "prompt chunks in the rest (at least --parallel)")
      ->check(CLI::Range(1, 65536));
  sub->add_flag("--no-batching", cmd->no_batching,
                "Step the requests one at a time (round-robin) instead of in one batched step");
  sub->add_option("--conversation-date", cmd->conversation_date,
                  "Date in the system message, YYYY-MM-DD (default: today, UTC)");
  sub->add_option("--max-body-bytes", cmd->so.max_body_bytes, "Largest request body (larger: 413)")
      ->check(CLI::Range(size_t(1024), size_t(1) << 32));
  sub->add_option("--request-timeout", cmd->so.request_timeout_s, "Seconds a connection may stay idle mid-request")
      ->check(CLI::Range(1, 86400));
  sub->add_option("--tokenizer", cmd->tokenizer, "tokenizer.json or .tiktoken (default: the model directory's)");
  sub->add_option("--model-name", cmd->model_name, "Model id in /v1/models and responses (default: the directory name)");
  sub->callback([cmd, &ctx] { ctx.run = [cmd] { return cmd->run(); }; });
});

}  // namespace gptoss::cli
