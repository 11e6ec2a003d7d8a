#include "serve/request.h"

#include <random>

namespace gptoss::serve {

namespace {

using json = nlohmann::ordered_json;  // tool schemas keep the client's key order (openai_api.h)

bool bad(HttpError& err, std::string message, std::string param) {
  err = HttpError{400, std::move(message), "invalid_request_error", std::move(param)};
  return false;
}

// /v1/completions: a raw text prompt (a string, one string in a list, or token ids), no chat format.
bool parse_completions(const json& body, const ServeContext& ctx, PreparedRequest& out, HttpError& err) {
  SamplingParams& sp = out.api.sampling;
  if (body.contains("model")) {
    if (!body["model"].is_string()) return bad(err, "'model' must be a string", "model");
    out.api.model = body["model"].get<std::string>();
  }
  if (!body.contains("prompt")) return bad(err, "'prompt' is required", "prompt");
  const json& p = body["prompt"];
  const Tokenizer& tok = ctx.encoding->tokenizer();
  if (p.is_string()) {
    auto ids = tok.encode_ordinary(p.get_ref<const std::string&>());
    out.prompt.assign(ids.begin(), ids.end());
  } else if (p.is_array() && p.size() == 1 && p[0].is_string()) {
    auto ids = tok.encode_ordinary(p[0].get_ref<const std::string&>());
    out.prompt.assign(ids.begin(), ids.end());
  } else if (p.is_array() && !p.empty() && p[0].is_number_integer()) {
    for (size_t i = 0; i < p.size(); ++i) {
      if (!p[i].is_number_integer() || p[i].get<int64_t>() < 0 || p[i].get<int64_t>() >= ctx.vocab_size)
        return bad(err, "token ids must be integers in [0, " + std::to_string(ctx.vocab_size) + ")",
                   "prompt[" + std::to_string(i) + "]");
      out.prompt.push_back(int32_t(p[i].get<int64_t>()));
    }
  } else {
    return bad(err, "'prompt' must be a string, a list of one string, or a list of token ids", "prompt");
  }
  if (out.prompt.empty()) return bad(err, "'prompt' is empty", "prompt");
  sp.max_tokens = 16;  // the API's default for completions
  if (body.contains("max_tokens") && !body["max_tokens"].is_null()) {
    const json& m = body["max_tokens"];
    if (!m.is_number_integer() || m.get<int64_t>() < 1 || m.get<int64_t>() > (1 << 30))
      return bad(err, "'max_tokens' must be a positive integer", "max_tokens");
    sp.max_tokens = int(m.get<int64_t>());
  }
  if (body.contains("temperature") && !body["temperature"].is_null()) {
    const json& t = body["temperature"];
    if (!t.is_number() || t.get<double>() < 0 || t.get<double>() > 2)
      return bad(err, "'temperature' must be a number in [0, 2]", "temperature");
    sp.temperature = float(t.get<double>());
  }
  if (body.contains("top_p") && !body["top_p"].is_null()) {
    const json& t = body["top_p"];
    if (!t.is_number() || t.get<double>() <= 0 || t.get<double>() > 1)
      return bad(err, "'top_p' must be a number in (0, 1]", "top_p");
    sp.top_p = float(t.get<double>());
  }
  if (body.contains("seed") && !body["seed"].is_null()) {
    const json& s = body["seed"];
    if (!s.is_number_integer()) return bad(err, "'seed' must be an integer", "seed");
    sp.seed = s.is_number_unsigned() ? s.get<uint64_t>() : uint64_t(s.get<int64_t>());
  }
  if (body.contains("stop") && !body["stop"].is_null()) {
    const json& s = body["stop"];
    if (s.is_string()) {
      sp.stop.push_back(s.get<std::string>());
    } else if (s.is_array() && s.size() <= 4) {
      for (const auto& x : s) {
        if (!x.is_string()) return bad(err, "'stop' must be a string or a list of at most 4 strings", "stop");
        sp.stop.push_back(x.get<std::string>());
      }
    } else {
      return bad(err, "'stop' must be a string or a list of at most 4 strings", "stop");
    }
    for (const auto& x : sp.stop)
      if (x.empty()) return bad(err, "'stop' strings must not be empty", "stop");
  }
  if (body.contains("stream") && !body["stream"].is_null()) {
    if (!body["stream"].is_boolean()) return bad(err, "'stream' must be a boolean", "stream");
    out.api.stream = body["stream"].get<bool>();
  }
  if (body.contains("stream_options") && !body["stream_options"].is_null()) {
    const json& so = body["stream_options"];
    if (!so.is_object()) return bad(err, "'stream_options' must be an object", "stream_options");
    if (so.contains("include_usage")) {
      if (!so["include_usage"].is_boolean())
        return bad(err, "'include_usage' must be a boolean", "stream_options.include_usage");
      out.api.include_usage = so["include_usage"].get<bool>();
    }
  }
  if (body.contains("n") && !body["n"].is_null() && body["n"] != 1) return bad(err, "only n=1 is supported", "n");
  if (body.contains("best_of") && !body["best_of"].is_null() && body["best_of"] != 1)
    return bad(err, "only best_of=1 is supported", "best_of");
  if (body.contains("echo") && body["echo"] == true) return bad(err, "'echo' is not supported", "echo");
  if (body.contains("logprobs") && !body["logprobs"].is_null() && body["logprobs"] != 0)
    return bad(err, "'logprobs' is not supported", "logprobs");
  if (body.contains("suffix") && !body["suffix"].is_null()) return bad(err, "'suffix' is not supported", "suffix");
  for (const char* name : {"<|endoftext|>", "<|return|>"})
    if (auto id = tok.special_token_id(name)) out.end_tokens.push_back(int32_t(*id));
  out.gen.stop_tokens = out.end_tokens;
  return true;
}

}  // namespace

nlohmann::ordered_json http_error_json(const HttpError& e) { return error_json(e.message, e.type, e.param); }

std::string dump_json(const nlohmann::ordered_json& j) {
  return j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

bool prepare_request(Endpoint endpoint, std::string_view body_text, const ServeContext& ctx, PreparedRequest& out,
                     HttpError& err) {
  out = PreparedRequest{};
  out.endpoint = endpoint;
  json body = json::parse(body_text.begin(), body_text.end(), nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded()) return bad(err, "the body is not valid JSON (UTF-8)", "");
  if (!body.is_object()) return bad(err, "the body must be a JSON object", "");
  if (endpoint == Endpoint::Completions) {
    if (!parse_completions(body, ctx, out, err)) return false;
  } else {
    RequestError re;
    auto req = endpoint == Endpoint::ChatCompletions ? parse_chat_request(body, ctx.mapping, re)
                                                      : parse_responses_request(body, ctx.mapping, re);
    if (!req) return bad(err, re.message.empty() ? "invalid request" : re.message, re.param);
    out.api = std::move(*req);
    auto prompt = render_prompt(*ctx.encoding, out.api);
    if (!prompt.ok()) return bad(err, prompt.status().message(), "messages");
    out.prompt.assign(prompt->begin(), prompt->end());
    for (TokenId t : ctx.encoding->stop_tokens_for_assistant_actions()) out.gen.stop_tokens.push_back(int32_t(t));
  }
  if (int64_t(out.prompt.size()) >= ctx.max_context) {
    err = HttpError{400,
                    "the prompt has " + std::to_string(out.prompt.size()) + " tokens; the context holds " +
                        std::to_string(ctx.max_context) + " (prompt and completion together)",
                    "invalid_request_error", "messages"};
    return false;
  }
  // vLLM's extension, for benchmarks: stop tokens do not end the generation, max_tokens (or the context) does.
  if (body.contains("ignore_eos") && !body["ignore_eos"].is_null()) {
    if (!body["ignore_eos"].is_boolean()) return bad(err, "'ignore_eos' must be a boolean", "ignore_eos");
    if (body["ignore_eos"].get<bool>()) out.gen.stop_tokens.clear();
  }
  const SamplingParams& sp = out.api.sampling;
  if (sp.max_tokens && *sp.max_tokens < 1) return bad(err, "max_tokens must be at least 1", "max_tokens");
  out.gen.max_tokens = sp.max_tokens.value_or(0);
  out.gen.sampler.temperature = sp.temperature;
  out.gen.sampler.top_p = sp.top_p;
  out.seeded = sp.seed.has_value();
  out.gen.sampler.seed = sp.seed ? *sp.seed : std::random_device{}();
  out.stop = sp.stop;
  out.stream = out.api.stream;
  out.include_usage = out.api.include_usage;
  return true;
}

}  // namespace gptoss::serve
