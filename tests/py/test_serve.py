"""`gptoss serve` against the real `openai` Python client, on a generated model with the real o200k_harmony
tokenizer (random weights write nonsense: these tests check the plumbing). Covers chat completions,
responses and completions, streamed and not; usage counts against openai-harmony's rendering; seeds;
16 concurrent clients; a client that disconnects; auth; a battery of malformed requests; SIGTERM."""
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

openai = pytest.importorskip("openai", reason="PyPI package openai not installed")

DATE = "2025-06-01"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tool_bin, shared_dir):
    out = tmp_path_factory.mktemp("serve") / "tiny-201088"
    subprocess.run([str(tool_bin("make-checkpoint")), str(out), "--vocab", "201088", "--layers", "2", "--hidden", "64",
                    "--inter", "64", "--seed", "4"], check=True, capture_output=True)
    shutil.copy(shared_dir / "data" / "gpt-oss-tokenizer" / "tokenizer.json", out / "tokenizer.json")
    return out


class Server:
    def __init__(self, gptoss_bin, model, *args):
        self.proc = subprocess.Popen([str(gptoss_bin), "serve", "--model", str(model), "--device", "cpu", "--port", "0",
                                      "--conversation-date", DATE, *map(str, args)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.before = []  # stderr lines before the listening line
        for _ in range(20):
            line = self.proc.stderr.readline()
            m = re.search(r"listening on http://([\d.]+):(\d+)", line)
            if m or not line:
                break
            self.before.append(line)
        assert m, "".join(self.before) + line + self.proc.stderr.read()
        self.host, self.port = m.group(1), int(m.group(2))
        self.base = f"http://{self.host}:{self.port}"

    def client(self, key="none", **kw):
        return openai.OpenAI(base_url=self.base + "/v1", api_key=key, max_retries=0, timeout=60, **kw)

    def request(self, method, path, body=None, headers=None, raw=None):
        c = http.client.HTTPConnection(self.host, self.port, timeout=30)
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        if data is not None:
            h["Content-Length"] = str(len(data))
        c.request(method, path, body=data, headers=h)
        r = c.getresponse()
        text = r.read().decode("utf-8", "replace")
        c.close()
        return r.status, text

    def metric(self, name, headers=None):
        _, text = self.request("GET", "/metrics", headers=headers)
        m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
        return float(m.group(1)) if m else None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            return self.proc.wait(timeout=20)
        return self.proc.returncode


@pytest.fixture(scope="module")
def server(gptoss_bin, model_dir):
    s = Server(gptoss_bin, model_dir, "--max-context", "2048", "--parallel", "4", "--max-body-bytes", "65536")
    yield s
    assert s.stop() == 0


@pytest.fixture(scope="module")
def harmony_enc(shared_dir, tmp_path_factory):
    enc_dir = tmp_path_factory.mktemp("tiktoken_encodings")
    shutil.copy(shared_dir / "data" / "o200k_base.tiktoken", enc_dir / "o200k_base.tiktoken")
    os.environ["TIKTOKEN_ENCODINGS_BASE"] = str(enc_dir)
    oh = pytest.importorskip("openai_harmony")
    return oh, oh.load_harmony_encoding(oh.HarmonyEncodingName.HARMONY_GPT_OSS)


MSGS = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What is the capital of France?"}]


def test_health_and_models(server):
    assert server.request("GET", "/health") == (200, '{"status":"ok"}')
    models = server.client().models.list()
    assert [m.id for m in models.data] == ["tiny-201088"]


def test_chat_usage_is_the_rendered_prompt(server, harmony_enc):
    oh, enc = harmony_enc
    r = server.client().chat.completions.create(model="m", messages=MSGS, max_tokens=12, seed=1, temperature=0.7)
    sysc = oh.SystemContent.new().with_reasoning_effort(oh.ReasoningEffort.MEDIUM).with_conversation_start_date(DATE)
    conv = oh.Conversation.from_messages([
        oh.Message.from_role_and_content(oh.Role.SYSTEM, sysc),
        oh.Message.from_role_and_content(oh.Role.DEVELOPER, oh.DeveloperContent.new().with_instructions(
            "Answer briefly.")),
        oh.Message.from_role_and_content(oh.Role.USER, "What is the capital of France?")])
    want = enc.render_conversation_for_completion(conv, oh.Role.ASSISTANT)
    assert r.usage.prompt_tokens == len(want)
    assert 1 <= r.usage.completion_tokens <= 12
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    c = r.choices[0]
    assert c.finish_reason in ("stop", "length", "tool_calls")
    assert (c.finish_reason == "length") == (r.usage.completion_tokens == 12)
    assert c.message.role == "assistant" and r.object == "chat.completion"
    # The same conversation again lands in the slot that holds it: all but the last prompt token are cached.
    again = server.client().chat.completions.create(model="m", messages=MSGS, max_tokens=2)
    assert again.usage.prompt_tokens_details.cached_tokens == len(want) - 1


def test_chat_stream_matches_non_stream(server):
    cl = server.client()
    kw = dict(model="m", messages=MSGS, max_tokens=24, seed=7, temperature=1.0)
    full = cl.chat.completions.create(**kw)
    chunks = list(cl.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kw))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(ch.object == "chat.completion.chunk" for ch in chunks)
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == full.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == full.usage.prompt_tokens
    finals = [ch.choices[0].finish_reason for ch in chunks[:-1] if ch.choices[0].finish_reason]
    assert finals == [full.choices[0].finish_reason]
    content = "".join(ch.choices[0].delta.content or "" for ch in chunks[:-1])
    reasoning = "".join((ch.choices[0].delta.model_extra or {}).get("reasoning_content") or "" for ch in chunks[:-1])
    assert content == (full.choices[0].message.content or "")
    assert reasoning == ((full.choices[0].message.model_extra or {}).get("reasoning_content") or "")


def test_seed_and_temperature_reproducible(server):
    cl = server.client()
    a = cl.completions.create(model="m", prompt="Once upon a time", max_tokens=20, seed=11, temperature=0.9)
    b = cl.completions.create(model="m", prompt="Once upon a time", max_tokens=20, seed=11, temperature=0.9)
    c = cl.completions.create(model="m", prompt="Once upon a time", max_tokens=20, seed=12, temperature=0.9)
    assert a.choices[0].text == b.choices[0].text and a.choices[0].text
    assert c.choices[0].text != a.choices[0].text
    x = cl.chat.completions.create(model="m", messages=MSGS, max_tokens=16, seed=5, temperature=0.8)
    y = cl.chat.completions.create(model="m", messages=MSGS, max_tokens=16, seed=5, temperature=0.8)
    assert x.choices[0].message.model_dump() == y.choices[0].message.model_dump()


def test_completions_stream_and_stop(server):
    cl = server.client()
    kw = dict(model="m", prompt="The weather today", max_tokens=16, seed=3, temperature=0)
    full = cl.completions.create(**kw)
    assert full.object == "text_completion" and full.choices[0].finish_reason == "length"
    assert full.usage.completion_tokens == 16 and full.usage.prompt_tokens == 3
    streamed = "".join(ch.choices[0].text for ch in cl.completions.create(stream=True, **kw))
    assert streamed == full.choices[0].text
    # A stop string cuts the text before it (and is not shown).
    text = full.choices[0].text
    cut = text[len(text) // 2:len(text) // 2 + 3]
    if cut.strip():
        stopped = cl.completions.create(stop=[cut], **kw)
        assert stopped.choices[0].text == text[:text.index(cut)]
        assert stopped.choices[0].finish_reason == "stop"


def test_responses(server):
    cl = server.client()
    r = cl.responses.create(model="m", input="Say hi", max_output_tokens=16, temperature=0.5)
    assert r.object == "response" and r.status in ("completed", "incomplete")
    assert r.usage.input_tokens > 20 and 1 <= r.usage.output_tokens <= 16
    events = list(cl.responses.create(model="m", input="Say hi", max_output_tokens=16, stream=True))
    types = [e.type for e in events]
    assert types[0] == "response.created" and types[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert types.count("response.output_item.added") == types.count("response.output_item.done")
    assert events[-1].response.usage.output_tokens >= 1


def test_tools_accepted(server):
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                               "parameters": {"type": "object",
                                                              "properties": {"city": {"type": "string"}},
                                                              "required": ["city"]}}}]
    cl = server.client()
    r = cl.chat.completions.create(model="m", messages=MSGS, tools=tools, max_tokens=8)
    assert r.choices[0].finish_reason in ("stop", "length", "tool_calls")
    plain = cl.chat.completions.create(model="m", messages=MSGS, max_tokens=8)
    assert r.usage.prompt_tokens > plain.usage.prompt_tokens + 10  # the tool is in the prompt
    r = cl.responses.create(model="m", input="weather?", max_output_tokens=8,
                            tools=[{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}])
    assert r.usage.input_tokens > 20


def test_16_concurrent_clients_get_their_own_outputs(server):
    cl = server.client()
    prompts = [f"Story number {i} begins" for i in range(16)]
    want = [cl.completions.create(model="m", prompt=p, max_tokens=12, temperature=0).choices[0].text for p in prompts]
    got = [None] * 16
    errors = []

    def one(i):
        try:
            if i % 2:
                got[i] = "".join(ch.choices[0].text for ch in cl.completions.create(
                    model="m", prompt=prompts[i], max_tokens=12, temperature=0, stream=True))
            else:
                got[i] = cl.completions.create(model="m", prompt=prompts[i], max_tokens=12, temperature=0).choices[0].text
        except Exception as e:  # noqa: BLE001 -- reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert got == want
    assert server.metric("gptoss_requests_running") == 0


def test_disconnect_frees_the_slot(server):
    cl = server.client()
    before = server.metric("gptoss_completion_tokens_total")
    streams = [cl.chat.completions.create(model="m", messages=MSGS, max_tokens=1900, temperature=1.0, stream=True)
               for _ in range(4)]
    for s in streams:
        next(iter(s))
        s.close()
    deadline = time.time() + 5
    while time.time() < deadline and server.metric("gptoss_requests_running") != 0:
        time.sleep(0.05)
    assert server.metric("gptoss_requests_running") == 0
    assert server.metric("gptoss_completion_tokens_total") - before < 4 * 1900 / 2
    t0 = time.time()
    cl.chat.completions.create(model="m", messages=MSGS, max_tokens=8)
    assert time.time() - t0 < 5


def test_non_stream_disconnect_frees_the_slot(server):
    """A non-streaming request longer than a second is answered in chunks (spaces while it runs, then the JSON):
    a client that leaves is noticed at the next space and its generation cancelled; one that stays gets valid
    JSON with all its tokens."""
    body = json.dumps({"model": "m", "messages": MSGS, "max_tokens": 1900, "temperature": 1.0,
                       "ignore_eos": True}).encode()
    before = server.metric("gptoss_completion_tokens_total")
    conns = []
    for _ in range(2):
        c = http.client.HTTPConnection(server.host, server.port, timeout=30)
        c.request("POST", "/v1/chat/completions", body=body,
                  headers={"Content-Type": "application/json", "Content-Length": str(len(body))})
        conns.append(c)
    time.sleep(2.5)  # past the first second: the answers are chunked now
    for c in conns:
        c.sock.shutdown(2)
        c.close()
    deadline = time.time() + 6
    while time.time() < deadline and server.metric("gptoss_requests_running") != 0:
        time.sleep(0.05)
    assert server.metric("gptoss_requests_running") == 0
    assert server.metric("gptoss_completion_tokens_total") - before < 2 * 1900 / 2
    # A client that waits gets the whole answer, parsed by the openai client despite the leading spaces.
    t0 = time.time()
    r = server.client().chat.completions.create(model="m", messages=MSGS, max_tokens=600, extra_body={"ignore_eos": True})
    assert time.time() - t0 > 1.0, "too fast to exercise the chunked answer: raise max_tokens"
    assert r.usage.completion_tokens == 600 and r.choices[0].finish_reason == "length"


def test_errors_battery(server):
    chat, resp, comp = "/v1/chat/completions", "/v1/responses", "/v1/completions"
    ok_msgs = [{"role": "user", "content": "hi"}]
    long_prompt = "hello " * 3000  # about 3000 tokens > --max-context 2048
    cases = [
        ("POST", chat, None, b"{not json"),
        ("POST", chat, None, b""),
        ("POST", chat, None, b"[1, 2]"),
        ("POST", chat, None, b'"text"'),
        ("POST", chat, None, b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}'),  # invalid UTF-8
        ("POST", chat, {}, None),
        ("POST", chat, {"messages": "hi"}, None),
        ("POST", chat, {"messages": []}, None),
        ("POST", chat, {"messages": [{"role": "wizard", "content": "hi"}]}, None),
        ("POST", chat, {"messages": [{"content": "hi"}]}, None),
        ("POST", chat, {"messages": [{"role": "user", "content": 42}]}, None),
        ("POST", chat, {"messages": [42]}, None),
        ("POST", chat, {"messages": ok_msgs, "max_tokens": -5}, None),
        ("POST", chat, {"messages": ok_msgs, "max_tokens": "ten"}, None),
        ("POST", chat, {"messages": ok_msgs, "temperature": "hot"}, None),
        ("POST", chat, {"messages": ok_msgs, "temperature": -1}, None),
        ("POST", chat, {"messages": ok_msgs, "top_p": 7}, None),
        ("POST", chat, {"messages": ok_msgs, "stream": "yes"}, None),
        ("POST", chat, {"messages": ok_msgs, "n": 3}, None),
        ("POST", chat, {"messages": ok_msgs, "tools": "nope"}, None),
        ("POST", chat, {"messages": ok_msgs, "tools": [{"type": "function"}]}, None),
        ("POST", chat, {"messages": ok_msgs, "tool_choice": {"type": "function", "function": {"name": "missing"}}}, None),
        ("POST", chat, {"messages": ok_msgs, "stop": [1, 2]}, None),
        ("POST", chat, {"messages": [{"role": "user", "content": long_prompt}]}, None),  # past the context
        ("POST", chat, None, b'{"messages": [' + b'{"role": "user", "content": "x"},' * 9000 + b"]}"),  # > 64 KB
        ("POST", resp, {}, None),
        ("POST", resp, {"input": 5}, None),
        ("POST", resp, {"input": "hi", "previous_response_id": "resp_1"}, None),
        ("POST", resp, {"input": "hi", "max_output_tokens": 0}, None),
        ("POST", comp, {}, None),
        ("POST", comp, {"prompt": 3}, None),
        ("POST", comp, {"prompt": "hi", "max_tokens": -1}, None),
        ("POST", comp, {"prompt": [1, 2, 99999999]}, None),
        ("POST", comp, {"prompt": ""}, None),
        ("POST", comp, {"prompt": long_prompt}, None),
        ("POST", comp, {"prompt": "hi", "stop": [""]}, None),
        ("GET", chat, None, None),
        ("DELETE", "/v1/models", None, None),
        ("GET", "/v1/nothing", None, None),
        ("POST", "/", {}, None),
    ]
    assert len(cases) >= 30
    for method, path, body, raw in cases:
        status, text = server.request(method, path, body=body, raw=raw)
        assert 400 <= status < 500, (method, path, body, raw and raw[:80], status, text)
        assert "error" in json.loads(text), text
    assert server.request("GET", chat)[0] == 405 and server.request("GET", "/v1/nothing")[0] == 404
    assert server.request("POST", chat, raw=b"{" + b" " * 70000 + b"}")[0] == 413
    assert server.request("GET", "/health")[0] == 200
    r = server.client().chat.completions.create(model="m", messages=ok_msgs, max_tokens=4)
    assert r.usage.completion_tokens >= 1


def test_metrics(server):
    cl = server.client()
    cl.chat.completions.create(model="m", messages=MSGS, max_tokens=4)
    cl.chat.completions.create(model="m", messages=MSGS, max_tokens=4)  # the second reuses the first's cache
    cl.completions.create(model="m", prompt="one two three", max_tokens=100, temperature=0)
    server.request("POST", "/v1/chat/completions", body={"messages": "x"})
    server.request("GET", "/nowhere")
    _, text = server.request("GET", "/metrics")
    assert re.search(r'^gptoss_requests_total\{endpoint="/v1/chat/completions",status="200"\} [1-9]', text, re.M)
    assert re.search(r'^gptoss_requests_total\{endpoint="/v1/chat/completions",status="400"\} [1-9]', text, re.M)
    assert re.search(r'^gptoss_requests_total\{endpoint="other",status="404"\} [1-9]', text, re.M)
    assert server.metric("gptoss_slots") == 4 and server.metric("gptoss_queue_depth") == 0
    assert server.metric("gptoss_completion_tokens_total") > 100 and server.metric("gptoss_prompt_tokens_total") > 100
    assert server.metric("gptoss_prompt_tokens_reused_total") > 0
    assert server.metric("gptoss_time_to_first_token_seconds_count") >= 3
    assert server.metric("gptoss_decode_tokens_per_second_count") >= 3
    assert server.metric('gptoss_time_to_first_token_seconds_bucket{le="+Inf"}') == \
        server.metric("gptoss_time_to_first_token_seconds_count")


def test_default_slots_on_the_cpu(gptoss_bin, model_dir):
    # No --parallel: the CPU backend reports no device memory, so serve opens kCpuSlots (4) and says so.
    s = Server(gptoss_bin, model_dir, "--max-context", "256")
    try:
        assert any(re.match(r"serve: 4 slots of 256 positions", l) for l in s.before), s.before
        assert s.metric("gptoss_slots") == 4
    finally:
        assert s.stop() == 0


def test_auth_and_sigterm(gptoss_bin, model_dir):
    s = Server(gptoss_bin, model_dir, "--api-key", "sekrit", "--max-context", "1024", "--parallel", "2")
    try:
        assert s.request("GET", "/health")[0] == 200
        for path in ("/v1/models", "/metrics"):
            assert s.request("GET", path)[0] == 401
            assert s.request("GET", path, headers={"Authorization": "Bearer wrong"})[0] == 401
            assert s.request("GET", path, headers={"Authorization": "Bearer sekrit"})[0] == 200
        with pytest.raises(openai.AuthenticationError):
            s.client("wrong").chat.completions.create(model="m", messages=MSGS, max_tokens=2)
        assert s.client("sekrit").chat.completions.create(model="m", messages=MSGS, max_tokens=2).usage
        # SIGTERM while a stream runs: the stream ends, the server exits 0.
        stream = s.client("sekrit").chat.completions.create(model="m", messages=MSGS, max_tokens=1000, stream=True)
        it = iter(stream)
        next(it)
        t0 = time.time()
        s.proc.send_signal(signal.SIGTERM)
        rest = []
        try:
            rest = list(it)
        except openai.APIError:
            pass
        assert s.proc.wait(timeout=20) == 0
        assert time.time() - t0 < 15
        assert len(rest) < 1000
        assert "stopped" in s.proc.stderr.read()
    finally:
        if s.proc.poll() is None:
            s.proc.kill()
