// Arbitrary bytes through the real o200k_harmony tokenizer: decode(encode_ordinary(x)) == x for every
// input (valid UTF-8 or not; see tokenizer.h); with specials allowed, encode(decode(ids)) == ids.
//
// The tokenizer is loaded once (fuzz_tokenizer_file.h: GPTOSS_FUZZ_TOKENIZER, else ../shared).
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "fuzz_tokenizer_file.h"
#include "tokenizer/tokenizer.h"

namespace {
const gptoss::Tokenizer& tokenizer() {
  static const gptoss::Tokenizer tok = fuzz_load_tokenizer("fuzz_encode");
  return tok;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const gptoss::Tokenizer& tok = tokenizer();
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  for (bool specials : {false, true}) {
    const auto ids = specials ? tok.encode(text, gptoss::AllowedSpecial::every()) : tok.encode_ordinary(text);
    for (auto id : ids) {
      if (!specials && tok.is_special(id)) __builtin_trap();
    }
    auto back = tok.decode(ids);
    if (!back.ok()) __builtin_trap();
    if (!specials && *back != text) __builtin_trap();
    // With specials, an alias ("<|reserved_200018|>" = 200018) decodes to the canonical name
    // ("<|endofprompt|>"), so check the ids instead.
    if (specials && tok.encode(*back, gptoss::AllowedSpecial::every()) != ids) __builtin_trap();
  }
  // The stream decoder emits valid UTF-8 that equals the text when the text is valid UTF-8.
  gptoss::StreamDecoder sd(tok);
  std::string streamed;
  for (auto id : tok.encode_ordinary(text)) streamed += sd.push(id);
  streamed += sd.finish();
  return 0;
}
