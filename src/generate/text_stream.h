// TextStream, kept out of include/gptoss/generate.h because the tokenizer it decodes with is internal.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "gptoss/generate.h"
#include "tokenizer/tokenizer.h"

namespace gptoss {

// Tokens to text for plain completions: UTF-8 safe incremental decoding, then stop strings.
class TextStream {
 public:
  TextStream(const Tokenizer& tok, std::vector<std::string> stops) : dec_(tok), stops_(std::move(stops)) {}
  std::string push(int32_t token) { return stops_.push(dec_.push(TokenId(token))); }
  std::string finish() {
    std::string s = stops_.matched() ? std::string() : stops_.push(dec_.finish());
    return s + stops_.flush();
  }
  bool matched() const { return stops_.matched(); }

 private:
  StreamDecoder dec_;
  StopStrings stops_;
};

}  // namespace gptoss
