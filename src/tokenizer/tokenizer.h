// The o200k tokenizer of gpt-oss: byte-level BPE with tiktoken semantics, the o200k
// pre-tokenization regex (PCRE2, JIT) and special tokens.
//
// Sources:
//   - a Hugging Face tokenizer.json (model.type "BPE" with ignore_merges = true, byte-level vocab,
//     a Split(Regex) pre-tokenizer, added tokens). Ranks are the vocab ids; the merges list is not
//     needed because with tiktoken semantics the merge order is the rank order. gpt-oss's file has
//     200,019 ids (199,998 BPE tokens + specials 199998..200018).
//   - a .tiktoken rank file (base64 token, space, rank per line) plus the o200k_harmony special
//     tokens embedded here (ids 199998..201087, so all 201,088 model ids decode).
//
// Defined behaviours:
//   - Invalid UTF-8 input to encode*: the text is split into maximal valid UTF-8 runs and the bytes
//     that do not start a valid sequence. Each valid run is pre-tokenized and encoded on its own;
//     each invalid byte becomes its single-byte token. So decode(encode(x)) == x for ANY bytes x,
//     and for valid UTF-8 the ids equal tiktoken's / Hugging Face's.
//   - Special-token strings inside text: encode_ordinary treats them as ordinary text; encode()
//     recognises only the specials the caller allows (leftmost match first).
//   - Ids the tokenizer cannot decode (>= token_count(), e.g. the model's rows 200019..201087 with
//     a tokenizer.json): decode() returns an error naming the id; StreamDecoder (the lenient path
//     for printing model output) emits U+FFFD for them.
//
// A Tokenizer is immutable after loading, cheap to copy (shared state) and safe to use from
// several threads at once.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace gptoss {

using TokenId = uint32_t;

// Which special-token strings encode() turns into special ids.
struct AllowedSpecial {
  bool all = false;
  std::vector<std::string> names;  // e.g. "<|start|>", used when all == false
  static AllowedSpecial none() { return {}; }
  static AllowedSpecial every() { return {true, {}}; }
};

class Tokenizer {
 public:
  // Loads tokenizer.json (Hugging Face). `source` names the input in error messages.
  static Result<Tokenizer> from_hf_json_text(std::string_view json_text, std::string_view source);
  static Result<Tokenizer> from_hf_json_file(const std::string& path);
  // Loads a .tiktoken rank file and adds the o200k_harmony special tokens.
  static Result<Tokenizer> from_tiktoken_text(std::string_view text, std::string_view source);
  static Result<Tokenizer> from_tiktoken_file(const std::string& path);
  // A file: *.tiktoken → from_tiktoken_file, anything else → from_hf_json_file.
  static Result<Tokenizer> from_file(const std::string& path);
  // The tokenizer.json of a Hugging Face model directory, else its o200k_base.tiktoken.
  static Result<Tokenizer> from_model_dir(const std::string& dir);

  // Encodes text with no special tokens: "<|start|>" in text becomes ordinary tokens.
  std::vector<TokenId> encode_ordinary(std::string_view text) const;
  // Encodes text, turning the allowed special-token strings into their ids.
  std::vector<TokenId> encode(std::string_view text, const AllowedSpecial& allowed) const;
  // The bytes of the tokens (not necessarily valid UTF-8 when a sequence is cut); error on an id
  // the tokenizer cannot decode.
  Result<std::string> decode(std::span<const TokenId> ids) const;

  // Id of a special token by its string ("<|start|>"), if the tokenizer has it.
  std::optional<TokenId> special_token_id(std::string_view name) const;
  // One past the largest id the tokenizer can decode (200019 for gpt-oss's tokenizer.json, 201088
  // for .tiktoken + o200k_harmony).
  uint32_t token_count() const;
  // Number of ordinary (BPE) tokens; ids below it are BPE tokens.
  uint32_t num_bpe_tokens() const;
  bool is_special(TokenId id) const;
  // Whether decode() accepts the id.
  bool is_decodable(TokenId id) const;
  // The bytes of one token (the string of a special); empty when not decodable.
  std::string_view token_bytes(TokenId id) const;

 private:
  struct Impl;
  explicit Tokenizer(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<const Impl> impl_;
};

// Incremental decoding for printing tokens as they are sampled. push() returns the text that is
// complete so far: valid UTF-8 only; bytes of an unfinished multi-byte character are held back until
// the next token completes them. Bytes that can never form valid UTF-8, and ids the tokenizer cannot
// decode, come out as U+FFFD. finish() flushes what is held back (as U+FFFD when incomplete).
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tokenizer) : tokenizer_(tokenizer) {}
  std::string push(TokenId id);
  std::string finish();
  void reset() { pending_.clear(); }

 private:
  Tokenizer tokenizer_;
  std::string pending_;
};

}  // namespace gptoss
