// Harmony: the 86-token example and the completion parse of docs/MODEL.md §6.1, streaming deltas over
// split UTF-8, and grammar errors. Uses ../shared/data/o200k_base.tiktoken when present.
#include <gtest/gtest.h>

#include <optional>

#include "tokenizer/harmony.h"

namespace gptoss::harmony {
namespace {

const HarmonyEncoding* encoding() {
  static const auto enc = []() -> std::optional<HarmonyEncoding> {
    auto tok = Tokenizer::from_tiktoken_file(std::string(GPTOSS_SOURCE_DIR) + "/../shared/data/o200k_base.tiktoken");
    if (!tok.ok()) return std::nullopt;
    auto e = HarmonyEncoding::create(*tok);
    return e.ok() ? std::optional<HarmonyEncoding>(*e) : std::nullopt;
  }();
  return enc ? &*enc : nullptr;
}

#define REQUIRE_ENCODING()                                           \
  if (!encoding()) GTEST_SKIP() << "../shared/data not available"; \
  const HarmonyEncoding& enc = *encoding()

using Ids = std::vector<TokenId>;

TEST(Harmony, ReferenceExample86Tokens) {
  REQUIRE_ENCODING();
  Conversation conv;
  Message sys;
  sys.role = Role::System;
  Content sc;
  sc.kind = Content::Kind::System;
  sc.system = SystemContent::defaults();
  sc.system.reasoning_effort = ReasoningEffort::High;
  sc.system.conversation_start_date = "2025-06-28";
  sys.content.push_back(sc);
  Message dev;
  dev.role = Role::Developer;
  Content dc;
  dc.kind = Content::Kind::Developer;
  dc.developer.instructions = "Answer in one word.";
  dev.content.push_back(dc);
  conv.messages = {sys, dev, Message::from_text(Role::User, "What is the capital of France?")};
  const Ids want = {200006, 17360, 200008, 3575, 553, 17554, 162016, 11, 261, 4410, 6439, 2359, 22203, 656, 7788,
                    17527, 558, 87447, 100594, 25, 220, 1323, 19, 12, 3218, 198, 6576, 3521, 25, 220, 1323, 20, 12,
                    3218, 12, 2029, 279, 30377, 289, 25, 1932, 279, 2, 13888, 18403, 25, 8450, 11, 49159, 11, 1721,
                    13, 21030, 2804, 413, 7360, 395, 1753, 3176, 13, 200007, 200006, 77944, 200008, 2, 68406, 279,
                    17045, 306, 1001, 2195, 13, 200007, 200006, 1428, 200008, 4827, 382, 290, 9029, 328, 10128, 30,
                    200007, 200006, 173781};
  auto got = enc.render_for_completion(conv);
  ASSERT_TRUE(got.ok()) << got.status().message();
  EXPECT_EQ(got->size(), 86u);
  EXPECT_EQ(*got, want);
}

TEST(Harmony, ReferenceParseExample) {
  REQUIRE_ENCODING();
  const Ids tokens = {200005, 35644, 200008, 17958, 4928, 13, 200007, 200006, 173781, 200005, 17196, 200008, 72782, 200002};
  auto msgs = enc.parse_messages(tokens, "assistant");
  ASSERT_TRUE(msgs.ok()) << msgs.status().message();
  ASSERT_EQ(msgs->size(), 2u);
  EXPECT_EQ((*msgs)[0].role, Role::Assistant);
  EXPECT_EQ((*msgs)[0].channel, "analysis");
  EXPECT_EQ((*msgs)[0].text(), "Simple question.");
  EXPECT_EQ((*msgs)[1].channel, "final");
  EXPECT_EQ((*msgs)[1].text(), "Paris");
}

TEST(Harmony, ToolCallHeader) {
  REQUIRE_ENCODING();
  const Tokenizer& tok = enc.tokenizer();
  const Ids tokens = tok.encode(
      "<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{\"location\":\"Paris\"}<|call|>",
      AllowedSpecial::every());
  auto msgs = enc.parse_messages(tokens, "assistant");
  ASSERT_TRUE(msgs.ok()) << msgs.status().message();
  ASSERT_EQ(msgs->size(), 1u);
  EXPECT_EQ((*msgs)[0].recipient, "functions.get_weather");
  EXPECT_EQ((*msgs)[0].content_type, "<|constrain|>json");
  EXPECT_EQ((*msgs)[0].text(), "{\"location\":\"Paris\"}");
  // Rendering it back writes the recipient after the role and ends with <|call|>.
  auto ids = enc.render_message((*msgs)[0], false);
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(*tok.decode(*ids),
            "<|start|>assistant to=functions.get_weather<|channel|>commentary <|constrain|>json<|message|>"
            "{\"location\":\"Paris\"}<|call|>");
}

TEST(Harmony, StreamingDeltasNeverSplitUtf8) {
  REQUIRE_ENCODING();
  const Tokenizer& tok = enc.tokenizer();
  StreamableParser p(enc, Role::Assistant);
  for (TokenId t : tok.encode("<|channel|>final<|message|>", AllowedSpecial::every())) ASSERT_TRUE(p.process(t).ok());
  EXPECT_EQ(p.state(), StreamableParser::State::Content);
  EXPECT_EQ(p.current_channel(), "final");
  // "é" as two byte tokens: nothing, then the whole character.
  ASSERT_TRUE(p.process(tok.encode_ordinary("\xC3")[0]).ok());
  EXPECT_EQ(p.last_content_delta(), "");
  ASSERT_TRUE(p.process(tok.encode_ordinary("\xA9")[0]).ok());
  EXPECT_EQ(p.last_content_delta(), "\xC3\xA9");
  ASSERT_TRUE(p.process(tok.encode_ordinary("ok")[0]).ok());
  EXPECT_EQ(p.last_content_delta(), "ok");
  EXPECT_EQ(p.current_content(), "\xC3\xA9ok");
  ASSERT_TRUE(p.process(enc.return_id).ok());
  ASSERT_EQ(p.messages().size(), 1u);
  EXPECT_EQ(p.messages()[0].text(), "\xC3\xA9ok");
  EXPECT_EQ(p.state(), StreamableParser::State::ExpectStart);
}

TEST(Harmony, GrammarErrors) {
  REQUIRE_ENCODING();
  // Not <|start|> between messages.
  EXPECT_FALSE(enc.parse_messages(Ids{1428}, "").ok());
  // End of stream inside a header.
  EXPECT_FALSE(enc.parse_messages(Ids{200006, 1428}, "").ok());
  // Channel marker without a channel.
  EXPECT_FALSE(enc.parse_messages(Ids{200005, 200008, 72782, 200007}, "assistant").ok());
  // Undecodable id in content ends the message as U+FFFD rather than failing.
  auto m = enc.parse_messages(Ids{200008, 72782, 0xFFFFFFu, 200007}, "assistant");
  ASSERT_TRUE(m.ok());
  EXPECT_EQ((*m)[0].text(), "Paris\xEF\xBF\xBD");
  EXPECT_EQ(enc.stop_tokens_for_assistant_actions(), (Ids{200002, 200012}));
  // Words left over in a header are named, in order.
  auto extra = enc.parse_messages(
      enc.tokenizer().encode("<|channel|>commentary a b to=functions.x <|constrain|>json<|message|>{}<|call|>",
                             AllowedSpecial::every()),
      "assistant");
  ASSERT_FALSE(extra.ok());
  EXPECT_NE(extra.status().message().find("unexpected words remaining in message header: 'a b'"), std::string::npos)
      << extra.status().message();
}

TEST(Harmony, ConversationJsonErrors) {
  EXPECT_FALSE(Conversation::from_json_text("{").ok());
  EXPECT_FALSE(Conversation::from_json_text(R"({"messages": [{"role": "robot"}]})").ok());
  EXPECT_FALSE(Conversation::from_json_text(R"({"messages": [{"role": "user", "content": [{"type": "image"}]}]})").ok());
  EXPECT_FALSE(Conversation::from_json_text(R"({"messages": [{"role": "user", "content": [{"type": "text", "text": 3}]}]})").ok());
  auto c = Conversation::from_json_text(R"({"messages": [{"role": "user", "content": "hi"}]})");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->messages[0].text(), "hi");
}

}  // namespace
}  // namespace gptoss::harmony
