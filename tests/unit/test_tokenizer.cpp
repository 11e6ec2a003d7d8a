// Tokenizer: o200k vectors (docs/MODEL.md §5), special tokens, unknown ids, the stream decoder on split UTF-8,
// invalid UTF-8 round trips and malformed tokenizer files. Uses ../shared/data when present.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <optional>

#include "tokenizer/tokenizer.h"

namespace gptoss {
namespace {

const std::string kData = std::string(GPTOSS_SOURCE_DIR) + "/../shared/data";

const Tokenizer* tiktoken_tok() {
  static const auto tok = [] {
    auto r = Tokenizer::from_tiktoken_file(kData + "/o200k_base.tiktoken");
    return r.ok() ? std::optional<Tokenizer>(*r) : std::nullopt;
  }();
  return tok ? &*tok : nullptr;
}

const Tokenizer* json_tok() {
  static const auto tok = [] {
    auto r = Tokenizer::from_hf_json_file(kData + "/gpt-oss-tokenizer/tokenizer.json");
    return r.ok() ? std::optional<Tokenizer>(*r) : std::nullopt;
  }();
  return tok ? &*tok : nullptr;
}

#define REQUIRE_TOKENIZERS()                                                     \
  if (!tiktoken_tok() || !json_tok()) GTEST_SKIP() << kData << " not available"; \
  const Tokenizer& tt = *tiktoken_tok();                                         \
  const Tokenizer& hf = *json_tok();                                           \
  (void)hf

using Ids = std::vector<TokenId>;

TEST(Tokenizer, ReferenceVectors) {
  REQUIRE_TOKENIZERS();
  const std::vector<std::pair<std::string, Ids>> cases = {
      {"analysis", {35644}},  {"assistant", {173781}}, {"final", {17196}}, {"commentary", {12606, 815}},
      {"user", {1428}},       {"system", {17360}},     {"developer", {77944}}, {"json", {4108}},
      {" json", {5701}},
      {"User asks: \"What is 2 + 2?\" Simple arithmetic. Provide answer.",
       {1844, 31064, 25, 392, 4827, 382, 220, 17, 659, 220, 17, 16842, 12295, 81645, 13, 51441, 6052, 13}},
      {"2 + 2 = 4.", {17, 659, 220, 17, 314, 220, 19, 13}},
  };
  for (const auto& [text, ids] : cases) {
    EXPECT_EQ(tt.encode_ordinary(text), ids) << text;
    EXPECT_EQ(hf.encode_ordinary(text), ids) << text;
    EXPECT_EQ(*tt.decode(ids), text);
  }
}

TEST(Tokenizer, Sizes) {
  REQUIRE_TOKENIZERS();
  EXPECT_EQ(tt.token_count(), 201088u);
  EXPECT_EQ(hf.token_count(), 200019u);
  EXPECT_EQ(tt.num_bpe_tokens(), 199998u);
  EXPECT_EQ(hf.num_bpe_tokens(), 199998u);
}

TEST(Tokenizer, SpecialTokens) {
  REQUIRE_TOKENIZERS();
  for (const Tokenizer* t : {&tt, &hf}) {
    EXPECT_EQ(t->special_token_id("<|start|>"), 200006u);
    EXPECT_EQ(t->special_token_id("<|return|>"), 200002u);
    EXPECT_EQ(t->special_token_id("<|call|>"), 200012u);
    EXPECT_EQ(t->special_token_id("<|endofprompt|>"), 200018u);
    EXPECT_FALSE(t->special_token_id("<|nope|>"));
    EXPECT_TRUE(t->is_special(200006));
    EXPECT_FALSE(t->is_special(1428));
    const std::string text = "<|start|>user<|message|>hi<|end|>";
    // Ordinary encoding never produces special ids (no control-token injection from user text).
    for (TokenId id : t->encode_ordinary(text)) EXPECT_LT(id, 199998u);
    EXPECT_EQ(t->encode(text, AllowedSpecial::every()), (Ids{200006, 1428, 200008, 3686, 200007}));
    // Only the allowed ones are recognised.
    const Ids partial = t->encode(text, AllowedSpecial{false, {"<|end|>"}});
    EXPECT_EQ(partial.back(), 200007u);
    EXPECT_NE(partial.front(), 200006u);
    EXPECT_EQ(*t->decode(partial), text);
  }
  // o200k_harmony names every id up to 201087; 200018 also answers to its reserved name.
  EXPECT_EQ(tt.special_token_id("<|reserved_200018|>"), 200018u);
  EXPECT_EQ(tt.special_token_id("<|reserved_201087|>"), 201087u);
  EXPECT_EQ(*tt.decode(Ids{200018, 201087}), "<|endofprompt|><|reserved_201087|>");
}

TEST(Tokenizer, HarmonySpecialsMatchTable) {
  REQUIRE_TOKENIZERS();
  std::ifstream f(kData + "/o200k_harmony_special_tokens.tsv");
  ASSERT_TRUE(f);
  std::string line;
  int n = 0;
  while (std::getline(f, line)) {
    const size_t tab = line.find('\t');
    ASSERT_NE(tab, std::string::npos);
    EXPECT_EQ(tt.special_token_id(line.substr(0, tab)), static_cast<TokenId>(std::stoul(line.substr(tab + 1))))
        << line;
    ++n;
  }
  EXPECT_EQ(n, 1091);
}

TEST(Tokenizer, UnknownIds) {
  REQUIRE_TOKENIZERS();
  // tokenizer.json has ids 0..200018; the model's rows 200019..201087 cannot be decoded.
  auto r = hf.decode(Ids{1428, 200500});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("200500"), std::string::npos);
  EXPECT_FALSE(tt.decode(Ids{201088}).ok());
  EXPECT_FALSE(tt.decode(Ids{0xFFFFFFFFu}).ok());
  EXPECT_FALSE(hf.is_decodable(200019));
  EXPECT_TRUE(tt.is_decodable(200019));
  // The lenient stream path prints U+FFFD instead.
  StreamDecoder sd(hf);
  EXPECT_EQ(sd.push(1428), "user");
  EXPECT_EQ(sd.push(200500), "\xEF\xBF\xBD");
}

TEST(Tokenizer, StreamDecoderSplitUtf8) {
  REQUIRE_TOKENIZERS();
  // "é" = C3 A9 and "👩" = F0 9F 91 A9, fed one byte token at a time.
  const std::string text = "a\xC3\xA9\xF0\x9F\x91\xA9!";
  std::vector<TokenId> byte_ids;
  for (char c : text) byte_ids.push_back(tt.encode_ordinary(std::string(1, c))[0]);
  StreamDecoder sd(tt);
  std::vector<std::string> outs;
  for (TokenId id : byte_ids) outs.push_back(sd.push(id));
  EXPECT_EQ(outs, (std::vector<std::string>{"a", "", "\xC3\xA9", "", "", "", "\xF0\x9F\x91\xA9", "!"}));
  EXPECT_EQ(sd.finish(), "");
  // A sequence that cannot complete becomes U+FFFD; so does an unfinished one at the end.
  const TokenId c3 = byte_ids[1], x41 = tt.encode_ordinary("A")[0];
  EXPECT_EQ(sd.push(c3), "");
  EXPECT_EQ(sd.push(x41), "\xEF\xBF\xBD" "A");
  EXPECT_EQ(sd.push(c3), "");
  EXPECT_EQ(sd.finish(), "\xEF\xBF\xBD");
}

TEST(Tokenizer, InvalidUtf8RoundTrips) {
  REQUIRE_TOKENIZERS();
  const std::vector<std::string> inputs = {"\xFF", "abc\xC3", "\xED\xA0\x80 surrogate", "over\xC0\xAFlong",
                                           "\xF4\x90\x80\x80", std::string("nul\0byte", 8), "ok \xE4\xB8 cut"};
  for (const std::string& s : inputs) {
    for (const Tokenizer* t : {&tt, &hf}) {
      const Ids ids = t->encode_ordinary(s);
      EXPECT_EQ(*t->decode(ids), s);
    }
  }
  // Each byte that starts no valid sequence is its own byte token; valid runs encode as usual.
  EXPECT_EQ(tt.encode_ordinary("user\xFFuser"), (Ids{1428, tt.encode_ordinary("\xFF")[0], 1428}));
}

TEST(Tokenizer, LongRuns) {
  REQUIRE_TOKENIZERS();
  for (const std::string& s : {std::string(5000, ' '), std::string(3000, '='), std::string(1000, 'a')}) {
    const Ids ids = tt.encode_ordinary(s);
    EXPECT_EQ(*tt.decode(ids), s);
    EXPECT_EQ(ids, hf.encode_ordinary(s));
  }
}

// A tiny valid tiktoken file: the 256 single bytes, then "ab" (rank 256).
std::string tiny_tiktoken(bool with_ab = true) {
  static const char* b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  for (int b = 0; b < 256; ++b) {
    out += b64[b >> 2];
    out += b64[(b & 3) << 4];
    out += "== " + std::to_string(b) + "\n";
  }
  if (with_ab) out += "YWI= 256\n";
  return out;
}

TEST(Tokenizer, TinyTiktokenFile) {
  auto t = Tokenizer::from_tiktoken_text(tiny_tiktoken(), "tiny");
  ASSERT_TRUE(t.ok()) << t.status().message();
  EXPECT_EQ(t->encode_ordinary("abab"), (Ids{256, 256}));
  EXPECT_EQ(t->encode_ordinary("xab"), (Ids{'x', 256}));
  // Ids between the BPE ranks and the specials are holes: not decodable.
  EXPECT_FALSE(t->decode(Ids{1000}).ok());
  EXPECT_EQ(*t->decode(Ids{200006}), "<|start|>");
}

TEST(Tokenizer, MalformedTiktokenFiles) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"", "no tokens"},
      {"!!!! 0\n", "base64"},
      {"YQ==\n", "BASE64 RANK"},
      {"YQ== x\n", "bad rank"},
      {"YQ== 0\nYQ== 1\n", "twice"},
      {"YQ== 0\nYg== 0\n", "twice"},
      {"YQ== 5\n", "gaps"},
      {"YQ== 199998\n", "collides"},
      {tiny_tiktoken(false), ""},  // valid
  };
  for (const auto& [text, msg] : cases) {
    auto t = Tokenizer::from_tiktoken_text(text, "bad.tiktoken");
    if (msg.empty()) {
      EXPECT_TRUE(t.ok());
      continue;
    }
    ASSERT_FALSE(t.ok()) << text;
    EXPECT_NE(t.status().message().find("bad.tiktoken"), std::string::npos) << t.status().message();
    EXPECT_NE(t.status().message().find(msg), std::string::npos) << t.status().message();
  }
}

TEST(Tokenizer, MalformedJsonFiles) {
  const std::string pre =
      R"("pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": "\\s+|\\S+"}, "behavior": "Isolated", "invert": false}, {"type": "ByteLevel", "add_prefix_space": false, "use_regex": false}]})";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"", "not valid JSON"},
      {"[1,2]", "top level"},
      {"{}", "model"},
      {R"({"model": {"type": "WordPiece"}})", "BPE"},
      {R"({"model": {"type": "BPE", "ignore_merges": false}})", "ignore_merges"},
      {R"({"model": {"type": "BPE", "ignore_merges": true}})", "pre_tokenizer"},
      {R"({"model": {"type": "BPE", "ignore_merges": true}, "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(("}, "behavior": "Isolated"}, "normalizer": null})",
       "Split(Regex) followed by ByteLevel"},
      {R"({"model": {"type": "BPE", "ignore_merges": true, "vocab": {"a": 0}}, )" + pre + "}", "single byte"},
      {R"({"model": {"type": "BPE", "ignore_merges": true, "vocab": {"a": 5}}, )" + pre + "}", "expected ids"},
      {R"({"model": {"type": "BPE", "ignore_merges": true, "vocab": {"a": "x"}}, )" + pre + "}", "non-integer"},
      {R"({"model": {"type": "BPE", "ignore_merges": true, "vocab": {"\u4e00": 0}}, )" + pre + "}",
       "byte-level alphabet"},
      {R"({"model": {"type": "BPE", "ignore_merges": true, "vocab": 3}, )" + pre + "}", "vocab"},
      // model.vocab is collected outside the DOM (from_hf_json_text skips building it): other shapes still fail.
      {R"({"model": {"type": "BPE", "ignore_merges": true, "vocab": [["a", 0]]}, )" + pre + "}", "no model.vocab"},
      {R"({"model": {"type": "BPE", "ignore_merges": true, "merges": {"vocab": {"a": 0}}}, )" + pre + "}",
       "no model.vocab"},
      {R"({"model": {"type": "BPE", "ignore_merges": true, "vocab": {"a": {"b": 0}}}, )" + pre + "}", "single byte"},
      {R"({"vocab": {"a": 0}, "model": {"type": "BPE", "ignore_merges": true, "merges": [["a", "b"]]}, )" + pre + "}",
       "no model.vocab"},
  };
  for (const auto& [text, msg] : cases) {
    auto t = Tokenizer::from_hf_json_text(text, "bad.json");
    ASSERT_FALSE(t.ok()) << text;
    EXPECT_NE(t.status().message().find("bad.json"), std::string::npos) << t.status().message();
    EXPECT_NE(t.status().message().find(msg), std::string::npos) << t.status().message();
  }
  EXPECT_FALSE(Tokenizer::from_model_dir("/nonexistent").ok());
  EXPECT_FALSE(Tokenizer::from_file("/nonexistent/tokenizer.json").ok());
}

}  // namespace
}  // namespace gptoss
