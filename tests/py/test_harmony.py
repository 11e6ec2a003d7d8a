"""`gptoss render` / `gptoss parse` must be token-for-token identical to the openai-harmony PyPI package
(HARMONY_GPT_OSS) on the conversations in tests/data/harmony/*.json (openai-harmony's Conversation JSON).

openai-harmony is run offline: TIKTOKEN_ENCODINGS_BASE points to a temporary directory holding a copy of
../shared/data/o200k_base.tiktoken (checked with openai-harmony 0.0.8).
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
TOKENIZER_JSON = SHARED / "gpt-oss-tokenizer" / "tokenizer.json"
TIKTOKEN_FILE = SHARED / "o200k_base.tiktoken"
BIN = Path(os.environ.get("GPTOSS_BIN", REPO / "build" / "gptoss"))
CONVERSATIONS = sorted((REPO / "tests" / "data" / "harmony").glob("*.json"))


@pytest.fixture(scope="module")
def harmony(tmp_path_factory):
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} not found (../shared data files)")
    if not BIN.exists():
        pytest.skip(f"gptoss binary not found at {BIN} (set GPTOSS_BIN)")
    enc_dir = tmp_path_factory.mktemp("tiktoken_encodings")
    shutil.copy(TIKTOKEN_FILE, enc_dir / "o200k_base.tiktoken")
    os.environ["TIKTOKEN_ENCODINGS_BASE"] = str(enc_dir)
    oh = pytest.importorskip("openai_harmony", reason="PyPI package openai-harmony not installed")
    return oh, oh.load_harmony_encoding(oh.HarmonyEncodingName.HARMONY_GPT_OSS)


def gptoss(*args):
    r = subprocess.run([str(BIN), *map(str, args)], capture_output=True)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout.decode()


def test_enough_conversations():
    assert len(CONVERSATIONS) >= 20


@pytest.mark.parametrize("path", CONVERSATIONS, ids=lambda p: p.stem)
def test_render_matches_openai_harmony(harmony, path):
    oh, enc = harmony
    conv = oh.Conversation.from_json(path.read_text(encoding="utf-8"))
    want = enc.render_conversation(conv)
    want_completion = enc.render_conversation_for_completion(conv, oh.Role.ASSISTANT)
    # The .tiktoken source is what openai-harmony itself uses; check tokenizer.json on a few too.
    sources = [TIKTOKEN_FILE] + ([TOKENIZER_JSON] if path.stem < "04" else [])
    for src in sources:
        got = json.loads(gptoss("render", "--tokenizer", src, "--conversation", path))
        assert got == want, f"{src.name}: first difference at {next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))}"
        got_c = json.loads(gptoss("render", "--tokenizer", src, "--conversation", path, "--for-completion"))
        assert got_c == want_completion


@pytest.mark.parametrize("path", CONVERSATIONS, ids=lambda p: p.stem)
def test_parse_matches_openai_harmony(harmony, path):
    """The rendered conversation, parsed back from <|start|>, gives openai-harmony's messages."""
    oh, enc = harmony
    conv = oh.Conversation.from_json(path.read_text(encoding="utf-8"))
    tokens = enc.render_conversation(conv)
    args = [str(BIN), "parse", "--tokenizer", str(TIKTOKEN_FILE), "--role", "", "--tokens", ",".join(map(str, tokens))]
    try:
        want = [m.to_dict() for m in enc.parse_messages_from_completion_tokens(tokens, role=None)]
    except oh.HarmonyError:
        # e.g. a bare tool name or "user:alice" as the whole header: openai-harmony rejects it; so must we.
        r = subprocess.run(args, capture_output=True)
        assert r.returncode != 0 and r.stderr.startswith(b"gptoss: ")
        return
    got = json.loads(gptoss(*args[1:]))
    assert got == want


def test_parse_completion_examples(harmony):
    oh, enc = harmony
    completions = [
        # docs/MODEL.md §6.1
        [200005, 35644, 200008, 17958, 4928, 13, 200007, 200006, 173781, 200005, 17196, 200008, 72782, 200002],
        # tool call with the recipient after the channel, constrained json, ended by <|call|>
        enc.encode("<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{\"location\":\"Paris\"}<|call|>",
                   allowed_special="all"),
        # recipient after the role, content type without constrain
        enc.encode(" to=functions.f<|channel|>commentary json<|message|>{}<|call|>", allowed_special="all"),
        # split multi-byte characters in content: bytes of 👩‍💻 one token each
        [200005, 17196, 200008] + enc.encode("héllo 👩‍💻 世界") + [200002],
    ]
    for tokens in completions:
        want = [m.to_dict() for m in enc.parse_messages_from_completion_tokens(tokens, role=oh.Role.ASSISTANT)]
        got = json.loads(gptoss("parse", "--tokenizer", TIKTOKEN_FILE, "--tokens", ",".join(map(str, tokens))))
        assert got == want


def test_stop_tokens(harmony):
    oh, enc = harmony
    assert sorted(enc.stop_tokens_for_assistant_actions()) == [200002, 200012]
    assert sorted(enc.stop_tokens()) == [200002, 200007, 200012]


def test_bad_conversation(tmp_path):
    if not BIN.exists() or not SHARED.is_dir():
        pytest.skip("needs the gptoss binary and ../shared")
    cases = {"notjson": "{", "norole": '{"messages": [{"content": []}]}',
             "badrole": '{"messages": [{"role": "robot", "content": []}]}',
             "toolnoname": '{"messages": [{"role": "tool", "content": [{"type": "text", "text": "x"}]}]}'}
    for name, text in cases.items():
        p = tmp_path / f"{name}.json"
        p.write_text(text)
        r = subprocess.run([str(BIN), "render", "--tokenizer", str(TIKTOKEN_FILE), "--conversation", str(p)],
                           capture_output=True)
        assert r.returncode != 0 and r.stderr.startswith(b"gptoss: ") and len(r.stderr.splitlines()) == 1, name
