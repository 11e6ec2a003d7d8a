#include "serve/server.h"

#include <httplib.h>
#include <sys/socket.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <functional>
#include <optional>
#include <random>
#include <thread>

#include "serve/metrics.h"

namespace gptoss::serve {

namespace {

using ojson = nlohmann::ordered_json;

constexpr int kListenBacklog = 4096;  // connections the kernel completes before the server accepts them

std::atomic<bool> g_stop{false};
void on_signal(int) { g_stop.store(true); }

int64_t unix_now() { return int64_t(std::time(nullptr)); }

std::string new_id(const char* prefix) {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  static const char* hex = "0123456789abcdef";
  std::string s = prefix;
  for (int i = 0; i < 24; ++i) s += hex[rng() & 15];
  return s;
}

void send_json(httplib::Response& res, int status, const ojson& j) {
  res.status = status;
  res.set_content(dump_json(j), "application/json");
}

void send_error(httplib::Response& res, const HttpError& e) { send_json(res, e.status, http_error_json(e)); }

bool write_str(httplib::DataSink& sink, const std::string& s) { return sink.is_writable() && sink.write(s.data(), s.size()); }

// Tokens of a completion to StreamEvents: the Harmony mapper (chat completions, responses) or plain
// text (completions: content deltas, stop tokens not shown).
class TokenMapper {
 public:
  virtual ~TokenMapper() = default;
  virtual void push(int32_t token, std::vector<StreamEvent>& events) = 0;
  virtual void finish(std::vector<StreamEvent>& events) = 0;
};

class HarmonyTokenMapper : public TokenMapper {
 public:
  HarmonyTokenMapper(const harmony::HarmonyEncoding& enc, const std::string& forced) : m(enc, forced) {}
  void push(int32_t token, std::vector<StreamEvent>& events) override { m.push(TokenId(token), events); }
  void finish(std::vector<StreamEvent>& events) override { m.finish(events); }
  CompletionMapper m;
};

// Completions text; the end-of-text tokens are not shown (the last token, or any of them with ignore_eos).
class TextTokenMapper : public TokenMapper {
 public:
  TextTokenMapper(const Tokenizer& tok, std::vector<int32_t> hidden) : dec_(tok), hidden_(std::move(hidden)) {}
  void push(int32_t token, std::vector<StreamEvent>& events) override {
    if (std::find(hidden_.begin(), hidden_.end(), token) != hidden_.end()) return;
    add(dec_.push(TokenId(token)), events);
  }
  void finish(std::vector<StreamEvent>& events) override { add(dec_.finish(), events); }

 private:
  static void add(std::string s, std::vector<StreamEvent>& events) {
    if (!s.empty()) events.push_back({StreamEvent::Kind::ContentDelta, std::move(s), -1});
  }
  StreamDecoder dec_;
  std::vector<int32_t> hidden_;
};

// One request's generation as its HTTP thread sees it.
struct Run {
  PreparedRequest pr;
  std::shared_ptr<Job> job = std::make_shared<Job>();
  std::unique_ptr<TokenMapper> mapper;
  HarmonyTokenMapper* harmony = nullptr;  // mapper, for chat completions and responses
  StopStrings stop;
  std::string content;  // content text as the client got it (stop strings applied)
  size_t have = 0;      // tokens taken from the job
  int completion_tokens = 0;
  int reused = 0;  // prompt tokens a slot's cache held (set when the job is done)
  bool stop_hit = false;
  FinishReason finish = FinishReason::None;
  std::string error;
  double arrival = 0;
  std::string id;
  int64_t created = 0;

  bool hit_length() const {
    return !stop_hit && (finish == FinishReason::Length || finish == FinishReason::ContextFull);
  }
  // Content deltas through the stop strings; after a match nothing more is shown.
  void filter(std::vector<StreamEvent>& events) {
    std::vector<StreamEvent> kept;
    for (auto& e : events) {
      if (stop_hit) break;
      if (e.kind == StreamEvent::Kind::ContentDelta) {
        e.text = stop.push(e.text);
        if (stop.matched()) stop_hit = true;
        content += e.text;
        if (e.text.empty()) continue;
      }
      kept.push_back(std::move(e));
    }
    events.swap(kept);
  }
};

using Emit = std::function<bool(std::vector<StreamEvent>&)>;

// Feeds the job's tokens to the mapper until the job is done, handing each batch of events to `emit`.
// `emit` returning false (the client is gone) cancels the job; `idle` is called after a second without a
// write (a stream writes a keep-alive comment there: writing is how a vanished client is noticed).
bool pump(Run& r, const Emit& emit, const std::function<bool()>& idle) {
  std::vector<int32_t> toks;
  std::vector<StreamEvent> events;
  double last_write = engine_clock();
  for (;;) {
    const bool done = r.job->wait_tokens(r.have, 1.0, toks);
    if (!done && idle && engine_clock() - last_write > 1.0) {  // nothing written for a second
      if (!idle()) {
        r.job->cancel.store(true);
        return false;
      }
      last_write = engine_clock();
    }
    for (int32_t t : toks) {
      ++r.have;
      if (r.stop_hit) continue;
      events.clear();
      r.mapper->push(t, events);
      r.filter(events);
      if (r.stop_hit) {
        r.completion_tokens = int(r.have);
        r.job->cancel.store(true);  // the rest is not wanted
      }
      if (events.empty()) continue;
      if (!emit(events)) {
        r.job->cancel.store(true);
        return false;
      }
      last_write = engine_clock();
    }
    if (done) break;
  }
  {
    std::lock_guard lk(r.job->mu);
    r.finish = r.job->finish;
    r.error = r.job->error;
    r.reused = r.job->reused_tokens;
  }
  if (!r.stop_hit) r.completion_tokens = int(r.have);
  events.clear();
  const bool was_hit = r.stop_hit;
  r.mapper->finish(events);
  r.filter(events);
  if (!was_hit && !r.stop_hit) {
    std::string tail = r.stop.flush();
    if (!tail.empty()) {
      r.content += tail;
      events.push_back({StreamEvent::Kind::ContentDelta, std::move(tail), -1});
    }
  }
  return events.empty() || emit(events);
}

ojson usage_json(const Run& r) {
  return {{"prompt_tokens", r.pr.prompt.size()},
          {"completion_tokens", r.completion_tokens},
          {"total_tokens", r.pr.prompt.size() + size_t(r.completion_tokens)},
          {"prompt_tokens_details", {{"cached_tokens", r.reused}}}};
}

std::string sse(const ojson& j) { return "data: " + dump_json(j) + "\n\n"; }
std::string sse_event(const ojson& j) {
  return "event: " + j["type"].get<std::string>() + "\ndata: " + dump_json(j) + "\n\n";
}

class Server {
 public:
  Server(Engine& engine, const ServeContext& ctx, const ServerOptions& opts)
      : engine_(engine), ctx_(ctx), opts_(opts) {}
  Status run();

 private:
  bool authorized(const httplib::Request& req) const {
    return opts_.api_key.empty() || req.get_header_value("Authorization") == "Bearer " + opts_.api_key;
  }
  httplib::Server::Handler guarded(std::function<void(const httplib::Request&, httplib::Response&)> fn) {
    return [this, fn](const httplib::Request& req, httplib::Response& res) {
      if (!authorized(req)) {
        send_json(res, 401, error_json("missing or wrong API key (Authorization: Bearer KEY)",
                                       "invalid_request_error", ""));
        return;
      }
      fn(req, res);
    };
  }
  void generate(Endpoint ep, const httplib::Request& req, httplib::Response& res);
  // A non-streaming request still running after this long is answered in chunks (see generate).
  static constexpr double kWholeAnswerSeconds = 1.0;
  ojson answer_json(Endpoint ep, Run& r);
  ojson chat_response(Run& r);
  ojson completion_response(Run& r);
  ojson responses_response(Run& r, const ojson& output);
  void stream_chat(const std::shared_ptr<Run>& r, httplib::Response& res);
  void stream_completions(const std::shared_ptr<Run>& r, httplib::Response& res);
  void stream_responses(const std::shared_ptr<Run>& r, httplib::Response& res);
  void finished(const Run& r) {
    double first = 0, last = 0;
    {
      std::lock_guard lk(r.job->mu);  // the engine may still be writing a cancelled job
      first = r.job->first_token_at;
      last = r.job->done ? r.job->finished_at : engine_clock();
    }
    metrics_.generation(first > 0 ? first - r.arrival : 0.0, r.completion_tokens, last > first ? last - first : 0.0);
  }

  Engine& engine_;
  const ServeContext& ctx_;
  const ServerOptions& opts_;
  Metrics metrics_;
};

void Server::generate(Endpoint ep, const httplib::Request& req, httplib::Response& res) {
  auto r = std::make_shared<Run>();
  r->arrival = engine_clock();
  HttpError err;
  if (!prepare_request(ep, req.body, ctx_, r->pr, err)) return send_error(res, err);
  r->created = unix_now();
  r->id = new_id(ep == Endpoint::ChatCompletions ? "chatcmpl-" : ep == Endpoint::Responses ? "resp_" : "cmpl-");
  r->stop = StopStrings(r->pr.stop);
  if (ep == Endpoint::Completions) {
    r->mapper = std::make_unique<TextTokenMapper>(ctx_.encoding->tokenizer(), r->pr.end_tokens);
  } else {
    auto h = std::make_unique<HarmonyTokenMapper>(*ctx_.encoding, r->pr.api.forced_prefix);
    r->harmony = h.get();
    r->mapper = std::move(h);
  }
  r->job->prompt = r->pr.prompt;
  r->job->gen = r->pr.gen;
  engine_.submit(r->job);
  if (r->pr.stream) {
    if (ep == Endpoint::ChatCompletions) return stream_chat(r, res);
    if (ep == Endpoint::Completions) return stream_completions(r, res);
    return stream_responses(r, res);
  }
  // Non-streaming: a request done within a second is answered whole, with its status. A longer one is answered
  // in chunks: a space every quiet second (whitespace before a JSON value is allowed, and writing is the only
  // way to see that the client left: then the job is cancelled), then the JSON. Its status is then 200
  // whatever happens; a generation that fails afterwards returns the error object as the body.
  std::vector<int32_t> none;
  if (r->job->wait_tokens(size_t(-1), kWholeAnswerSeconds, none)) {
    pump(*r, [](std::vector<StreamEvent>&) { return true; }, nullptr);
    finished(*r);
    if (!r->error.empty())
      return send_json(res, 500, error_json("generation failed: " + r->error, "server_error", ""));
    return send_json(res, 200, answer_json(ep, *r));
  }
  res.set_chunked_content_provider(
      "application/json",
      [this, r, ep](size_t, httplib::DataSink& sink) {
        double last_space = engine_clock();
        const auto space = [&] {
          last_space = engine_clock();
          return write_str(sink, " ");
        };
        // While tokens arrive nothing else is written: a space each second of them too.
        const auto emit = [&](std::vector<StreamEvent>&) { return engine_clock() - last_space < 1.0 || space(); };
        if (!pump(*r, emit, space)) return false;
        finished(*r);
        const ojson body =
            r->error.empty() ? answer_json(ep, *r) : error_json("generation failed: " + r->error, "server_error", "");
        if (!write_str(sink, dump_json(body))) return false;
        sink.done();
        return true;
      },
      [r](bool ok) {
        if (!ok) r->job->cancel.store(true);
      });
}

ojson Server::answer_json(Endpoint ep, Run& r) {
  if (ep == Endpoint::ChatCompletions) return chat_response(r);
  if (ep == Endpoint::Completions) return completion_response(r);
  return responses_response(r, responses_output_json(r.harmony->m.result()));
}

ojson Server::chat_response(Run& r) {
  const CompletionResult& cr = r.harmony->m.result();
  ojson msg = chat_message_json(cr);
  if (!r.pr.stop.empty() && msg.contains("content") && msg["content"].is_string()) msg["content"] = r.content;
  return {{"id", r.id},
          {"object", "chat.completion"},
          {"created", r.created},
          {"model", ctx_.model_id},
          {"choices",
           {{{"index", 0},
             {"message", msg},
             {"logprobs", nullptr},
             {"finish_reason", r.stop_hit ? std::string("stop") : chat_finish_reason(cr, r.hit_length())}}}},
          {"usage", usage_json(r)}};
}

ojson Server::completion_response(Run& r) {
  return {{"id", r.id},
          {"object", "text_completion"},
          {"created", r.created},
          {"model", ctx_.model_id},
          {"choices",
           {{{"index", 0}, {"text", r.content}, {"logprobs", nullptr}, {"finish_reason", r.hit_length() ? "length" : "stop"}}}},
          {"usage", usage_json(r)}};
}

ojson Server::responses_response(Run& r, const ojson& output) {
  const bool incomplete = r.hit_length();
  ojson j = {{"id", r.id},
             {"object", "response"},
             {"created_at", r.created},
             {"status", incomplete ? "incomplete" : "completed"},
             {"model", ctx_.model_id},
             {"output", output},
             {"parallel_tool_calls", true},
             {"tool_choice", "auto"},
             {"tools", ojson::array()},
             {"error", nullptr},
             {"incomplete_details", nullptr},
             {"usage",
              {{"input_tokens", r.pr.prompt.size()},
               {"input_tokens_details", {{"cached_tokens", r.reused}}},
               {"output_tokens", r.completion_tokens},
               {"output_tokens_details", {{"reasoning_tokens", 0}}},
               {"total_tokens", r.pr.prompt.size() + size_t(r.completion_tokens)}}}};
  if (incomplete) j["incomplete_details"] = {{"reason", "max_output_tokens"}};
  return j;
}

// A keep-alive comment after a quiet second: writing is how a closed connection shows.
std::function<bool()> keep_alive(httplib::DataSink& sink) {
  return [&sink] {
    static const char ping[] = ": keep-alive\n\n";
    return sink.is_writable() && sink.write(ping, sizeof ping - 1);
  };
}


// A server-sent-events response: write(sink) writes the whole stream, false when the client left; a connection
// that closes before the end cancels the job.
template <class Write>
void event_stream(const std::shared_ptr<Run>& r, httplib::Response& res, Write write) {
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [write](size_t, httplib::DataSink& sink) {
        if (!write(sink)) return false;
        sink.done();
        return true;
      },
      [r](bool ok) {
        if (!ok) r->job->cancel.store(true);
      });
}

// The end of a chat or completions stream: the error event, or the last chunk (with its finish reason) and, when
// the request asked for it, a usage chunk without choices; then [DONE]. last_chunk(finish) builds the endpoint's
// chunk with no content; finish_reason() is asked only when the generation did not fail.
template <class LastChunk, class FinishReason>
std::string stream_tail(const Run& r, const LastChunk& last_chunk, const FinishReason& finish_reason) {
  std::string tail;
  if (!r.error.empty()) {
    tail += sse(error_json("generation failed: " + r.error, "server_error", ""));
  } else {
    tail += sse(last_chunk(ojson(finish_reason())));
    if (r.pr.include_usage) {
      ojson u = last_chunk(ojson(nullptr));
      u["choices"] = ojson::array();
      u["usage"] = usage_json(r);
      tail += sse(u);
    }
  }
  return tail + "data: [DONE]\n\n";
}

void Server::stream_chat(const std::shared_ptr<Run>& r, httplib::Response& res) {
  event_stream(
      r, res,
      [this, r](httplib::DataSink& sink) {
        auto chunk = [&](ojson delta, ojson finish) {
          return ojson{{"id", r->id},
                       {"object", "chat.completion.chunk"},
                       {"created", r->created},
                       {"model", ctx_.model_id},
                       {"choices", {{{"index", 0}, {"delta", std::move(delta)}, {"logprobs", nullptr},
                                     {"finish_reason", std::move(finish)}}}}};
        };
        if (!write_str(sink, sse(chunk({{"role", "assistant"}, {"content", ""}}, nullptr)))) {
          r->job->cancel.store(true);
          return false;
        }
        const bool ok = pump(
            *r,
            [&](std::vector<StreamEvent>& events) {
              for (const auto& e : events)
                if (!write_str(sink, sse(chunk(chat_delta_json(e, r->harmony->m.result()), nullptr)))) return false;
              return true;
            },
            keep_alive(sink));
        finished(*r);
        if (!ok) return false;
        write_str(sink, stream_tail(
                            *r, [&](ojson finish) { return chunk(ojson::object(), std::move(finish)); },
                            [&] {
                              return r->stop_hit ? std::string("stop")
                                                 : chat_finish_reason(r->harmony->m.result(), r->hit_length());
                            }));
        return true;
      });
}

void Server::stream_completions(const std::shared_ptr<Run>& r, httplib::Response& res) {
  event_stream(
      r, res,
      [this, r](httplib::DataSink& sink) {
        auto chunk = [&](const std::string& text, ojson finish) {
          return ojson{{"id", r->id},
                       {"object", "text_completion"},
                       {"created", r->created},
                       {"model", ctx_.model_id},
                       {"choices", {{{"index", 0}, {"text", text}, {"logprobs", nullptr},
                                     {"finish_reason", std::move(finish)}}}}};
        };
        const bool ok = pump(
            *r,
            [&](std::vector<StreamEvent>& events) {
              for (const auto& e : events)
                if (!write_str(sink, sse(chunk(e.text, nullptr)))) return false;
              return true;
            },
            keep_alive(sink));
        finished(*r);
        if (!ok) return false;
        write_str(sink, stream_tail(
                            *r, [&](ojson finish) { return chunk("", std::move(finish)); },
                            [&] { return std::string(r->hit_length() ? "length" : "stop"); }));
        return true;
      });
}

// Responses streaming: each run of events of one kind is an output item (reasoning, message, function
// call), opened with response.output_item.added and closed with response.output_item.done.
void Server::stream_responses(const std::shared_ptr<Run>& r, httplib::Response& res) {
  event_stream(
      r, res,
      [this, r](httplib::DataSink& sink) {
        int seq = 0;
        ojson items = ojson::array();  // finished items
        ojson cur;                     // the open item, null when none
        std::string cur_text;          // its text (reasoning, message) or arguments (function call)
        int cur_tool = -1;
        auto event = [&](ojson j) {
          j["sequence_number"] = seq++;
          return write_str(sink, sse_event(j));
        };
        auto close_item = [&]() -> bool {
          if (cur.is_null()) return true;
          const std::string type = cur["type"];
          if (type == "reasoning") {
            cur["content"] = ojson::array({{{"type", "reasoning_text"}, {"text", cur_text}}});
          } else if (type == "message") {
            cur["status"] = "completed";
            cur["content"] = ojson::array({{{"type", "output_text"}, {"text", cur_text}, {"annotations", ojson::array()}}});
          } else {
            cur["status"] = "completed";
            cur["arguments"] = cur_text;
          }
          const int index = int(items.size());
          items.push_back(cur);
          const bool ok = event({{"type", "response.output_item.done"}, {"output_index", index}, {"item", cur}});
          cur = nullptr;
          cur_text.clear();
          cur_tool = -1;
          return ok;
        };
        auto open_item = [&](ojson item) {
          cur = std::move(item);
          return event({{"type", "response.output_item.added"}, {"output_index", int(items.size())}, {"item", cur}});
        };
        ojson created = responses_response(*r, ojson::array());
        created["status"] = "in_progress";
        created["usage"] = nullptr;
        if (!event({{"type", "response.created"}, {"response", created}})) {
          r->job->cancel.store(true);
          return false;
        }
        const bool ok = pump(
            *r,
            [&](std::vector<StreamEvent>& events) {
              for (const auto& e : events) {
                using K = StreamEvent::Kind;
                const std::string want = e.kind == K::ReasoningDelta ? "reasoning"
                                         : e.kind == K::ContentDelta ? "message"
                                                                      : "function_call";
                const bool new_call = e.kind == K::ToolCallBegin ||
                                      (e.kind == K::ToolCallArgumentsDelta && e.tool_index != cur_tool);
                if (cur.is_null() || cur["type"] != want || new_call) {
                  if (!close_item()) return false;
                  ojson item;
                  if (want == "reasoning") {
                    item = {{"type", "reasoning"}, {"id", new_id("rs_")}, {"summary", ojson::array()}};
                  } else if (want == "message") {
                    item = {{"type", "message"}, {"id", new_id("msg_")}, {"status", "in_progress"},
                            {"role", "assistant"}, {"content", ojson::array()}};
                  } else {
                    const auto& calls = r->harmony->m.result().tool_calls;
                    const bool known = e.tool_index >= 0 && size_t(e.tool_index) < calls.size();
                    item = {{"type", "function_call"},
                            {"id", new_id("fc_")},
                            {"call_id", known ? calls[size_t(e.tool_index)].id : new_id("call_")},
                            {"name", known ? calls[size_t(e.tool_index)].name
                                           : (e.kind == K::ToolCallBegin ? e.text : std::string())},
                            {"arguments", ""},
                            {"status", "in_progress"}};
                    cur_tool = e.tool_index;
                  }
                  if (!open_item(item)) return false;
                }
                if (e.kind == K::ToolCallBegin) continue;
                cur_text += e.text;
                const int index = int(items.size());
                ojson ev;
                if (want == "reasoning")
                  ev = {{"type", "response.reasoning_text.delta"}, {"item_id", cur["id"]}, {"output_index", index},
                        {"content_index", 0}, {"delta", e.text}};
                else if (want == "message")
                  ev = {{"type", "response.output_text.delta"}, {"item_id", cur["id"]}, {"output_index", index},
                        {"content_index", 0}, {"delta", e.text}, {"logprobs", ojson::array()}};
                else
                  ev = {{"type", "response.function_call_arguments.delta"}, {"item_id", cur["id"]},
                        {"output_index", index}, {"delta", e.text}};
                if (!event(ev)) return false;
              }
              return true;
            },
            keep_alive(sink));
        finished(*r);
        if (!ok || !close_item()) return false;
        if (!r->error.empty()) {
          ojson failed = responses_response(*r, items);
          failed["status"] = "failed";
          failed["error"] = {{"code", "server_error"}, {"message", "generation failed: " + r->error}};
          event({{"type", "response.failed"}, {"response", failed}});
        } else {
          event({{"type", "response.completed"}, {"response", responses_response(*r, items)}});
        }
        return true;
      });
}

std::string endpoint_label(const std::string& path) {
  for (const char* p : {"/v1/chat/completions", "/v1/responses", "/v1/completions", "/v1/models", "/health", "/metrics"})
    if (path == p) return p;
  return "other";
}

Status Server::run() {
  httplib::Server svr;
  const int threads = std::max(opts_.http_threads, 8);
  svr.new_task_queue = [threads] { return new httplib::ThreadPool(size_t(threads)); };
  svr.set_payload_max_length(opts_.max_body_bytes);
  svr.set_read_timeout(opts_.request_timeout_s, 0);
  svr.set_write_timeout(opts_.request_timeout_s, 0);
  svr.set_keep_alive_timeout(2);

  using Req = httplib::Request;
  using Res = httplib::Response;
  svr.Post("/v1/chat/completions", guarded([this](const Req& q, Res& s) { generate(Endpoint::ChatCompletions, q, s); }));
  svr.Post("/v1/responses", guarded([this](const Req& q, Res& s) { generate(Endpoint::Responses, q, s); }));
  svr.Post("/v1/completions", guarded([this](const Req& q, Res& s) { generate(Endpoint::Completions, q, s); }));
  svr.Get("/v1/models", guarded([this](const Req&, Res& s) {
            send_json(s, 200, {{"object", "list"},
                               {"data", {{{"id", ctx_.model_id}, {"object", "model"}, {"created", unix_now()},
                                          {"owned_by", "gptoss"}}}}});
          }));
  svr.Get("/health", [](const Req&, Res& s) { send_json(s, 200, {{"status", "ok"}}); });
  svr.Get("/metrics", guarded([this](const Req&, Res& s) {
            s.set_content(metrics_.prometheus(engine_.stats()), "text/plain; version=0.0.4");
          }));
  // A known path with another method: 405; anything else: 404.
  const std::vector<std::pair<std::string, std::string>> routes = {
      {"/v1/chat/completions", "POST"}, {"/v1/responses", "POST"}, {"/v1/completions", "POST"},
      {"/v1/models", "GET"},           {"/health", "GET"},        {"/metrics", "GET"}};
  auto fallback = [routes](const Req& q, Res& s) {
    for (const auto& [path, method] : routes)
      if (q.path == path) {
        s.set_header("Allow", method);
        send_json(s, 405, error_json("method " + q.method + " is not allowed on " + path + " (use " + method + ")",
                                     "invalid_request_error", ""));
        return;
      }
    send_json(s, 404, error_json("no route " + q.method + " " + q.path, "invalid_request_error", ""));
  };
  svr.Get(".*", fallback);
  svr.Post(".*", fallback);
  svr.Put(".*", fallback);
  svr.Patch(".*", fallback);
  svr.Delete(".*", fallback);
  svr.Options(".*", fallback);
  // Errors httplib answers itself (413 body too large, 400 unreadable request): an OpenAI error body.
  svr.set_error_handler(httplib::Server::HandlerWithResponse([this](const Req&, Res& s) {
    if (!s.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    const std::string msg = s.status == 413 ? "the request body is larger than " + std::to_string(opts_.max_body_bytes) +
                                                  " bytes (--max-body-bytes)"
                                            : "the HTTP request could not be read";
    send_json(s, s.status, error_json(msg, "invalid_request_error", ""));
    return httplib::Server::HandlerResponse::Handled;
  }));
  svr.set_exception_handler([](const Req&, Res& s, std::exception_ptr) {
    send_json(s, 500, error_json("internal error", "server_error", ""));
  });
  svr.set_logger([this](const Req& q, const Res& s) { metrics_.request(endpoint_label(q.path), s.status); });

  // httplib listens with a backlog of 5 (compiled into Debian's library): a burst of clients (a benchmark
  // releasing 1,000 requests at once) overflows it before the accept thread drains it, and connections are
  // reset. Listening again on the bound socket raises it (Linux; the kernel caps it at net.core.somaxconn).
  socket_t listen_fd = INVALID_SOCKET;
  svr.set_socket_options([&listen_fd](socket_t sock) {
    httplib::default_socket_options(sock);
    listen_fd = sock;  // the last socket made is the one that bound (a failed one is closed, the next tried)
  });
  int port = opts_.port;
  if (port == 0) {
    port = svr.bind_to_any_port(opts_.host);
    if (port < 0) return Error("serve: cannot bind {}:0", opts_.host);
  } else if (!svr.bind_to_port(opts_.host, port)) {
    return Error("serve: cannot bind {}:{} (in use, or not an address of this machine)", opts_.host, port);
  }
  if (::listen(listen_fd, kListenBacklog) != 0)
    return Error("serve: listen({}) on {}:{} failed: {}", kListenBacklog, opts_.host, port, std::strerror(errno));

  g_stop.store(false);
  struct sigaction sa{};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
  std::atomic<bool> listening_done{false};
  std::thread watcher([&] {
    while (!g_stop.load() && !listening_done.load()) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    svr.stop();           // no new connections
    engine_.shutdown();   // running and queued requests end now; their handlers answer with what they have
  });
  std::fprintf(stderr, "gptoss serve: listening on http://%s:%d (model %s, %zu slots, context %d)\n",
               opts_.host.c_str(), port, ctx_.model_id.c_str(), engine_.stats().slots, ctx_.max_context);
  std::fflush(stderr);
  const bool ok = svr.listen_after_bind();
  listening_done.store(true);
  watcher.join();
  if (!ok && !g_stop.load()) return Error("serve: the listener failed");
  std::fprintf(stderr, "gptoss serve: stopped\n");
  return {};
}

}  // namespace

Status run_server(Engine& engine, const ServeContext& ctx, const ServerOptions& opts) {
  Server s(engine, ctx, opts);
  return s.run();
}

}  // namespace gptoss::serve
