// From an HTTP request body to what the engine runs, without sockets (the HTTP fuzz target drives it):
// JSON parsing, the OpenAI field checks (openai_api.h for chat completions and responses, here for
// plain completions), prompt rendering and the context limit.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "gptoss/generate.h"
#include "serve/openai_api.h"
#include "tokenizer/harmony.h"

namespace gptoss::serve {

enum class Endpoint { ChatCompletions, Responses, Completions };

// A 4xx answer: the status and the OpenAI error object's fields.
struct HttpError {
  int status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;
};

// What the server knows when it prepares a request.
struct ServeContext {
  const harmony::HarmonyEncoding* encoding = nullptr;
  MappingOptions mapping;
  int max_context = 4096;  // tokens a slot holds: prompt + completion
  int vocab_size = 0;
  std::string model_id;  // what /v1/models lists and responses name
};

struct PreparedRequest {
  Endpoint endpoint = Endpoint::ChatCompletions;
  ApiRequest api;                 // chat completions and responses (the completions fields below too)
  std::vector<int32_t> prompt;    // the tokens the engine runs
  GenerateOptions gen;            // sampling, max tokens, stop tokens
  std::vector<std::string> stop;  // stop strings, applied to the streamed text
  std::vector<int32_t> end_tokens;  // completions: end-of-text tokens, never shown as text (even with ignore_eos)
  bool stream = false;
  bool include_usage = false;
  bool seeded = false;  // the request gave a seed (else the server draws one)
};

// Parses `body` for `endpoint`; on failure fills `err` (400, or 413 is left to the HTTP layer) and
// returns false.
bool prepare_request(Endpoint endpoint, std::string_view body, const ServeContext& ctx, PreparedRequest& out,
                     HttpError& err);

// {"error": {...}} for an HttpError.
nlohmann::ordered_json http_error_json(const HttpError& e);

// JSON text that never throws: invalid UTF-8 is replaced (model text is valid, this is a last guard).
std::string dump_json(const nlohmann::ordered_json& j);

}  // namespace gptoss::serve
