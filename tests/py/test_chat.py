"""Text in, text out on a generated model with the real o200k_harmony tokenizer: `generate --prompt`
(chat-formatted and --raw) and `chat` fed from a pipe. Random weights write nonsense; these tests check
the plumbing: the prompt reaches the model in the Harmony format, answers stream, history and /reset work,
and a tokenizer that does not fit the model is refused."""
import json
import subprocess

import pytest

from conftest import run_cli


@pytest.fixture(scope="module")
def real_vocab_model(tmp_path_factory, tool_bin):
    out = tmp_path_factory.mktemp("vocab") / "m"
    subprocess.run([str(tool_bin("make-checkpoint")), str(out), "--vocab", "201088", "--layers", "2", "--hidden", "64",
                    "--inter", "64", "--seed", "4"], check=True, capture_output=True)
    return out


@pytest.fixture(scope="module")
def tokenizer_json(shared_dir):
    return shared_dir / "data" / "gpt-oss-tokenizer" / "tokenizer.json"


def test_generate_prompt_chat_format(real_vocab_model, tokenizer_json, gptoss_bin):
    r = run_cli(gptoss_bin, "generate", "--model", real_vocab_model, "--tokenizer", tokenizer_json, "--device", "cpu",
                "--prompt", "What is the capital of France?", "-n", "24", "--seed", "1", "--show-reasoning")
    assert "24 tokens" in r.stderr or "tokens," in r.stderr


def test_generate_raw_is_deterministic(real_vocab_model, tokenizer_json, gptoss_bin):
    args = ["generate", "--model", real_vocab_model, "--tokenizer", tokenizer_json, "--device", "cpu", "--prompt",
            "Once upon a time", "-n", "16", "--raw", "--seed", "9"]
    a = run_cli(gptoss_bin, *args).stdout
    b = run_cli(gptoss_bin, *args).stdout
    assert a == b and len(a.strip()) > 0
    a.encode("utf-8")  # streamed output is valid UTF-8


def test_generate_prompt_json(real_vocab_model, tokenizer_json, gptoss_bin):
    """--json prints one JSON object (it printed an empty line for --prompt); --raw's text is what it streams."""
    base = ["generate", "--model", real_vocab_model, "--tokenizer", tokenizer_json, "--device", "cpu", "--prompt",
            "Once upon a time", "-n", "8", "--seed", "2"]
    for extra in ([], ["--raw"]):
        lines = run_cli(gptoss_bin, *base, *extra, "--json").stdout.splitlines()
        assert len(lines) == 1, lines
        j = json.loads(lines[0])
        assert set(j) >= {"text", "reasoning", "prompt_tokens", "completion_tokens", "finish_reason",
                          "prefill_seconds", "decode_tokens_per_s"}
        assert 1 <= j["completion_tokens"] <= 8 and j["prompt_tokens"] >= 4
        assert (j["finish_reason"] == "length") == (j["completion_tokens"] == 8)
    assert j["text"] and j["text"] == run_cli(gptoss_bin, *base, "--raw").stdout[:-1]


def test_chat_from_pipe(real_vocab_model, tokenizer_json, gptoss_bin):
    script = "hello\n/reasoning\nsecond question\n/reset\nthird\n/exit\nnever read\n"
    r = subprocess.run([str(gptoss_bin), "chat", "--model", str(real_vocab_model), "--tokenizer", str(tokenizer_json),
                        "--device", "cpu", "--max-tokens", "12", "--temperature", "0"], input=script, text=True,
                       capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr
    stats = [l for l in r.stderr.splitlines() if "tokens/s" in l]
    assert len(stats) == 3  # three questions answered, the line after /exit never read
    assert "(history cleared)" in r.stderr
    # The first answer's prompt is the whole rendered conversation (system + user + <|start|>assistant);
    # after /reset the same-length prompt is fed again from scratch.
    first = int(stats[0].split("prompt ")[1].split()[0])
    third = int(stats[2].split("prompt ")[1].split()[0])
    assert first > 30 and third >= first - 2


def test_tokenizer_must_fit_model(tmp_path, tiny_model, tokenizer_json, gptoss_bin):
    r = run_cli(gptoss_bin, "generate", "--model", tiny_model, "--tokenizer", tokenizer_json, "--prompt", "hi",
                check=False)
    assert r.returncode != 0 and "vocabulary" in r.stderr
    r = run_cli(gptoss_bin, "generate", "--model", tiny_model, "--prompt", "hi", check=False)
    assert r.returncode != 0 and "tokenizer" in r.stderr


def test_chat_ctrl_c_stops_answer_not_chat(real_vocab_model, tokenizer_json, gptoss_bin):
    import signal
    import time
    p = subprocess.Popen([str(gptoss_bin), "chat", "--model", str(real_vocab_model), "--tokenizer", str(tokenizer_json),
                          "--device", "cpu", "--max-tokens", "3000", "--max-context", "2048"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    p.stdin.write("tell me a long story\n")
    p.stdin.flush()
    time.sleep(3.0)  # past the load (1.4 s on a busy 2-core machine, where 1 s killed it before its handler)
    p.send_signal(signal.SIGINT)
    time.sleep(0.3)
    p.stdin.write("/exit\n")
    p.stdin.flush()
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert "stopped" in err
