// The OpenAI API mapping (src/serve) on untrusted input: the first input byte picks the target.
//  - even: the rest is a request body for parse_chat_request_text / parse_responses_request_text,
//    rendered when it validates; a 400 is fine, a crash is not.
//  - odd: the rest is a completion token stream (3 bytes an id, biased to the Harmony specials) for
//    CompletionMapper, which must never fail; the JSON shapes of its result must dump.
// Tokenizer loading: fuzz_tokenizer_file.h (GPTOSS_FUZZ_TOKENIZER, else ../shared).
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "fuzz_tokenizer_file.h"
#include "serve/openai_api.h"

namespace {
const gptoss::harmony::HarmonyEncoding& encoding() {
  static const gptoss::harmony::HarmonyEncoding enc = [] {
    const gptoss::Tokenizer t = fuzz_load_tokenizer("fuzz_openai_mapping");
    auto e = gptoss::harmony::HarmonyEncoding::create(t);
    if (!e.ok()) std::exit(1);
    return *e;
  }();
  return enc;
}

constexpr const char* kPrefixes[] = {"", "<|channel|>commentary to=functions",
                                     "<|channel|>commentary to=functions.f <|constrain|>json<|message|>"};
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace gptoss::serve;
  const auto& enc = encoding();
  if (size == 0) return 0;
  const auto dump = [](const nlohmann::ordered_json& j) {
    (void)j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
  };
  if (data[0] % 2 == 0) {
    const std::string_view body(reinterpret_cast<const char*>(data + 1), size - 1);
    const MappingOptions opts{"2025-06-28"};
    RequestError error;
    for (const auto& req : {parse_chat_request_text(body, opts, error), parse_responses_request_text(body, opts, error)}) {
      if (req) (void)render_prompt(enc, *req);
    }
    return 0;
  }
  CompletionMapper mapper(enc, kPrefixes[data[0] / 2 % 3]);
  std::vector<StreamEvent> events;
  for (size_t i = 1; i + 3 <= size; i += 3) {
    const uint32_t v = static_cast<uint32_t>(data[i + 1]) | static_cast<uint32_t>(data[i + 2]) << 8;
    uint32_t id;
    switch (data[i] % 4) {
      case 0: id = 200000 + v % 20; break;          // Harmony specials
      case 1: id = v % 1024; break;                  // bytes and short tokens
      case 2: id = v * 4u % 201200; break;           // anywhere, including undecodable ids
      default: id = static_cast<uint32_t>(data[i + 1]) * 50u; break;
    }
    mapper.push(id, events);
  }
  mapper.finish(events);
  for (const StreamEvent& e : events) dump(chat_delta_json(e, mapper.result()));
  dump(chat_message_json(mapper.result()));
  dump(responses_output_json(mapper.result()));
  return 0;
}
