// gptoss verify | logits | generate (token ids) | bench: the commands that run the model.
#include <sys/resource.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/bench_concurrency.h"
#include "cli/command.h"
#include "cli/run_options.h"
#include "cli/text_generate.h"
#include "core/npy.h"
#include "backend/factory.h"
#include "gptoss/generate.h"
#include "model/model.h"
#include "model/op_knockout.h"

namespace gptoss::cli {

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

double peak_rss_gib() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return double(ru.ru_maxrss) / (1024.0 * 1024.0);
}

// ---- verify: the seed's load-and-forward check -------------------------------------------------
struct VerifyCmd {
  RunOptions o;
  int tokens = 10;
  int run() {
    if (auto st = require_context(o, tokens, "verify --tokens"); !st.ok()) return fail(st);
    auto t0 = Clock::now();
    auto l = load_model(o);
    if (!l.ok()) return fail(l.status());
    const double load_s = seconds_since(t0);
    const ModelConfig& c = l->model->config();
    std::printf("loaded %s (%s layout, %d layers, %s experts) on %s in %.2f s\n", o.model.c_str(),
                layout_name(l->model->checkpoint().layout()), c.num_hidden_layers,
                l->model->checkpoint().experts() == ExpertStorage::Mxfp4 ? "MXFP4" : "dense",
                l->model->backend().name().c_str(), load_s);
    // A native checkpoint carries a checksum per tensor: "verify" checks every one of them.
    const Checkpoint& ck = l->model->checkpoint();
    if (ck.layout() == CheckpointLayout::Native) {
      t0 = Clock::now();
      uint64_t bytes = 0;
      for (const auto& t : ck.checksummed()) bytes += t.bytes.size();
      Progress progress("checksums", bytes, stderr_is_tty());
      Status cs = ck.verify_checksums(&progress);
      progress.finish();
      if (!cs.ok()) return fail(cs);
      std::printf("checksums of all %zu tensors match gptoss.json (%.2f s)\n", ck.checksummed().size(),
                  seconds_since(t0));
    }
    // Like the seed: a dummy input of ones, batch 1.
    std::vector<int32_t> ids(static_cast<size_t>(tokens), 1);
    std::vector<float> logits;
    t0 = Clock::now();
    auto r = l->session->forward(ids, &logits);
    if (!r.ok()) return fail(r.status());
    const double fwd_s = seconds_since(t0);
    size_t bad = 0;
    for (float v : logits) bad += !std::isfinite(v);
    std::printf("forward pass: logits shape (1, %d, %d) in %.3f s\n", tokens, c.vocab_size, fwd_s);
    if (bad) return fail(Error("{} of {} logits are not finite", bad, logits.size()));
    std::printf("all %zu logits finite: OK\n", logits.size());
    return 0;
  }
};

// ---- logits: float32 [tokens, vocab] as .npy; several sequences through batched steps as .npz ----------
struct LogitsCmd {
  RunOptions o;
  std::vector<std::string> tokens;
  std::string out;
  int run() {
    std::vector<std::vector<int32_t>> seqs;
    int64_t longest = 0;
    for (const std::string& t : tokens) {
      auto ids = parse_token_list(t);
      if (!ids.ok()) return fail(ids.status().with_context(fmt::format("--tokens #{}", seqs.size() + 1)));
      if (ids->empty()) return fail(Error("--tokens #{}: no token ids given", seqs.size() + 1));
      longest = std::max(longest, int64_t(ids->size()));
      seqs.push_back(std::move(*ids));
    }
    if (auto st = require_context(o, longest, "logits --tokens"); !st.ok()) return fail(st);
    auto l = load_model(o);
    if (!l.ok()) return fail(l.status());
    const int V = l->model->config().vocab_size;
    if (seqs.size() == 1) {
      std::vector<float> logits;
      auto r = l->session->forward(seqs[0], &logits);
      if (!r.ok()) return fail(r.status());
      auto s = npy_write_f32(out, {int64_t(seqs[0].size()), V}, logits.data());
      if (!s.ok()) return fail(s);
      std::printf("wrote %s: float32 [%zu, %d]\n", out.c_str(), seqs[0].size(), V);
      return 0;
    }
    auto all = run_batched(*l, seqs);
    if (!all.ok()) return fail(all.status());
    std::vector<NpzMember> members;
    for (size_t i = 0; i < seqs.size(); ++i)
      members.push_back({fmt::format("seq{}", i), {int64_t(seqs[i].size()), V}, (*all)[i].data()});
    if (auto s = npz_write_f32(out, members); !s.ok()) return fail(s);
    std::printf("wrote %s: %zu sequences (seq0 .. seq%zu), float32 [tokens, %d] each, run in batched steps\n",
                out.c_str(), seqs.size(), seqs.size() - 1, V);
    return 0;
  }

  // Every sequence in its own session, all of them through shared steps as a scheduler would mix them:
  // sequence i joins at step i and runs 1 + (step + i) % 8 tokens per step (single decode-like rows beside
  // prefill chunks), within the step's budget of max_batch rows.
  Result<std::vector<std::vector<float>>> run_batched(Loaded& l, const std::vector<std::vector<int32_t>>& seqs) {
    Model& m = *l.model;
    const SessionOptions so = l.session->options();
    const int rows = std::max(so.max_batch, int(seqs.size()));
    GPTOSS_ASSIGN(auto batch, Batch::create(m, {.max_rows = rows, .max_seqs = int(seqs.size()), .max_out_rows = rows}));
    std::vector<std::unique_ptr<Session>> sessions;
    for (size_t i = 0; i < seqs.size(); ++i) {
      GPTOSS_ASSIGN(auto s, Session::create(m, so));
      sessions.push_back(std::move(s));
    }
    const size_t V = size_t(m.config().vocab_size);
    std::vector<std::vector<float>> all(seqs.size());
    std::vector<size_t> done(seqs.size(), 0);
    std::vector<std::pair<size_t, size_t>> added;  // (sequence, tokens) per entry
    for (int step = 0;; ++step) {
      added.clear();
      for (size_t i = 0; i < seqs.size() && int(i) <= step; ++i) {
        const size_t want = std::min({seqs[i].size() - done[i], size_t(1 + (step + int(i)) % 8),
                                      size_t(batch->rows_left()), size_t(so.max_batch)});
        if (want == 0) continue;
        GPTOSS_TRY(batch->add(*sessions[i], std::span<const int32_t>(seqs[i]).subspan(done[i], want), true));
        added.emplace_back(i, want);
      }
      if (added.empty()) {
        if (step >= int(seqs.size())) break;
        continue;
      }
      GPTOSS_TRY(batch->run());
      for (size_t e = 0; e < added.size(); ++e) {
        GPTOSS_ASSIGN(auto lg, batch->all_logits(int(e)));
        auto& dst = all[added[e].first];
        dst.insert(dst.end(), lg.begin(), lg.end());
        done[added[e].first] += added[e].second;
      }
    }
    for (size_t i = 0; i < seqs.size(); ++i)
      if (all[i].size() != seqs[i].size() * V) return Error("logits: sequence {} did not run to its end", i);
    return all;
  }
};

// ---- generate from token ids --------------------------------------------------------------------
struct GenerateCmd {
  RunOptions o;
  std::string tokens, prompt;
  int n = 32;
  SamplerOptions so;
  TextOptions text;
  bool json = false;
  int run() {
    if (!prompt.empty()) {
      text.max_tokens = n;
      text.sampler = so;
      text.json = json;
      return run_prompt(o, text, prompt);
    }
    if (tokens.empty()) return fail(Error("generate: give --tokens ID,ID,... or --prompt TEXT"));
    auto ids = parse_token_list(tokens);
    if (!ids.ok()) return fail(ids.status());
    o.max_context = std::max(o.max_context, int(ids->size()) + n);
    auto l = load_model(o);
    if (!l.ok()) return fail(l.status());
    GenerateOptions go;
    go.sampler = so;
    go.max_tokens = n;
    go.stop_tokens = {l->model->config().eos_token_id};
    Sequence seq(*l->session);
    size_t printed = 0;
    auto r = generate(seq, *ids, go, [&](int32_t tok) {
      if (!json) {
        std::printf("%s%d", printed++ ? "," : "", tok);
        std::fflush(stdout);
      }
      return true;
    });
    if (!r.ok()) return fail(r.status());
    const std::vector<int32_t>& out = r->tokens;
    const double rate = out.size() > 1 && r->decode_seconds > 0 ? double(out.size() - 1) / r->decode_seconds : 0.0;
    if (json) {
      std::printf("%s\n", nlohmann::json{{"tokens", out},
                                         {"prefill_seconds", r->prefill_seconds},
                                         {"decode_tokens_per_s", rate}}
                              .dump()
                              .c_str());
    } else {
      std::printf("\n");
      std::fprintf(stderr, "%zu tokens, prefill %.1f tok/s, decode %.2f tok/s\n", out.size(),
                   ids->size() / r->prefill_seconds, rate);
    }
    return 0;
  }
};

// ---- bench: prefill and decode speed against the measured memory bandwidth ----------------------
struct BenchCmd {
  RunOptions o;
  int prompt_tokens = 512, gen_tokens = 32, repeats = 1;
  int context = 0;  // decode measured after this many tokens of context (0: right after the prompt)
  bool json = false;
  bool op_costs = false;
  ConcurrencyBench conc;
  int run() {
    if (conc.concurrency > 0) {
      conc.prompt_tokens = prompt_tokens;
      conc.gen_tokens = gen_tokens;
      conc.json = json;
      return run_concurrency_bench(o, conc);
    }
    if (auto st = require_context(o, int64_t(std::max(context, prompt_tokens)) + gen_tokens + 1, "bench");
        !st.ok())
      return fail(st);
    if (o.max_batch == 0) o.max_batch = std::min(prompt_tokens, 2048);  // prefill in as few chunks as fit
    auto t0 = Clock::now();
    auto l = load_model(o);
    if (!l.ok()) return fail(l.status());
    const double load_s = seconds_since(t0);
    Model& m = *l->model;
    Session& s = *l->session;
    const ModelConfig& c = m.config();
    // A fixed pseudo-random prompt (token ids spread over the vocabulary).
    std::vector<int32_t> prompt(static_cast<size_t>(prompt_tokens));
    uint64_t z = 0x9E3779B97F4A7C15ull;
    for (auto& t : prompt) t = int32_t((z = z * 6364136223846793005ull + 1442695040888963407ull) >> 33) % c.vocab_size;
    double prefill_best = 1e30;
    for (int r = 0; r < std::max(1, repeats); ++r) {
      s.reset();
      t0 = Clock::now();
      auto res = s.forward(prompt);
      if (!res.ok()) return fail(res.status());
      prefill_best = std::min(prefill_best, seconds_since(t0));
    }
    // Decode: fill the cache up to the requested context (not timed), then gen_tokens greedy steps timed
    // (forward_greedy takes the argmax on the device where the backend can) after one warm-up step
    // (first touch of pages, graph capture). Returns seconds.
    auto fill_context = [&]() -> Status {
      if (context <= prompt_tokens) return {};
      std::vector<int32_t> fill(static_cast<size_t>(context - prompt_tokens), 1);
      return s.forward(fill).status();
    };
    auto timed_decode = [&]() -> Result<double> {
      int32_t tok = prompt.back();
      for (int i = -1; i < gen_tokens; ++i) {
        if (i == 0) t0 = Clock::now();
        auto res = s.forward_greedy(std::span<const int32_t>(&tok, 1));
        if (!res.ok()) return res.status();
        tok = *res;
      }
      return seconds_since(t0);
    };
    if (auto st = fill_context(); !st.ok()) return fail(st);
    auto dec = timed_decode();
    if (!dec.ok()) return fail(dec.status());
    const double decode_s = *dec;
    // --op-costs: the same decode with one op left out of every step, interleaved over 2 rounds; an op's cost
    // is what leaving it out saves (best of the rounds against the best baseline).
    struct OpCost {
      const char* name;
      uint32_t mask;
      bool per_layer;
      double best_s = 1e30;
      double saved_us = 0;  // per token, against the best baseline
    };
    std::vector<OpCost> costs;
    double base_s = decode_s;
    if (op_costs) {
      costs = {{"none", 0, false},          {"qkv", op_group::qkv, true}, {"attention", op_group::attention, true},
               {"o_proj", op_group::o_proj, true}, {"moe", op_group::moe, true}, {"lm_head", op_group::lm_head, false}};
      for (int round = 0; round < 2; ++round) {
        for (OpCost& oc : costs) {
          s.reset();
          if (auto res = s.forward(prompt); !res.ok()) return fail(res.status());
          if (auto st = fill_context(); !st.ok()) return fail(st);
          if (auto st = m.set_op_knockout(oc.mask); !st.ok()) return fail(st);
          auto t = timed_decode();
          if (auto st = m.set_op_knockout(0); !st.ok()) return fail(st);
          if (!t.ok()) return fail(t.status());
          oc.best_s = std::min(oc.best_s, *t);
        }
      }
      base_s = std::min(base_s, costs[0].best_s);
      for (OpCost& oc : costs) oc.saved_us = (base_s - oc.best_s) / gen_tokens * 1e6;
    }
    const double bw = m.backend().measure_bandwidth_gbs();
    const double prefill_tps = prompt_tokens / prefill_best, decode_tps = gen_tokens / decode_s;
    const double bytes = double(m.decode_bytes_per_token());
    const double achieved = bytes * decode_tps / 1e9;
    // Bytes the device reads per token where the CUDA backend packed the bf16 matrices: their packed bytes (12
    // bits per weight plus 4 per row) instead of 2 per weight; the few escapes are read only with their rows.
    double device_bytes = bytes;
    nlohmann::json packed = nullptr;
    const CudaPackStats ps = m.backend().name().starts_with("cuda") ? (*cuda_module())->pack_stats(m.backend())
                                                                    : CudaPackStats{};
    if (ps.matrices > 0) {
      device_bytes = bytes - 2.0 * double(ps.weights) + double(ps.bytes) - 8.0 * double(ps.escapes);
      packed = {{"matrices", ps.matrices}, {"weights", ps.weights}, {"escapes", ps.escapes},
                {"escape_fraction", double(ps.escapes) / double(ps.weights)}, {"device_bytes", ps.bytes}};
    }
    nlohmann::json j = {{"model", o.model},
                        {"device", m.backend().name()},
                        {"load_seconds", load_s},
                        {"prompt_tokens", prompt_tokens},
                        {"gen_tokens", gen_tokens},
                        {"decode_context", std::max(context, prompt_tokens)},
                        {"prefill_tokens_per_s", prefill_tps},
                        {"decode_tokens_per_s", decode_tps},
                        {"decode_bytes_per_token", bytes},
                        {"device_bytes_per_token", device_bytes},
                        {"packed_bf16", packed},
                        {"achieved_gb_per_s", achieved},
                        {"memory_bandwidth_gb_per_s", bw},
                        {"roofline_tokens_per_s", bw > 0 ? bw * 1e9 / bytes : 0.0},
                        {"roofline_fraction", bw > 0 ? achieved / bw : 0.0},
                        {"kv_cache_bytes", s.kv_bytes()},
                        {"peak_rss_gib", peak_rss_gib()}};
    const double step_us = base_s / gen_tokens * 1e6;
    if (op_costs) {
      nlohmann::json oj = {{"decode_step_us", step_us}};
      for (size_t i = 1; i < costs.size(); ++i) oj[costs[i].name] = costs[i].saved_us;
      j["op_costs_us_per_token"] = oj;
    }
    if (json) {
      std::printf("%s\n", j.dump().c_str());
    } else {
      std::printf("model        %s on %s, loaded in %.2f s\n", o.model.c_str(), m.backend().name().c_str(), load_s);
      std::printf("prefill      %d tokens: %.1f tokens/s\n", prompt_tokens, prefill_tps);
      std::printf("decode       %d tokens at context %d: %.2f tokens/s\n", gen_tokens, std::max(context, prompt_tokens),
                  decode_tps);
      std::printf("bandwidth    %.2f GB read per token -> %.1f GB/s achieved; measured %.1f GB/s = roofline %.1f "
                  "tokens/s (%.0f%% of it)\n",
                  bytes / 1e9, achieved, bw, bw > 0 ? bw * 1e9 / bytes : 0.0, bw > 0 ? 100 * achieved / bw : 0.0);
      if (!packed.is_null())
        std::printf("packed bf16  %zu matrices, %.3f GB read per token on the device (%.3g%% of the weights escapes)\n",
                    packed["matrices"].get<size_t>(), device_bytes / 1e9, 100 * packed["escape_fraction"].get<double>());
      std::printf("memory       peak RSS %.2f GiB, KV cache %.2f GiB\n", peak_rss_gib(), double(s.kv_bytes()) / (1 << 30));
      if (op_costs) {
        std::printf("op costs     what leaving each op out of a decode step saves (best of 2 interleaved rounds; step "
                    "%.1f us)\n", step_us);
        for (size_t i = 1; i < costs.size(); ++i) {
          const double us = costs[i].saved_us;
          std::printf("  %-10s %9.1f us per token %6.1f%%", costs[i].name, us, 100 * us / step_us);
          if (costs[i].per_layer) std::printf("  %7.2f us per layer", us / c.num_hidden_layers);
          std::printf("\n");
        }
      }
    }
    return 0;
  }
};

// Ranges: apply_option_bounds (run_options.cpp).
void add_sampling(CLI::App* app, SamplerOptions& so) {
  app->add_option("--temperature,-t", so.temperature, "Sampling temperature; 0 = greedy");
  app->add_option("--top-k", so.top_k, "Keep the k most likely tokens (0 = off)");
  app->add_option("--top-p", so.top_p, "Nucleus sampling: keep the smallest set with this much probability (1 = off)");
  app->add_option("--seed", so.seed, "Random seed (same seed, same output)");
}

// generate --tokens: the list and the context it needs are checked before the model loads.
Status check_generate(GenerateCmd& cmd) {
  if (cmd.tokens.empty()) return {};
  GPTOSS_ASSIGN(auto ids, parse_token_list(cmd.tokens));
  if (ids.empty()) return Error("--tokens: no token ids given");
  return require_context(cmd.o, int64_t(ids.size()) + cmd.n, "generate (--tokens plus -n)");
}

}  // namespace

GPTOSS_REGISTER_COMMAND(30, [](CLI::App& app, CommandContext& ctx) {
  auto cmd = std::make_shared<VerifyCmd>();
  auto* sub = app.add_subcommand("verify", "Load a model and run one forward pass over 10 dummy tokens");
  add_run_options(sub, cmd->o);
  sub->add_option("--tokens", cmd->tokens, "Number of dummy tokens")->check(int_range(1, 1 << 20));
  sub->callback([cmd, &ctx] { ctx.run = [cmd] { return cmd->run(); }; });
});

GPTOSS_REGISTER_COMMAND(31, [](CLI::App& app, CommandContext& ctx) {
  auto cmd = std::make_shared<LogitsCmd>();
  auto* sub = app.add_subcommand(
      "logits", "Write float32 logits [tokens, vocab] of a token sequence as .npy; of several sequences (--tokens "
                "given more than once), run together in batched steps, as .npz (seq0, seq1, ...)");
  add_run_options(sub, cmd->o);
  sub->add_option("--tokens", cmd->tokens,
                  "Token ids, separated by commas or spaces; repeat for more sequences (each in its own session)")
      ->required()
      ->allow_extra_args(false)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  sub->add_option("--out,-o", cmd->out, "Output file: .npy for one sequence, .npz for several")->required();
  sub->callback([cmd, &ctx] { ctx.run = [cmd] { return cmd->run(); }; });
});

GPTOSS_REGISTER_COMMAND(40, [](CLI::App& app, CommandContext& ctx) {
  auto cmd = std::make_shared<GenerateCmd>();
  auto* sub = app.add_subcommand("generate", "Generate tokens: from token ids (--tokens) or a text prompt (--prompt)");
  add_run_options(sub, cmd->o);
  auto* tok_opt =
      sub->add_option("--tokens", cmd->tokens, "Prompt token ids, separated by commas or spaces; prints token ids");
  sub->add_option("--prompt,-p", cmd->prompt, "Text prompt: chat-formatted (Harmony), streams the final answer")
      ->excludes(tok_opt);
  sub->add_option("-n,--max-tokens", cmd->n, "Most tokens to generate");
  add_sampling(sub, cmd->so);
  sub->add_option("--tokenizer", cmd->text.tokenizer, "tokenizer.json or .tiktoken (default: the model directory's)");
  sub->add_option("--system", cmd->text.system, "Developer instructions (with --prompt)");
  sub->add_option("--reasoning-effort", cmd->text.reasoning_effort, "low, medium or high (with --prompt)")
      ->check(CLI::IsMember({"low", "medium", "high"}));
  sub->add_flag("--show-reasoning", cmd->text.show_reasoning, "Print the reasoning to stderr (with --prompt)");
  sub->add_flag("--raw", cmd->text.raw, "Plain text completion of --prompt, no chat format");
  sub->add_flag("--json", cmd->json, "Print one JSON object");
  sub->callback([cmd, &ctx] {
    ctx.run = [cmd] {
      if (auto st = check_generate(*cmd); !st.ok()) return fail(st);
      return cmd->run();
    };
  });
});

GPTOSS_REGISTER_COMMAND(50, [](CLI::App& app, CommandContext& ctx) {
  auto cmd = std::make_shared<BenchCmd>();
  auto* sub = app.add_subcommand("bench", "Measure prefill and decode speed against the memory-bandwidth roofline");
  add_run_options(sub, cmd->o);
  sub->add_option("--prompt-tokens", cmd->prompt_tokens, "Prompt length for prefill");
  sub->add_option("--gen-tokens", cmd->gen_tokens, "Tokens to decode");
  sub->add_option("--context", cmd->context,
                  "Decode after this many tokens of context, e.g. 32768 (0: right after the prompt)");
  sub->add_option("--repeats", cmd->repeats, "Prefill repetitions (best is reported)");
  sub->add_flag("--op-costs", cmd->op_costs,
                "Also time decode with each op (q/k/v, attention, o_proj, MoE, lm_head) left out of every step: "
                "what each costs inside a step (profiling; 12 more decode runs)");
  sub->add_flag("--json", cmd->json, "Print one JSON object");
  auto* conc = sub->add_option("--concurrency", cmd->conc.concurrency,
                               "Serving throughput instead: N concurrent requests through the serve engine's batched "
                               "steps (no HTTP); reports output/total tokens/s, TTFT and TPOT percentiles, KV bytes")
                   ->check(CLI::Range(1, 1024));
  sub->add_option("--requests", cmd->conc.requests,
                  "With --concurrency: requests in all (default: one per client; sharegpt: 1000)")
      ->needs(conc)
      ->check(CLI::Range(1, 1000000));
  sub->add_option("--workload", cmd->conc.workload,
                  "With --concurrency: fixed (--prompt-tokens, exactly --gen-tokens, clients back to back) or "
                  "sharegpt (log-normal lengths, seeded, all released at once)")
      ->needs(conc)
      ->check(CLI::IsMember({"fixed", "sharegpt"}));
  sub->add_option("--seed", cmd->conc.seed, "With --concurrency: the workload's random seed")->needs(conc);
  sub->add_option("--batch-tokens", cmd->conc.batch_tokens, "With --concurrency: tokens one batched step carries")
      ->needs(conc)
      ->check(CLI::Range(1, 65536));
  sub->add_flag("--no-batching", cmd->conc.no_batching,
                "With --concurrency: one sequence per step (round-robin), the baseline batching is measured against")
      ->needs(conc);
  sub->callback([cmd, &ctx] { ctx.run = [cmd] { return cmd->run(); }; });
});

}  // namespace gptoss::cli
