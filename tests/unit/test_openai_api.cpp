// OpenAI API <-> Harmony mapping (src/serve): request validation (every malformed body is a
// RequestError naming its field), the conversations requests become, the JSON shapes, and
// CompletionMapper on valid and garbage token streams (it never fails, and its events always add up
// to its result). Render exactness against openai-harmony is tests/py/test_openai_mapping.py.
#include <gtest/gtest.h>

#include <optional>
#include <random>

#include "serve/openai_api.h"

namespace gptoss::serve {
namespace {

using ojson = nlohmann::ordered_json;
using harmony::Role;

const harmony::HarmonyEncoding* encoding() {
  static const auto enc = []() -> std::optional<harmony::HarmonyEncoding> {
    auto tok = Tokenizer::from_tiktoken_file(std::string(GPTOSS_SOURCE_DIR) + "/../shared/data/o200k_base.tiktoken");
    if (!tok.ok()) return std::nullopt;
    auto e = harmony::HarmonyEncoding::create(*tok);
    return e.ok() ? std::optional<harmony::HarmonyEncoding>(*e) : std::nullopt;
  }();
  return enc ? &*enc : nullptr;
}

#define REQUIRE_ENCODING()                                           \
  if (!encoding()) GTEST_SKIP() << "../shared/data not available"; \
  const harmony::HarmonyEncoding& enc = *encoding()

const MappingOptions kOpts{"2025-06-28"};

ojson weather_tool() {
  return ojson::parse(R"({"type":"function","function":{"name":"get_weather","description":"Weather.",
    "parameters":{"type":"object","properties":{"location":{"type":"string"}},"required":["location"]}}})");
}

std::optional<ApiRequest> chat(const std::string& body, RequestError& error) {
  return parse_chat_request_text(body, kOpts, error);
}

struct BadRequest {
  const char* body;
  const char* param;
};

// Each body is wrong in exactly one field; the error must name it.
const BadRequest kBadChat[] = {
    {R"([1,2])", ""},
    {R"({"messages": [{"role":"user","content":"hi"}], )", ""},  // not JSON
    {"{\"messages\": [{\"role\":\"user\",\"content\":\"\xff\xfe\"}]}", ""},  // invalid UTF-8
    {R"({})", "messages"},
    {R"({"messages": "hi"})", "messages"},
    {R"({"messages": []})", "messages"},
    {R"({"messages": [3]})", "messages[0]"},
    {R"({"messages": [{"content":"hi"}]})", "messages[0].role"},
    {R"({"messages": [{"role":7,"content":"hi"}]})", "messages[0].role"},
    {R"({"messages": [{"role":"wizard","content":"hi"}]})", "messages[0].role"},
    {R"({"messages": [{"role":"user"}]})", "messages[0].content"},
    {R"({"messages": [{"role":"user","content":5}]})", "messages[0].content"},
    {R"({"messages": [{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]})",
     "messages[0].content[0].type"},
    {R"({"messages": [{"role":"user","content":[{"type":"text"}]}]})", "messages[0].content[0].text"},
    {R"({"messages": [{"role":"user","content":["hi"]}]})", "messages[0].content[0]"},
    {R"({"messages": [{"role":"system","content":null}]})", "messages[0].content"},
    {R"({"messages": [{"role":"user","content":"a"},{"role":"assistant"}]})", "messages[1].content"},
    {R"({"messages": [{"role":"assistant","content":"a","reasoning_content":3}]})", "messages[0].reasoning_content"},
    {R"({"messages": [{"role":"assistant","tool_calls":{}}]})", "messages[0].tool_calls"},
    {R"({"messages": [{"role":"assistant","tool_calls":[{"id":"a","type":"function"}]}]})",
     "messages[0].tool_calls[0].function"},
    {R"({"messages": [{"role":"assistant","tool_calls":[{"id":"a","type":"function","function":{"arguments":"{}"}}]}]})",
     "messages[0].tool_calls[0].function.name"},
    {R"({"messages": [{"role":"assistant","tool_calls":[{"id":"a","type":"custom","function":{"name":"f"}}]}]})",
     "messages[0].tool_calls[0].type"},
    {R"({"messages": [{"role":"tool","content":"x"}]})", "messages[0].tool_call_id"},
    {R"({"messages": [{"role":"tool","tool_call_id":"nope","content":"x"}]})", "messages[0].tool_call_id"},
    {R"({"messages": [{"role":"assistant","tool_calls":[{"id":"a","type":"function","function":{"name":"f"}}]},
                      {"role":"tool","tool_call_id":"a"}]})", "messages[1].content"},
    {R"({"messages": [{"role":"user","content":"hi"}], "model": 3})", "model"},
    {R"({"messages": [{"role":"user","content":"hi"}], "n": 2})", "n"},
    {R"({"messages": [{"role":"user","content":"hi"}], "n": 1.5})", "n"},
    {R"({"messages": [{"role":"user","content":"hi"}], "temperature": 2.5})", "temperature"},
    {R"({"messages": [{"role":"user","content":"hi"}], "temperature": -0.1})", "temperature"},
    {R"({"messages": [{"role":"user","content":"hi"}], "temperature": "hot"})", "temperature"},
    {R"({"messages": [{"role":"user","content":"hi"}], "top_p": 0})", "top_p"},
    {R"({"messages": [{"role":"user","content":"hi"}], "top_p": 1.01})", "top_p"},
    {R"({"messages": [{"role":"user","content":"hi"}], "max_tokens": 0})", "max_tokens"},
    {R"({"messages": [{"role":"user","content":"hi"}], "max_tokens": -5})", "max_tokens"},
    {R"({"messages": [{"role":"user","content":"hi"}], "max_tokens": 10.5})", "max_tokens"},
    {R"({"messages": [{"role":"user","content":"hi"}], "max_tokens": 99999999999})", "max_tokens"},
    {R"({"messages": [{"role":"user","content":"hi"}], "max_completion_tokens": "10"})", "max_completion_tokens"},
    {R"({"messages": [{"role":"user","content":"hi"}], "seed": 1.5})", "seed"},
    {R"({"messages": [{"role":"user","content":"hi"}], "seed": "42"})", "seed"},
    {R"({"messages": [{"role":"user","content":"hi"}], "stop": 5})", "stop"},
    {R"({"messages": [{"role":"user","content":"hi"}], "stop": ["a","b","c","d","e"]})", "stop"},
    {R"({"messages": [{"role":"user","content":"hi"}], "stop": ["a", 1]})", "stop[1]"},
    {R"({"messages": [{"role":"user","content":"hi"}], "stop": ""})", "stop"},
    {R"({"messages": [{"role":"user","content":"hi"}], "stream": "yes"})", "stream"},
    {R"({"messages": [{"role":"user","content":"hi"}], "stream_options": {"include_usage": true}})",
     "stream_options"},
    {R"({"messages": [{"role":"user","content":"hi"}], "stream": true, "stream_options": {"include_usage": 1}})",
     "stream_options.include_usage"},
    {R"({"messages": [{"role":"user","content":"hi"}], "reasoning_effort": "extreme"})", "reasoning_effort"},
    {R"({"messages": [{"role":"user","content":"hi"}], "reasoning_effort": 2})", "reasoning_effort"},
    {R"({"messages": [{"role":"user","content":"hi"}], "tools": {}})", "tools"},
    {R"({"messages": [{"role":"user","content":"hi"}], "tools": [{"type":"web_search"}]})", "tools[0].type"},
    {R"({"messages": [{"role":"user","content":"hi"}], "tools": [{"type":"function"}]})", "tools[0].function"},
    {R"({"messages": [{"role":"user","content":"hi"}], "tools": [{"type":"function","function":{}}]})",
     "tools[0].function.name"},
    {R"({"messages": [{"role":"user","content":"hi"}], "tools": [{"type":"function","function":{"name":"a b"}}]})",
     "tools[0].function.name"},
    {R"({"messages": [{"role":"user","content":"hi"}], "tools": [{"type":"function","function":{"name":"f"}},
       {"type":"function","function":{"name":"f"}}]})", "tools[1].function.name"},
    {R"({"messages": [{"role":"user","content":"hi"}], "tools": [{"type":"function","function":{"name":"f",
       "parameters":"{}"}}]})", "tools[0].function.parameters"},
    {R"({"messages": [{"role":"user","content":"hi"}], "tools": [{"type":"function","function":{"name":"f",
       "description":7}}]})", "tools[0].function.description"},
    {R"({"messages": [{"role":"user","content":"hi"}], "tool_choice": "required"})", "tool_choice"},
    {R"({"messages": [{"role":"user","content":"hi"}], "tool_choice": "sometimes"})", "tool_choice"},
    {R"({"messages": [{"role":"user","content":"hi"}], "tool_choice": 1})", "tool_choice"},
    {R"({"messages": [{"role":"user","content":"hi"}], "tools": [{"type":"function","function":{"name":"f"}}],
       "tool_choice": {"type":"function","function":{"name":"g"}}})", "tool_choice.function.name"},
    {R"({"messages": [{"role":"user","content":"hi"}], "tools": [{"type":"function","function":{"name":"f"}}],
       "tool_choice": {"type":"function"}})", "tool_choice.function"},
    {R"({"messages": [{"role":"user","content":"hi"}], "tool_choice": {"type":"other","function":{"name":"f"}}})",
     "tool_choice.type"},
};

TEST(OpenAiApi, MalformedChatRequestsNameTheirField) {
  ASSERT_GE(std::size(kBadChat), 30u);
  for (const BadRequest& bad : kBadChat) {
    RequestError error;
    const auto req = chat(bad.body, error);
    EXPECT_FALSE(req.has_value()) << bad.body;
    EXPECT_EQ(error.param, bad.param) << bad.body << " -> " << error.message;
    EXPECT_FALSE(error.message.empty()) << bad.body;
    if (*bad.param) {
      EXPECT_NE(error.message.find(bad.param), std::string::npos) << error.message;
    }
  }
}

const BadRequest kBadResponses[] = {
    {R"({"input": "hi", "previous_response_id": "resp_1"})", "previous_response_id"},
    {R"({})", "input"},
    {R"({"input": 5})", "input"},
    {R"({"input": []})", "input"},
    {R"({"input": [{"type":"message","role":"tool","content":"x"}]})", "input[0].role"},
    {R"({"input": [{"type":"message","role":"user","content":[{"type":"input_image"}]}]})", "input[0].content[0].type"},
    {R"({"input": [{"type":"web_search_call"}]})", "input[0].type"},
    {R"({"input": [{"type":"function_call","arguments":"{}"}]})", "input[0].name"},
    {R"({"input": [{"type":"function_call_output","call_id":"c1","output":"x"}]})", "input[0].call_id"},
    {R"({"input": [{"type":"function_call","call_id":"c1","name":"f"},{"type":"function_call_output","call_id":"c1"}]})",
     "input[1].output"},
    {R"({"input": "hi", "instructions": 3})", "instructions"},
    {R"({"input": "hi", "reasoning": {"effort": "max"}})", "reasoning.effort"},
    {R"({"input": "hi", "max_output_tokens": 0})", "max_output_tokens"},
    {R"({"input": "hi", "tools": [{"type":"function","function":{"name":"f"}}]})", "tools[0].name"},
    {R"({"input": "hi", "tools": [{"type":"file_search"}]})", "tools[0].type"},
    {R"({"input": "hi", "tools": [{"type":"function","name":"f"}], "tool_choice": {"type":"function","name":"g"}})",
     "tool_choice.name"},
};

TEST(OpenAiApi, MalformedResponsesRequestsNameTheirField) {
  for (const BadRequest& bad : kBadResponses) {
    RequestError error;
    const auto req = parse_responses_request_text(bad.body, kOpts, error);
    EXPECT_FALSE(req.has_value()) << bad.body;
    EXPECT_EQ(error.param, bad.param) << bad.body << " -> " << error.message;
  }
}

// The schema renderer and JSON copies recurse: depth from an untrusted body is bounded before either.
TEST(OpenAiApi, DeepNestingIsA400) {
  RequestError error;
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  EXPECT_FALSE(chat(R"({"messages":[{"role":"user","content":"hi"}],"x":)" + deep + "}", error));
  EXPECT_NE(error.message.find("nests deeper"), std::string::npos) << error.message;
  // Brackets inside strings do not count.
  EXPECT_TRUE(chat(R"({"messages":[{"role":"user","content":")" + std::string(1000, '[') + R"(\"["}]})", error))
      << error.message;
  std::string schema = R"({"type":"string"})";
  for (int i = 0; i < 100; ++i) schema = R"({"type":"array","items":)" + schema + "}";
  EXPECT_FALSE(chat(R"({"messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{)"
                    R"("name":"f","parameters":)" + schema + "}}]}",
                    error));
  EXPECT_EQ(error.param, "tools[0].function.parameters");
}

TEST(OpenAiApi, PreviousResponseIdSaysStateless) {
  RequestError error;
  EXPECT_FALSE(parse_responses_request_text(R"({"input":"hi","previous_response_id":"r"})", kOpts, error));
  EXPECT_NE(error.message.find("stateless"), std::string::npos) << error.message;
}

TEST(OpenAiApi, ErrorJsonShape) {
  const ojson e = error_json("temperature: out of range", "invalid_request_error", "temperature");
  EXPECT_EQ(e.dump(), R"({"error":{"message":"temperature: out of range","type":"invalid_request_error",)"
                      R"("param":"temperature","code":null}})");
  EXPECT_TRUE(error_json("bad", "invalid_request_error", "")["error"]["param"].is_null());
}

TEST(OpenAiApi, SamplingAndStreamSettings) {
  RequestError error;
  const auto req = chat(R"({"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0,"top_p":0.5,
    "max_tokens":50,"max_completion_tokens":20,"seed":7,"stop":["x","y"],"stream":true,
    "stream_options":{"include_usage":true},"n":1,"unknown_field":{"a":1}})",
                        error);
  ASSERT_TRUE(req) << error.message;
  EXPECT_EQ(req->model, "m");
  EXPECT_EQ(req->sampling.temperature, 0.0f);
  EXPECT_EQ(req->sampling.top_p, 0.5f);
  EXPECT_EQ(req->sampling.max_tokens, 20);  // max_completion_tokens wins
  EXPECT_EQ(req->sampling.seed, 7u);
  EXPECT_EQ(req->sampling.stop, (std::vector<std::string>{"x", "y"}));
  EXPECT_TRUE(req->stream);
  EXPECT_TRUE(req->include_usage);
  EXPECT_EQ(req->tool_choice, ToolChoice::Auto);
  EXPECT_TRUE(req->forced_prefix.empty());

  const auto defaults = chat(R"({"messages":[{"role":"user","content":"hi"}],"temperature":null,"stop":"END"})", error);
  ASSERT_TRUE(defaults) << error.message;
  EXPECT_EQ(defaults->sampling.temperature, 1.0f);
  EXPECT_FALSE(defaults->sampling.max_tokens);
  EXPECT_FALSE(defaults->sampling.seed);
  EXPECT_EQ(defaults->sampling.stop, (std::vector<std::string>{"END"}));
  EXPECT_FALSE(defaults->stream);
}

TEST(OpenAiApi, ChatConversationShape) {
  ojson body;
  body["messages"] = ojson::parse(R"([
    {"role":"system","content":"S"},{"role":"user","content":"U"},
    {"role":"assistant","reasoning_content":"R","content":"pre","tool_calls":[
      {"id":"c1","type":"function","function":{"name":"get_weather","arguments":"{\"location\":\"Paris\"}"}}]},
    {"role":"tool","tool_call_id":"c1","content":"sun"}])");
  body["tools"] = ojson::array({weather_tool()});
  body["reasoning_effort"] = "low";
  RequestError error;
  const auto req = parse_chat_request(body, kOpts, error);
  ASSERT_TRUE(req) << error.message;
  const auto& m = req->conversation.messages;
  ASSERT_EQ(m.size(), 7u);
  EXPECT_EQ(m[0].role, Role::System);
  EXPECT_EQ(m[0].content[0].system.reasoning_effort, harmony::ReasoningEffort::Low);
  EXPECT_EQ(m[0].content[0].system.conversation_start_date, "2025-06-28");
  EXPECT_EQ(m[1].role, Role::Developer);
  EXPECT_EQ(m[1].content[0].developer.instructions, "S");
  ASSERT_TRUE(m[1].content[0].developer.tools);
  EXPECT_EQ(m[1].content[0].developer.tools->at("functions").tools.at(0).name, "get_weather");
  EXPECT_EQ(m[2].role, Role::User);
  EXPECT_EQ(m[3].channel, "analysis");
  EXPECT_EQ(m[3].text(), "R");
  EXPECT_EQ(m[4].channel, "commentary");  // text beside tool calls is a preamble
  EXPECT_FALSE(m[4].recipient);
  EXPECT_EQ(m[5].recipient, "functions.get_weather");
  EXPECT_EQ(m[5].content_type, "<|constrain|>json");
  EXPECT_EQ(m[6].role, Role::Tool);
  EXPECT_EQ(m[6].name, "functions.get_weather");
  EXPECT_EQ(m[6].recipient, "assistant");
  EXPECT_EQ(m[6].channel, "commentary");

  const auto refusal = chat(R"({"messages":[{"role":"user","content":"U"},{"role":"assistant","content":[
    {"type":"text","text":"No"},{"type":"refusal","refusal":"pe."}]}]})",
                            error);
  ASSERT_TRUE(refusal) << error.message;
  EXPECT_EQ(refusal->conversation.messages.back().text(), "Nope.");
}

TEST(OpenAiApi, ToolParameterKeyOrderIsKept) {
  RequestError error;
  const auto req = chat(R"({"messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{
    "name":"f","parameters":{"type":"object","properties":{"zeta":{"type":"string"},"alpha":{"type":"number"}}}}}]})",
                        error);
  ASSERT_TRUE(req) << error.message;
  const auto& params = *req->conversation.messages[1].content[0].developer.tools->at("functions").tools[0].parameters;
  EXPECT_EQ(params["properties"].begin().key(), "zeta");
}

TEST(OpenAiApi, ToolChoiceForcesHeader) {
  ojson body;
  body["messages"] = ojson::parse(R"([{"role":"user","content":"hi"}])");
  body["tools"] = ojson::array({weather_tool()});
  RequestError error;
  body["tool_choice"] = ojson::parse(R"({"type":"function","function":{"name":"get_weather"}})");
  auto req = parse_chat_request(body, kOpts, error);
  ASSERT_TRUE(req) << error.message;
  EXPECT_EQ(req->tool_choice, ToolChoice::Named);
  EXPECT_EQ(req->tool_choice_name, "get_weather");
  EXPECT_EQ(req->forced_prefix, "<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>");
  body["tool_choice"] = "required";
  req = parse_chat_request(body, kOpts, error);
  ASSERT_TRUE(req) << error.message;
  EXPECT_EQ(req->tool_choice, ToolChoice::Required);
  EXPECT_EQ(req->forced_prefix, "<|channel|>commentary to=functions");
  body["tool_choice"] = "none";
  req = parse_chat_request(body, kOpts, error);
  ASSERT_TRUE(req) << error.message;
  EXPECT_EQ(req->conversation.messages.size(), 2u);  // system, user: no developer message without tools
}

// A responses request and a chat request for the same conversation render the same prompt.
TEST(OpenAiApi, ResponsesRendersLikeChat) {
  REQUIRE_ENCODING();
  RequestError error;
  const auto c = chat(R"({"messages":[{"role":"developer","content":"D"},{"role":"user","content":"U"},
    {"role":"assistant","reasoning_content":"R","content":"pre","tool_calls":[{"id":"c1","type":"function",
     "function":{"name":"get_weather","arguments":"{}"}}]},{"role":"tool","tool_call_id":"c1","content":"out"},
    {"role":"assistant","content":"A"},{"role":"user","content":"again"}],"reasoning_effort":"high",
    "tools":[{"type":"function","function":{"name":"get_weather","description":"W","parameters":{"type":"object"}}}]})",
                      error);
  ASSERT_TRUE(c) << error.message;
  const auto r = parse_responses_request_text(R"({"instructions":"D","input":[
    {"role":"user","content":"U"},
    {"type":"reasoning","summary":[{"type":"summary_text","text":"short"}],"content":[{"type":"reasoning_text","text":"R"}]},
    {"type":"message","role":"assistant","content":[{"type":"output_text","text":"pre"}]},
    {"type":"function_call","call_id":"c1","name":"get_weather","arguments":"{}"},
    {"type":"function_call_output","call_id":"c1","output":"out"},
    {"type":"message","role":"assistant","content":[{"type":"output_text","text":"A"}]},
    {"type":"message","role":"user","content":[{"type":"input_text","text":"again"}]}],
    "reasoning":{"effort":"high"},"max_output_tokens":9,
    "tools":[{"type":"function","name":"get_weather","description":"W","parameters":{"type":"object"}}]})",
                                              kOpts, error);
  ASSERT_TRUE(r) << error.message;
  EXPECT_EQ(r->sampling.max_tokens, 9);
  auto a = render_prompt(enc, *c);
  auto b = render_prompt(enc, *r);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(*a, *b);

  const auto s = parse_responses_request_text(R"({"input":"hello"})", kOpts, error);
  ASSERT_TRUE(s) << error.message;
  ASSERT_EQ(s->conversation.messages.size(), 2u);
  EXPECT_EQ(s->conversation.messages[1].text(), "hello");
}

TEST(OpenAiApi, RenderPromptAppendsForcedPrefix) {
  REQUIRE_ENCODING();
  RequestError error;
  auto req = chat(R"({"messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"f"}}],
    "tool_choice":{"type":"function","function":{"name":"f"}}})",
                  error);
  ASSERT_TRUE(req) << error.message;
  auto with = render_prompt(enc, *req);
  auto without = enc.render_for_completion(req->conversation);
  ASSERT_TRUE(with.ok() && without.ok());
  const auto prefix = enc.tokenizer().encode(req->forced_prefix, AllowedSpecial::every());
  ASSERT_EQ(with->size(), without->size() + prefix.size());
  EXPECT_EQ(with->back(), enc.message_id);
}

// ---------------------------------------------------------------------------------------------
// Completions

std::vector<TokenId> ids(const harmony::HarmonyEncoding& enc, const std::string& text) {
  return enc.tokenizer().encode(text, AllowedSpecial::every());
}

// The events' texts put together must be the result: what streams is what a non-streamed response says.
void expect_events_match(const std::vector<StreamEvent>& events, const CompletionResult& r) {
  std::string reasoning, content;
  std::vector<std::string> args(r.tool_calls.size());
  size_t begun = 0;
  for (const StreamEvent& e : events) {
    switch (e.kind) {
      case StreamEvent::Kind::ReasoningDelta: reasoning += e.text; break;
      case StreamEvent::Kind::ContentDelta: content += e.text; break;
      case StreamEvent::Kind::ToolCallBegin:
        ASSERT_EQ(e.tool_index, static_cast<int>(begun));
        ASSERT_LT(begun, r.tool_calls.size());
        EXPECT_EQ(e.text, r.tool_calls[begun].name);
        ++begun;
        break;
      case StreamEvent::Kind::ToolCallArgumentsDelta:
        ASSERT_GE(e.tool_index, 0);
        ASSERT_LT(static_cast<size_t>(e.tool_index), begun);
        args[static_cast<size_t>(e.tool_index)] += e.text;
        break;
    }
    EXPECT_FALSE(e.kind != StreamEvent::Kind::ToolCallBegin && e.text.empty());
  }
  EXPECT_EQ(begun, r.tool_calls.size());
  EXPECT_EQ(reasoning, r.reasoning);
  EXPECT_EQ(content, r.content);
  for (size_t i = 0; i < args.size(); ++i) EXPECT_EQ(args[i], r.tool_calls[i].arguments);
}

TEST(CompletionMapper, AnalysisThenToolCall) {
  REQUIRE_ENCODING();
  CompletionMapper mapper(enc, "");
  std::vector<StreamEvent> events;
  for (TokenId t : ids(enc, "<|channel|>analysis<|message|>Need it.<|end|><|start|>assistant<|channel|>commentary "
                            "to=functions.get_weather <|constrain|>json<|message|>{\"location\":\"Paris\"}<|call|>")) {
    mapper.push(t, events);
  }
  mapper.finish(events);
  const CompletionResult& r = mapper.result();
  EXPECT_FALSE(mapper.recovered_from_error());
  EXPECT_EQ(r.reasoning, "Need it.");
  EXPECT_EQ(r.content, "");
  ASSERT_EQ(r.tool_calls.size(), 1u);
  EXPECT_EQ(r.tool_calls[0].name, "get_weather");
  EXPECT_EQ(r.tool_calls[0].arguments, "{\"location\":\"Paris\"}");
  EXPECT_EQ(r.tool_calls[0].id.rfind("call_", 0), 0u);
  expect_events_match(events, r);

  const ojson msg = chat_message_json(r);
  EXPECT_TRUE(msg["content"].is_null());
  EXPECT_EQ(msg["reasoning_content"], "Need it.");
  EXPECT_EQ(msg["reasoning"], "Need it.");
  EXPECT_EQ(msg["tool_calls"][0]["function"]["name"], "get_weather");
  EXPECT_EQ(msg["tool_calls"][0]["type"], "function");
  EXPECT_EQ(chat_finish_reason(r, false), "tool_calls");
  EXPECT_EQ(chat_finish_reason(r, true), "length");

  ASSERT_EQ(events.front().kind, StreamEvent::Kind::ReasoningDelta);
  const ojson out = responses_output_json(r);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0]["type"], "reasoning");
  EXPECT_EQ(out[0]["content"][0]["text"], "Need it.");
  EXPECT_EQ(out[1]["type"], "function_call");
  EXPECT_EQ(out[1]["call_id"], r.tool_calls[0].id);
  EXPECT_EQ(out[1]["arguments"], "{\"location\":\"Paris\"}");
}

TEST(CompletionMapper, DeltaShapes) {
  CompletionResult r;
  r.tool_calls.push_back({"call_x", "f", "{}"});
  EXPECT_EQ(chat_delta_json({StreamEvent::Kind::ContentDelta, "hi", -1}, r).dump(), R"({"content":"hi"})");
  EXPECT_EQ(chat_delta_json({StreamEvent::Kind::ReasoningDelta, "r", -1}, r).dump(),
            R"({"reasoning_content":"r","reasoning":"r"})");
  EXPECT_EQ(chat_delta_json({StreamEvent::Kind::ToolCallBegin, "f", 0}, r).dump(),
            R"({"tool_calls":[{"index":0,"id":"call_x","type":"function","function":{"name":"f","arguments":""}}]})");
  EXPECT_EQ(chat_delta_json({StreamEvent::Kind::ToolCallArgumentsDelta, "{", 0}, r).dump(),
            R"({"tool_calls":[{"index":0,"function":{"arguments":"{"}}]})");
  CompletionResult text;
  text.content = "A";
  const ojson msg = chat_message_json(text);
  EXPECT_EQ(msg.dump(), R"({"role":"assistant","content":"A"})");
  const ojson out = responses_output_json(text);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0]["type"], "message");
  EXPECT_EQ(out[0]["content"][0]["type"], "output_text");
  EXPECT_EQ(out[0]["content"][0]["text"], "A");
}

TEST(CompletionMapper, NamedPrefixBeginsTheCallOnFirstPush) {
  REQUIRE_ENCODING();
  CompletionMapper mapper(enc, "<|channel|>commentary to=functions.f <|constrain|>json<|message|>");
  std::vector<StreamEvent> events;
  mapper.push(ids(enc, "{")[0], events);
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].kind, StreamEvent::Kind::ToolCallBegin);
  EXPECT_EQ(events[0].text, "f");
  EXPECT_EQ(events[1].kind, StreamEvent::Kind::ToolCallArgumentsDelta);
  mapper.push(enc.call_id, events);
  mapper.finish(events);
  EXPECT_EQ(mapper.result().tool_calls.at(0).arguments, "{");
  expect_events_match(events, mapper.result());
}

// Random streams biased towards Harmony's specials and ids the tokenizer cannot decode: the mapper
// must neither throw nor lose track (events add up to the result, tool indexes stay valid).
TEST(CompletionMapper, GarbageStreamsNeverFail) {
  REQUIRE_ENCODING();
  const std::vector<TokenId> specials = {enc.start_id,   enc.message_id, enc.end_id, enc.return_id,
                                         enc.call_id,    enc.channel_id, enc.constrain_id,
                                         199999,         200018,         201087,     201088,
                                         4000000000u};
  const std::vector<TokenId> words = ids(enc, "assistant analysis final commentary to=functions.f json user {\"a\":1} é 🎉");
  std::mt19937 rng(1234);
  int recovered = 0;
  for (int stream = 0; stream < 400; ++stream) {
    const std::string prefix = stream % 3 == 0 ? "" : stream % 3 == 1 ? "<|channel|>commentary to=functions"
                                                                        : "<|channel|>final<|message|>";
    CompletionMapper mapper(enc, prefix);
    std::vector<StreamEvent> events;
    const int n = static_cast<int>(rng() % 300);
    for (int i = 0; i < n; ++i) {
      const uint32_t pick = rng() % 10;
      TokenId t;
      if (pick < 3) {
        t = specials[rng() % specials.size()];
      } else if (pick < 6) {
        t = words[rng() % words.size()];
      } else {
        t = static_cast<TokenId>(rng() % 201088);
      }
      EXPECT_NO_THROW(mapper.push(t, events));
    }
    EXPECT_NO_THROW(mapper.finish(events));
    expect_events_match(events, mapper.result());
    EXPECT_NO_THROW((void)chat_message_json(mapper.result()).dump());
    EXPECT_NO_THROW((void)responses_output_json(mapper.result()).dump());
    recovered += mapper.recovered_from_error();
  }
  EXPECT_GT(recovered, 300);
}

// A header that does not parse: its channel and recipient are salvaged, keeping only name characters
// (the text may hold anything, even special-token strings written as ordinary tokens).
TEST(CompletionMapper, SalvagedHeaderKeepsNameCharacters) {
  REQUIRE_ENCODING();
  CompletionMapper mapper(enc, "");
  std::vector<StreamEvent> events;
  std::vector<TokenId> stream{enc.channel_id};
  for (TokenId t : enc.tokenizer().encode_ordinary("commentary to=functions.ge\"t<|start|> extra words")) {
    stream.push_back(t);
  }
  stream.push_back(enc.message_id);
  for (TokenId t : enc.tokenizer().encode_ordinary("{}")) stream.push_back(t);
  stream.push_back(enc.call_id);
  for (TokenId t : stream) mapper.push(t, events);
  mapper.finish(events);
  EXPECT_TRUE(mapper.recovered_from_error());
  ASSERT_EQ(mapper.result().tool_calls.size(), 1u);
  EXPECT_EQ(mapper.result().tool_calls[0].name, "get");
  EXPECT_EQ(mapper.result().tool_calls[0].arguments, "{}");
  expect_events_match(events, mapper.result());
}

TEST(CompletionMapper, PushAfterFinishIsIgnored) {
  REQUIRE_ENCODING();
  CompletionMapper mapper(enc, "");
  std::vector<StreamEvent> events;
  for (TokenId t : ids(enc, "<|channel|>final<|message|>Hi")) mapper.push(t, events);
  mapper.finish(events);
  mapper.push(ids(enc, "x")[0], events);
  mapper.finish(events);
  EXPECT_EQ(mapper.result().content, "Hi");
  expect_events_match(events, mapper.result());
}

}  // namespace
}  // namespace gptoss::serve
