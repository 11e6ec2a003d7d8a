"""OpenAI API <-> Harmony mapping of `gptoss serve`, checked without HTTP through the CLI:

- `gptoss render --chat-request REQ.json` must be token-identical to openai-harmony's rendering of the
  equivalent conversation (SystemContent defaults with the request's effort and a pinned date, the
  system/developer texts as developer instructions, function tools in the `functions` namespace,
  assistant reasoning/content/tool calls as analysis/final/commentary messages, tool results as
  messages from functions.NAME), plus the forced header of tool_choice required / named;
- `gptoss parse --chat-response` must map completion tokens (rendered with openai-harmony, or
  deliberately malformed) to the chat-completions message the server returns.
"""
import json
import os
import shutil
import subprocess

import pytest

DATE = "2025-06-28"


@pytest.fixture(scope="module")
def tokenizer_json(shared_dir):
    return shared_dir / "data" / "gpt-oss-tokenizer" / "tokenizer.json"


@pytest.fixture(scope="module")
def tiktoken_file(shared_dir):
    # The same vocabulary (+ o200k_harmony specials) loads 10x faster: used where the request is not
    # what is under test.
    return shared_dir / "data" / "o200k_base.tiktoken"


@pytest.fixture(scope="module")
def harmony(shared_dir, tmp_path_factory):
    oh = pytest.importorskip("openai_harmony", reason="PyPI package openai-harmony not installed")
    enc_dir = tmp_path_factory.mktemp("tiktoken_encodings")
    shutil.copy(shared_dir / "data" / "o200k_base.tiktoken", enc_dir / "o200k_base.tiktoken")
    os.environ["TIKTOKEN_ENCODINGS_BASE"] = str(enc_dir)
    return oh, oh.load_harmony_encoding(oh.HarmonyEncodingName.HARMONY_GPT_OSS)


def run(gptoss_bin, *args, stdin=None):
    r = subprocess.run([str(gptoss_bin), *map(str, args)], capture_output=True, input=stdin)
    return r.returncode, r.stdout.decode(), r.stderr.decode()


# ---------------------------------------------------------------------------------------------
# Requests and the openai-harmony conversation each must render as

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Gets the current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "The city, e.g. Paris"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "default": "celsius"},
            },
            "required": ["location"],
        },
    },
}
SEARCH = {
    "type": "function",
    "function": {
        "name": "search_flights",
        "description": "Search flights.\nReturns at most `limit` results.",
        "parameters": {
            "type": "object",
            "properties": {
                "route": {
                    "type": "object",
                    "description": "Where from and to",
                    "properties": {
                        "from": {"type": "string"},
                        "to": {"type": "string"},
                        "stops": {"type": "array", "items": {"type": "string"}},
                    },
                    "required": ["from", "to"],
                },
                "passengers": {"type": "integer", "description": "How many"},
                "cabin": {"type": "string", "enum": ["economy", "business", "first"]},
                "flexible": {"type": "boolean", "default": False},
                "dates": {"type": "array", "items": {"type": "object", "properties": {"day": {"type": "string"}}}},
                "budget": {"type": ["number", "null"]},
                "notes": {"oneOf": [{"type": "string"}, {"type": "number", "description": "a code"}]},
            },
            "required": ["route", "passengers"],
        },
    },
}
NO_PARAMS = {"type": "function", "function": {"name": "get_time", "description": "The time now."}}
NESTED_ARRAY = {
    "type": "function",
    "function": {
        "name": "plot",
        "parameters": {
            "type": "object",
            "properties": {
                "series": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
                "title": {"type": "string", "nullable": True},
            },
        },
    },
}


def tool_desc(oh, tool):
    f = tool["function"]
    return oh.ToolDescription.new(f["name"], f.get("description", ""), parameters=f.get("parameters"))


def system(oh, effort="medium"):
    e = {"low": oh.ReasoningEffort.LOW, "medium": oh.ReasoningEffort.MEDIUM, "high": oh.ReasoningEffort.HIGH}[effort]
    sc = oh.SystemContent.new().with_reasoning_effort(e).with_conversation_start_date(DATE)
    return oh.Message.from_role_and_content(oh.Role.SYSTEM, sc)


def developer(oh, instructions=None, tools=()):
    dc = oh.DeveloperContent.new()
    if instructions is not None:
        dc = dc.with_instructions(instructions)
    if tools:
        dc = dc.with_function_tools([tool_desc(oh, t) for t in tools])
    return oh.Message.from_role_and_content(oh.Role.DEVELOPER, dc)


def user(oh, text):
    return oh.Message.from_role_and_content(oh.Role.USER, text)


def assistant(oh, text, channel="final"):
    return oh.Message.from_role_and_content(oh.Role.ASSISTANT, text).with_channel(channel)


def call(oh, name, args):
    return (oh.Message.from_role_and_content(oh.Role.ASSISTANT, args).with_channel("commentary")
            .with_recipient("functions." + name).with_content_type("<|constrain|>json"))


def result(oh, name, text):
    return (oh.Message.from_author_and_content(oh.Author.new(oh.Role.TOOL, "functions." + name), text)
            .with_recipient("assistant").with_channel("commentary"))


def tc(id_, name, args):
    return {"id": id_, "type": "function", "function": {"name": name, "arguments": args}}


U = {"role": "user", "content": "What is the weather in Paris?"}
ARGS = '{"location":"Paris"}'

# (id, request body, openai-harmony messages after the system message, forced header text)
CASES = [
    ("plain", {"messages": [U]}, lambda oh: [user(oh, U["content"])], ""),
    ("effort_low", {"messages": [U], "reasoning_effort": "low"}, lambda oh: [user(oh, U["content"])], "", "low"),
    ("effort_high", {"messages": [U], "reasoning_effort": "high"}, lambda oh: [user(oh, U["content"])], "", "high"),
    ("effort_medium", {"messages": [U], "reasoning_effort": "medium"}, lambda oh: [user(oh, U["content"])], ""),
    ("system", {"messages": [{"role": "system", "content": "Answer in French."}, U]},
     lambda oh: [developer(oh, "Answer in French."), user(oh, U["content"])], ""),
    ("developer", {"messages": [{"role": "developer", "content": "Be terse."}, U]},
     lambda oh: [developer(oh, "Be terse."), user(oh, U["content"])], ""),
    ("system_and_developer",
     {"messages": [{"role": "system", "content": "Rule one."}, {"role": "developer", "content": "Rule two."}, U]},
     lambda oh: [developer(oh, "Rule one.\n\nRule two."), user(oh, U["content"])], ""),
    ("system_late",
     {"messages": [U, {"role": "assistant", "content": "Sunny."}, {"role": "system", "content": "Now in German."},
                   {"role": "user", "content": "And Berlin?"}]},
     lambda oh: [developer(oh, "Now in German."), user(oh, U["content"]), assistant(oh, "Sunny."),
                 user(oh, "And Berlin?")], ""),
    ("content_parts",
     {"messages": [{"role": "system", "content": [{"type": "text", "text": "Part A. "}, {"type": "text", "text": "Part B."}]},
                   {"role": "user", "content": [{"type": "text", "text": "Hello "}, {"type": "text", "text": "there"}]}]},
     lambda oh: [developer(oh, "Part A. Part B."), user(oh, "Hello there")], ""),
    ("tools", {"messages": [U], "tools": [WEATHER]},
     lambda oh: [developer(oh, None, [WEATHER]), user(oh, U["content"])], ""),
    ("tools_nested_schema", {"messages": [{"role": "system", "content": "You book flights."}, U], "tools": [SEARCH, WEATHER]},
     lambda oh: [developer(oh, "You book flights.", [SEARCH, WEATHER]), user(oh, U["content"])], ""),
    ("tools_no_params_and_arrays", {"messages": [U], "tools": [NO_PARAMS, NESTED_ARRAY]},
     lambda oh: [developer(oh, None, [NO_PARAMS, NESTED_ARRAY]), user(oh, U["content"])], ""),
    ("tool_choice_auto", {"messages": [U], "tools": [WEATHER], "tool_choice": "auto"},
     lambda oh: [developer(oh, None, [WEATHER]), user(oh, U["content"])], ""),
    ("tool_choice_none", {"messages": [{"role": "system", "content": "Hi."}, U], "tools": [WEATHER], "tool_choice": "none"},
     lambda oh: [developer(oh, "Hi."), user(oh, U["content"])], ""),
    ("tool_choice_none_no_instructions", {"messages": [U], "tools": [WEATHER], "tool_choice": "none"},
     lambda oh: [user(oh, U["content"])], ""),
    ("tool_choice_named",
     {"messages": [U], "tools": [WEATHER, SEARCH], "tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
     lambda oh: [developer(oh, None, [WEATHER, SEARCH]), user(oh, U["content"])],
     "<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>"),
    ("tool_choice_required", {"messages": [U], "tools": [WEATHER], "tool_choice": "required"},
     lambda oh: [developer(oh, None, [WEATHER]), user(oh, U["content"])], "<|channel|>commentary to=functions"),
    ("multi_turn_final",
     {"messages": [U, {"role": "assistant", "content": "Sunny, 24 C."}, {"role": "user", "content": "Tomorrow?"}]},
     lambda oh: [user(oh, U["content"]), assistant(oh, "Sunny, 24 C."), user(oh, "Tomorrow?")], ""),
    ("reasoning_sent_back_dropped_after_final",
     {"messages": [U, {"role": "assistant", "reasoning_content": "Just answer.", "content": "Sunny."},
                   {"role": "user", "content": "Thanks"}]},
     lambda oh: [user(oh, U["content"]), assistant(oh, "Just answer.", "analysis"), assistant(oh, "Sunny."),
                 user(oh, "Thanks")], ""),
    ("tool_loop_keeps_reasoning",
     {"messages": [U, {"role": "assistant", "reasoning_content": "Need the tool.", "content": None,
                       "tool_calls": [tc("call_1", "get_weather", ARGS)]},
                   {"role": "tool", "tool_call_id": "call_1", "content": '{"temp":24}'}],
      "tools": [WEATHER]},
     lambda oh: [developer(oh, None, [WEATHER]), user(oh, U["content"]), assistant(oh, "Need the tool.", "analysis"),
                 call(oh, "get_weather", ARGS), result(oh, "get_weather", '{"temp":24}')], ""),
    ("tool_loop_reasoning_field_name",
     {"messages": [U, {"role": "assistant", "reasoning": "Call it.", "tool_calls": [tc("c9", "get_weather", ARGS)]},
                   {"role": "tool", "tool_call_id": "c9", "content": "sunny"}],
      "tools": [WEATHER]},
     lambda oh: [developer(oh, None, [WEATHER]), user(oh, U["content"]), assistant(oh, "Call it.", "analysis"),
                 call(oh, "get_weather", ARGS), result(oh, "get_weather", "sunny")], ""),
    ("parallel_tool_calls",
     {"messages": [{"role": "user", "content": "Paris and Rome?"},
                   {"role": "assistant", "content": "", "tool_calls": [tc("a", "get_weather", ARGS),
                                                                     tc("b", "get_weather", '{"location":"Rome"}')]},
                   {"role": "tool", "tool_call_id": "b", "content": "rain"},
                   {"role": "tool", "tool_call_id": "a", "content": "sun"}],
      "tools": [WEATHER]},
     lambda oh: [developer(oh, None, [WEATHER]), user(oh, "Paris and Rome?"), call(oh, "get_weather", ARGS),
                 call(oh, "get_weather", '{"location":"Rome"}'), result(oh, "get_weather", "rain"),
                 result(oh, "get_weather", "sun")], ""),
    ("preamble_with_tool_call",
     {"messages": [U, {"role": "assistant", "content": "Let me check.", "tool_calls": [tc("x", "get_weather", ARGS)]},
                   {"role": "tool", "tool_call_id": "x", "content": "sun"}],
      "tools": [WEATHER]},
     lambda oh: [developer(oh, None, [WEATHER]), user(oh, U["content"]), assistant(oh, "Let me check.", "commentary"),
                 call(oh, "get_weather", ARGS), result(oh, "get_weather", "sun")], ""),
    ("full_tool_loop_then_final",
     {"messages": [{"role": "system", "content": "Weather bot."}, U,
                   {"role": "assistant", "reasoning_content": "Use tool.", "tool_calls": [tc("k", "get_weather", ARGS)]},
                   {"role": "tool", "tool_call_id": "k", "content": "sun"},
                   {"role": "assistant", "reasoning_content": "Got it.", "content": "It is sunny."},
                   {"role": "user", "content": "And tomorrow?"}],
      "tools": [WEATHER], "reasoning_effort": "high"},
     lambda oh: [developer(oh, "Weather bot.", [WEATHER]), user(oh, U["content"]), assistant(oh, "Use tool.", "analysis"),
                 call(oh, "get_weather", ARGS), result(oh, "get_weather", "sun"), assistant(oh, "Got it.", "analysis"),
                 assistant(oh, "It is sunny."), user(oh, "And tomorrow?")], "", "high"),
    ("tool_message_by_name",
     {"messages": [U, {"role": "tool", "name": "get_weather", "content": "sun"}], "tools": [WEATHER]},
     lambda oh: [developer(oh, None, [WEATHER]), user(oh, U["content"]), result(oh, "get_weather", "sun")], ""),
    ("tool_result_parts",
     {"messages": [U, {"role": "assistant", "tool_calls": [tc("p", "get_weather", ARGS)]},
                   {"role": "tool", "tool_call_id": "p", "content": [{"type": "text", "text": "{\"t\":"},
                                                                       {"type": "text", "text": "1}"}]}],
      "tools": [WEATHER], "reasoning_effort": "low"},
     lambda oh: [developer(oh, None, [WEATHER]), user(oh, U["content"]), call(oh, "get_weather", ARGS),
                 result(oh, "get_weather", '{"t":1}')], "", "low"),
    ("unicode_and_extra_fields",
     {"messages": [{"role": "user", "content": "Ça va? 你好 🎉", "name": "bob"}], "model": "gpt-oss-20b",
      "temperature": 0.7, "top_p": 0.9, "max_tokens": 100, "seed": 42, "stop": ["\n\n"], "logit_bias": {},
      "user": "u1", "frequency_penalty": 0, "parallel_tool_calls": True, "metadata": {"a": "b"}},
     lambda oh: [user(oh, "Ça va? 你好 🎉")], ""),
    ("assistant_parts_and_arguments_object",
     {"messages": [U, {"role": "assistant", "content": [{"type": "text", "text": "Sun"}, {"type": "text", "text": "ny"}]},
                   {"role": "user", "content": "Call it"},
                   {"role": "assistant", "tool_calls": [{"id": "o", "type": "function",
                                                         "function": {"name": "get_weather", "arguments": {"location": "Paris"}}}]}],
      "tools": [WEATHER]},
     lambda oh: [developer(oh, None, [WEATHER]), user(oh, U["content"]), assistant(oh, "Sunny"), user(oh, "Call it"),
                 call(oh, "get_weather", ARGS)], ""),
]


def test_enough_cases():
    assert len(CASES) >= 25


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_render_chat_request_matches_openai_harmony(case, harmony, gptoss_bin, tokenizer_json, tmp_path):
    oh, enc = harmony
    name, body, build, forced = case[:4]
    effort = case[4] if len(case) > 4 else "medium"
    req = tmp_path / "req.json"
    req.write_text(json.dumps(body), encoding="utf-8")
    rc, out, err = run(gptoss_bin, "render", "--tokenizer", tokenizer_json, "--chat-request", req,
                       "--conversation-date", DATE)
    assert rc == 0, err
    got = json.loads(out)
    convo = oh.Conversation.from_messages([system(oh, effort)] + build(oh))
    want = enc.render_conversation_for_completion(convo, oh.Role.ASSISTANT)
    if forced:
        want += enc.encode(forced, allowed_special="all")
    assert got == want, (f"first difference at {next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))}:\n"
                         f"got:  {enc.decode(got)}\nwant: {enc.decode(want)}")


def test_render_chat_request_date_defaults_to_today(gptoss_bin, tokenizer_json, tmp_path):
    import datetime
    def today():
        return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")

    req = tmp_path / "req.json"
    req.write_text(json.dumps({"messages": [U]}))
    # The date is read before and after the run: one across midnight UTC may see either.
    days = {today()}
    rc, out, err = run(gptoss_bin, "render", "--tokenizer", tokenizer_json, "--chat-request", req)
    days.add(today())
    assert rc == 0, err
    rc, text, err = run(gptoss_bin, "detokenize", "--tokenizer", tokenizer_json, "--tokens", out.strip())
    assert rc == 0, err
    assert any(f"Current date: {d}\n" in text for d in days), text


@pytest.mark.parametrize("body,param", [
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
    ({"messages": [U], "n": 2}, "n"),
    ({"messages": [U], "temperature": 3}, "temperature"),
    ({"messages": [U], "tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
     "tool_choice.function.name"),
])
def test_render_chat_request_rejects_invalid(body, param, gptoss_bin, tiktoken_file, tmp_path):
    req = tmp_path / "req.json"
    req.write_text(json.dumps(body))
    rc, out, err = run(gptoss_bin, "render", "--tokenizer", tiktoken_file, "--chat-request", req,
                       "--conversation-date", DATE)
    assert rc != 0 and out == ""
    assert param in err


def test_render_chat_request_rejects_bad_date(gptoss_bin, tiktoken_file, tmp_path):
    req = tmp_path / "req.json"
    req.write_text(json.dumps({"messages": [U]}))
    for bad in ["2025-13-01", "2025-02-30", "25-06-28", "2025-06-28x"]:
        rc, _, err = run(gptoss_bin, "render", "--tokenizer", tiktoken_file, "--chat-request", req,
                         "--conversation-date", bad)
        assert rc != 0 and "--conversation-date" in err, bad


# ---------------------------------------------------------------------------------------------
# Completion tokens -> choices[0].message


def completion(oh, enc, *messages, stop="<|return|>"):
    """Tokens the model samples after "<|start|>assistant": each message rendered by openai-harmony,
    the first one without its "<|start|>assistant", the last one's end token replaced by `stop`."""
    ids = []
    for i, m in enumerate(messages):
        t = enc.render(m)
        ids += t[2:] if i == 0 else t
    if stop is not None and ids[-1] in enc.encode("<|end|>", allowed_special="all"):
        ids[-1] = enc.encode(stop, allowed_special="all")[0]
    return ids


def raw(enc, text):
    return enc.encode(text, allowed_special="all")


def parse_response(gptoss_bin, tokenizer, ids, *extra):
    rc, out, err = run(gptoss_bin, "parse", "--tokenizer", tokenizer, "--chat-response",
                       "--tokens", json.dumps(ids), *extra)
    assert rc == 0, err
    return json.loads(out)


def message(content="", reasoning=None, calls=()):
    m = {"role": "assistant", "content": None if content is None else content}
    if reasoning:
        m["reasoning_content"] = reasoning
        m["reasoning"] = reasoning
    if calls:
        m["tool_calls"] = [{"type": "function", "function": {"name": n, "arguments": a}} for n, a in calls]
    return m


def strip_ids(m):
    for c in m.get("tool_calls", []):
        assert c.pop("id").startswith("call_")
    return m


# (id, tokens(oh, enc), extra CLI args, expected message, finish_reason, recovered)
RESPONSES = [
    ("final", lambda oh, enc: completion(oh, enc, assistant(oh, "Paris.")), [], message("Paris."), "stop", False),
    ("analysis_final",
     lambda oh, enc: completion(oh, enc, assistant(oh, "Simple question.", "analysis"), assistant(oh, "Paris.")),
     [], message("Paris.", "Simple question."), "stop", False),
    ("tool_call",
     lambda oh, enc: completion(oh, enc, assistant(oh, "Need weather.", "analysis"), call(oh, "get_weather", ARGS),
                                stop=None),
     [], message(None, "Need weather.", [("get_weather", ARGS)]), "tool_calls", False),
    ("tool_call_model_header_order",
     lambda oh, enc: raw(enc, "<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>"
                              '{"location":"Rome"}<|call|>'),
     [], message(None, None, [("get_weather", '{"location":"Rome"}')]), "tool_calls", False),
    ("preamble_then_call",
     lambda oh, enc: completion(oh, enc, assistant(oh, "Thinking.", "analysis"), assistant(oh, "Checking now.", "commentary"),
                                call(oh, "get_weather", ARGS), stop=None),
     [], message("Checking now.", "Thinking.", [("get_weather", ARGS)]), "tool_calls", False),
    ("preamble_then_final_joined_by_newline",
     lambda oh, enc: completion(oh, enc, assistant(oh, "a", "analysis"), assistant(oh, "Let me see.", "commentary"),
                                assistant(oh, "b", "analysis"), assistant(oh, "Done.")),
     [], message("Let me see.\nDone.", "a\nb"), "stop", False),
    ("unicode_split_across_tokens",
     lambda oh, enc: completion(oh, enc, assistant(oh, "Ça va? 你好 🎉 ok")), [], message("Ça va? 你好 🎉 ok"), "stop", False),
    ("named_forced_prefix",
     lambda oh, enc: raw(enc, '{"location":"Oslo"}<|call|>'),
     ["--forced-prefix", "<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>"],
     message(None, None, [("get_weather", '{"location":"Oslo"}')]), "tool_calls", False),
    ("required_forced_prefix",
     lambda oh, enc: raw(enc, '.search_flights <|constrain|>json<|message|>{"passengers":2}<|call|>'),
     ["--forced-prefix", "<|channel|>commentary to=functions"],
     message(None, None, [("search_flights", '{"passengers":2}')]), "tool_calls", False),
    ("truncated_content",
     lambda oh, enc: completion(oh, enc, assistant(oh, "Thinking hard", "analysis"), stop=None)[:-1],
     ["--hit-length"], message("", "Thinking hard"), "length", False),
    ("truncated_in_header",
     lambda oh, enc: completion(oh, enc, assistant(oh, "Done.", "analysis"))[:-1] + raw(enc, "<|end|><|start|>assistant<|channel|>fin"),
     ["--hit-length"], message("", "Done."), "length", False),
    ("truncated_after_start",
     lambda oh, enc: completion(oh, enc, assistant(oh, "Done.", "analysis"))[:-1] + raw(enc, "<|end|><|start|>assistant"),
     ["--hit-length"], message("", "Done."), "length", False),
    ("malformed_header_extra_words",
     lambda oh, enc: raw(enc, "<|channel|>final extra words here<|message|>Hello<|return|>"),
     [], message("Hello"), "stop", True),
    ("malformed_header_empty_channel",
     lambda oh, enc: raw(enc, "<|channel|><|message|>Hi<|return|>"), [], message("Hi"), "stop", True),
    ("malformed_header_unknown_role",
     lambda oh, enc: raw(enc, "<|channel|>analysis<|message|>a<|end|><|start|>wizard<|channel|>final<|message|>b<|return|>"),
     [], message("b", "a"), "stop", True),
    ("missing_start_before_channel",
     lambda oh, enc: raw(enc, "<|channel|>analysis<|message|>think<|end|><|channel|>final<|message|>Answer<|return|>"),
     [], message("Answer", "think"), "stop", True),
    ("stray_text_after_end",
     lambda oh, enc: raw(enc, "<|channel|>final<|message|>Hi<|end|> there<|return|>"), [], message("Hi there"), "stop", True),
    ("stray_specials_in_content",
     lambda oh, enc: raw(enc, "<|channel|>final<|message|>A<|constrain|>B<|message|>C<|return|>"),
     [], message("ABC"), "stop", True),
    ("start_inside_content",
     lambda oh, enc: raw(enc, "<|channel|>analysis<|message|>x<|start|>assistant<|channel|>final<|message|>y<|return|>"),
     [], message("y", "x"), "stop", True),
    ("no_header_at_all",
     lambda oh, enc: raw(enc, "Just some text"), [], message("Just some text"), "stop", True),
    ("long_text_without_header",
     lambda oh, enc: raw(enc, "word " * 100), [], message("word " * 100), "stop", True),
    ("hallucinated_user_turn_dropped",
     lambda oh, enc: raw(enc, "<|channel|>final<|message|>A<|end|><|start|>user<|message|>B<|end|>"),
     [], message("A"), "stop", True),
    ("empty", lambda oh, enc: [], ["--hit-length"], message(""), "length", False),
]


@pytest.mark.parametrize("case", RESPONSES, ids=[c[0] for c in RESPONSES])
def test_parse_chat_response(case, harmony, gptoss_bin, tiktoken_file):
    oh, enc = harmony
    _, make, extra, want, finish, recovered = case
    got = parse_response(gptoss_bin, tiktoken_file, make(oh, enc), *extra)
    assert strip_ids(got["message"]) == want
    assert got["finish_reason"] == finish
    assert got["recovered_from_error"] == recovered


def test_tool_call_ids_unique(harmony, gptoss_bin, tokenizer_json):
    oh, enc = harmony
    ids = completion(oh, enc, call(oh, "get_weather", ARGS), call(oh, "get_weather", ARGS), stop=None)
    got = parse_response(gptoss_bin, tokenizer_json, ids)
    call_ids = [c["id"] for c in got["message"]["tool_calls"]]
    assert len(call_ids) == 2 and len(set(call_ids)) == 2
    assert all(len(i) > len("call_") + 8 and i[5:].isalnum() for i in call_ids)
