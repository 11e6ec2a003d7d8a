// Request bodies into gptoss serve's request preparation (src/serve/request.h): JSON parsing, the
// chat completions / responses / completions field checks, prompt rendering, the context limit. No
// sockets. A 4xx is fine; a crash, a hang or an exception is not. The first byte picks the endpoint,
// the rest is the body. Tokenizer loading: fuzz_tokenizer_file.h.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "fuzz_tokenizer_file.h"
#include "serve/request.h"

namespace {
const gptoss::harmony::HarmonyEncoding& encoding() {
  static const gptoss::harmony::HarmonyEncoding enc = [] {
    auto e = gptoss::harmony::HarmonyEncoding::create(fuzz_load_tokenizer("fuzz_http_request"));
    if (!e.ok()) std::exit(1);
    return *e;
  }();
  return enc;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  using gptoss::serve::Endpoint;
  static const Endpoint endpoints[] = {Endpoint::ChatCompletions, Endpoint::Responses, Endpoint::Completions};
  gptoss::serve::ServeContext ctx;
  ctx.encoding = &encoding();
  ctx.mapping.conversation_date = "2025-06-01";
  ctx.max_context = 512;
  ctx.vocab_size = 201088;
  ctx.model_id = "fuzz";
  gptoss::serve::PreparedRequest req;
  gptoss::serve::HttpError err;
  const std::string_view body(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (gptoss::serve::prepare_request(endpoints[data[0] % 3], body, ctx, req, err)) {
    if (req.prompt.empty() || int(req.prompt.size()) >= ctx.max_context) std::abort();
    for (int32_t t : req.prompt)
      if (t < 0 || t >= ctx.vocab_size) std::abort();
  } else {
    if (err.status < 400 || err.status >= 500) std::abort();
    (void)gptoss::serve::dump_json(gptoss::serve::http_error_json(err));
  }
  return 0;
}
