// Arbitrary token streams into the Harmony StreamableParser: errors are fine, crashes are not.
// Each 3 input bytes make one id, biased towards the Harmony specials (200000..200019) so the
// grammar gets exercised; the first byte picks the starting state. Tokenizer loading:
// fuzz_tokenizer_file.h (GPTOSS_FUZZ_TOKENIZER, else ../shared relative to the executable).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "fuzz_tokenizer_file.h"
#include "tokenizer/harmony.h"

namespace {
const gptoss::harmony::HarmonyEncoding& encoding() {
  static const gptoss::harmony::HarmonyEncoding enc = [] {
    const gptoss::Tokenizer t = fuzz_load_tokenizer("fuzz_harmony_parse");
    auto e = gptoss::harmony::HarmonyEncoding::create(t);
    if (!e.ok()) std::exit(1);
    return *e;
  }();
  return enc;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto& enc = encoding();
  if (size == 0) return 0;
  using gptoss::harmony::Role;
  std::optional<Role> role;
  if (data[0] % 3 == 1) role = Role::Assistant;
  if (data[0] % 3 == 2) role = Role::Tool;
  gptoss::harmony::StreamableParser parser(enc, role);
  for (size_t i = 1; i + 3 <= size; i += 3) {
    uint32_t id;
    const uint32_t v = static_cast<uint32_t>(data[i + 1]) | static_cast<uint32_t>(data[i + 2]) << 8;
    switch (data[i] % 4) {
      case 0: id = 200000 + v % 20; break;            // Harmony specials
      case 1: id = v % 1024; break;                    // bytes and short tokens
      case 2: id = v * 4u % 201200; break;             // anywhere, including undecodable ids
      default: id = static_cast<uint32_t>(data[i + 1]) * 50u; break;
    }
    if (!parser.process(id).ok()) return 0;
    (void)parser.last_content_delta();
  }
  (void)parser.process_eos();
  for (const auto& m : parser.messages()) (void)m.to_json().dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
  return 0;
}
