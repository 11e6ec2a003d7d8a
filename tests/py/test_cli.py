"""The command line itself: every bad command line ends in exactly one "gptoss: error: " line (exit 2 for a
wrong command line, 1 for a failed run), quickly, under an address-space limit, with no signal; numeric
options are bounded and echoed cut short; --max-context is a limit; one option vocabulary (--model/-m,
--model-path kept), one token-list syntax, --file/stdin for token ids, --help with defaults; and the demo
model of scripts/setup.sh chats. Needs only the built binaries (the demo test also ../shared's tiktoken)."""
import base64
import shutil
import subprocess
import sys

import numpy as np
import pytest

from badinput import ERROR_PREFIX, run_bad
from conftest import run_cli

LONG = "9" * 300  # a 300-digit number


@pytest.fixture(scope="module")
def model(tmp_path_factory, tool_bin):
    """A small random checkpoint (vocab 1024, max_position_embeddings 2048)."""
    out = tmp_path_factory.mktemp("cli") / "m"
    subprocess.run([str(tool_bin("make-checkpoint")), str(out), "--layers", "2", "--seed", "3"], check=True,
                   capture_output=True)
    return out


@pytest.fixture(scope="module")
def byte_tokenizer(tmp_path_factory):
    """A .tiktoken of the 256 single bytes (rank = byte) plus "ab" (256); the loader adds the harmony specials."""
    path = tmp_path_factory.mktemp("tok") / "bytes.tiktoken"
    lines = [f"{base64.b64encode(bytes([b])).decode()} {b}" for b in range(256)]
    lines.append(f"{base64.b64encode(b'ab').decode()} 256")
    path.write_text("\n".join(lines) + "\n")
    return path


def usage_error(gptoss_bin, *args, **kw):
    p = run_bad([gptoss_bin, *args], timeout=20, **kw)
    assert p.returncode == 2, f"exit {p.returncode}, expected 2 (usage): {p.stderr}"
    return p.stderr.strip()


def run_error(gptoss_bin, *args, **kw):
    p = run_bad([gptoss_bin, *args], timeout=60, **kw)
    assert p.returncode == 1, f"exit {p.returncode}, expected 1: {p.stderr}"
    return p.stderr.strip()


# ---- numeric bounds ------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["10000", "1000000", "0", "-3", LONG, "4x", ""])
def test_threads_bounded(gptoss_bin, model, value):
    # Before: 10000 threads ran for minutes, 1000000 aborted (std::system_error).
    err = usage_error(gptoss_bin, "verify", "--model", model, "--threads", value, "--device", "cpu")
    assert "--threads" in err


@pytest.mark.parametrize("args", [
    ["bench", "--context", "2147483647"],
    ["bench", "--context", "-1"],
    ["bench", "--prompt-tokens", "0"],
    ["bench", "--prompt-tokens", LONG],
    ["bench", "--gen-tokens", "2147483647"],
    ["bench", "--repeats", "0"],
    ["generate", "--tokens", "1", "-n", "2147483647"],
    ["generate", "--tokens", "1", "-n", "0"],
    ["generate", "--tokens", "1", "--max-batch", "0"],
    ["generate", "--tokens", "1", "--max-batch", "100000"],
    ["generate", "--tokens", "1", "--max-context", "0"],
    ["generate", "--tokens", "1", "--max-context", LONG],
    ["generate", "--tokens", "1", "--top-k", "-1"],
    ["generate", "--tokens", "1", "--top-k", "99999999999"],
    ["generate", "--tokens", "1", "--seed", "-1"],
    ["generate", "--tokens", "1", "--seed", LONG],
    ["generate", "--tokens", "1", "--temperature", "nan"],
    ["generate", "--tokens", "1", "--temperature", "inf"],
    ["generate", "--tokens", "1", "--temperature", "-0.5"],
    ["generate", "--tokens", "1", "--top-p", "nan"],
    ["generate", "--tokens", "1", "--top-p", "0"],
    ["generate", "--tokens", "1", "--top-p", "1.5"],
    ["chat", "--temperature", "nan"],
    ["chat", "--top-p", "-inf"],
    ["chat", "--max-tokens", "0"],
    ["verify", "--tokens", "0"],
])
def test_numeric_options_bounded(gptoss_bin, model, args):
    err = usage_error(gptoss_bin, args[0], "--model", model, "--device", "cpu", *args[1:])
    assert LONG not in err and "9" * 30 not in err  # long numbers are cut, not echoed


def test_context_beyond_the_model(gptoss_bin, model):
    # bench: 2^20 positions pass the option's bound but not this model's max_position_embeddings (2048).
    err = run_error(gptoss_bin, "bench", "--model", model, "--device", "cpu", "--context", "1000000")
    assert "max_position_embeddings" in err
    err = run_error(gptoss_bin, "generate", "--model", model, "--device", "cpu", "--tokens", "1", "-n", "5000")
    assert "max_position_embeddings" in err
    # Before: silently lowered to 2048.
    err = run_error(gptoss_bin, "verify", "--model", model, "--device", "cpu", "--max-context", "100000")
    assert "--max-context 100000" in err and "2048" in err


def test_max_context_is_a_limit(gptoss_bin, model):
    # Before: raised to fit (exit 0).
    err = run_error(gptoss_bin, "generate", "--model", model, "--device", "cpu", "--tokens", "1,2,3", "-n", "10",
                    "--max-context", "8")
    assert "needs 13 positions but --max-context is 8" in err
    err = run_error(gptoss_bin, "logits", "--model", model, "--device", "cpu", "--tokens", "1 2 3 4", "--max-context",
                    "3", "--out", "/dev/null")
    assert "--max-context is 3" in err
    err = run_error(gptoss_bin, "bench", "--model", model, "--device", "cpu", "--prompt-tokens", "16",
                    "--gen-tokens", "4", "--max-context", "16")
    assert "--max-context is 16" in err
    # Within the limit it runs; without it the cache is sized to the request.
    r = run_cli(gptoss_bin, "generate", "--model", model, "--device", "cpu", "--tokens", "1,2,3", "-n", "5",
                "--max-context", "8", "--temperature", "0")
    assert len(r.stdout.strip().split(",")) == 5


def test_threads_within_bounds_run(gptoss_bin, model):
    r = run_cli(gptoss_bin, "verify", "--model", model, "--device", "cpu", "--threads", "3", timeout=60)
    assert "finite: OK" in r.stdout


# ---- one error line for every kind of bad command line ------------------------------------------

@pytest.mark.parametrize("args", [
    ["generate", "--bogus"],
    ["generate", "--tokens", "1"],             # no --model
    ["frobnicate"],
    [],
    ["generate", "--model"],                   # option without its value
    ["verify", "--model", "x", "--device", "tpu"],
    ["generate", "--model", "x", "--tokens", "1", "--prompt", "hi"],  # excluded together
    ["convert", "--model", "x", "--format", "gguf"],
    ["detokenize", "--tokens", "1", "--file", "f", "--tokenizer", "t"],
])
def test_parse_errors_one_line_exit_2(gptoss_bin, args):
    # Before: CLI11's two lines ("... / Run with --help for more information."), exit 105-110.
    err = usage_error(gptoss_bin, *args)
    assert "--help" in err


@pytest.mark.parametrize("tokens", ["1,,2", "abc", ",1", "1,", "1;2", "-1", "[1,2", LONG, "2147483648", ""])
def test_bad_token_lists(gptoss_bin, model, tokens):
    err = run_error(gptoss_bin, "logits", "--model", model, "--device", "cpu", "--tokens", tokens, "--out", "/dev/null")
    assert LONG not in err


def test_run_errors_have_the_one_prefix(gptoss_bin, tmp_path, byte_tokenizer):
    missing = tmp_path / "missing"
    # Before: "gptoss convert: ...", "gptoss inspect: ...", "gptoss: ..." (tokenizer commands).
    run_error(gptoss_bin, "convert", "--model", missing)
    run_error(gptoss_bin, "convert", "--verify-only", "--model", missing)
    run_error(gptoss_bin, "inspect", missing)
    run_error(gptoss_bin, "verify", "--model", missing, "--device", "cpu")
    run_error(gptoss_bin, "tokenize", "--tokenizer", missing, "--text", "hi")
    run_error(gptoss_bin, "detokenize", "--tokenizer", byte_tokenizer, "--tokens", "abc")
    run_error(gptoss_bin, "detokenize", "--tokenizer", byte_tokenizer, "--file", missing)
    run_error(gptoss_bin, "parse", "--tokenizer", byte_tokenizer, input="1 x 2")


def test_cuda_device_fails_cleanly_where_it_cannot_run(gptoss_bin, model):
    r = subprocess.run([str(gptoss_bin), "verify", "--model", str(model), "--device", "cuda"], capture_output=True,
                       text=True, timeout=120)
    if r.returncode != 0:  # no CUDA backend in this build, its module missing, or no GPU
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(ERROR_PREFIX) and "cuda" in lines[0], r.stderr


def test_start_does_not_load_cuda(gptoss_bin, model):
    """On a CUDA build, the CUDA runtime and cuBLAS (~200 MB resident) load only for the GPU: before, every
    invocation, --help included, took ~0.2 s and 217 MiB."""
    # A child's peak RSS starts at its parent's RSS at fork (Linux keeps it across exec), and pytest's is large:
    # a small Python process starts gptoss and reports what wait4 says.
    measure = ("import os, subprocess, sys\n"
               "p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
               "_, status, usage = os.wait4(p.pid, 0)\n"
               "print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)\n")
    for args in (["--help"], ["tokenize", "--help"], ["verify", "--model", str(model), "--device", "cpu"]):
        out = subprocess.run([sys.executable, "-c", measure, str(gptoss_bin), *args], capture_output=True, text=True,
                             check=True).stdout.split()
        assert out[0] == "0", args
        assert int(out[1]) < 64 * 1024, f"{args}: {int(out[1]) / 1024:.0f} MiB resident"


# ---- the good paths --------------------------------------------------------------------------------

def test_help_shows_defaults_on_stdout(gptoss_bin):
    r = subprocess.run([str(gptoss_bin), "generate", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr == ""
    for default in ["=32", "=f32", "=packed", "=1"]:  # -n, --kv-precision, --gpu-bf16, --temperature
        assert default in r.stdout, default
    assert "--model-path" not in r.stdout
    r = subprocess.run([str(gptoss_bin), "convert", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "=native" in r.stdout and "--model-path" in r.stdout
    r = subprocess.run([str(gptoss_bin), "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "convert" in r.stdout and r.stderr == ""


def test_model_given_the_same_way_everywhere(gptoss_bin, model, tmp_path):
    for flag in ["--model", "-m", "--model-path"]:
        out = tmp_path / flag.strip("-")
        run_cli(gptoss_bin, "convert", flag, model, "-o", out, "-q")
        assert "layers 2," in run_cli(gptoss_bin, "inspect", flag, out).stdout
    assert "native layout" in run_cli(gptoss_bin, "inspect", tmp_path / "model").stdout
    r = run_cli(gptoss_bin, "verify", "-m", tmp_path / "m", "--device", "cpu")
    assert "finite: OK" in r.stdout


def test_token_lists_commas_and_whitespace(gptoss_bin, model, tmp_path):
    outs = []
    for i, tokens in enumerate(["5,6,7", "5 6 7", " 5, 6,\t7\n", "[5, 6, 7]"]):
        out = tmp_path / f"l{i}.npy"
        run_cli(gptoss_bin, "logits", "--model", model, "--device", "cpu", "--tokens", tokens, "--out", out)
        outs.append(np.load(out))
    assert outs[0].shape == (3, 1024)
    for o in outs[1:]:
        assert np.array_equal(o, outs[0])


def test_detokenize_and_parse_read_files_and_stdin(gptoss_bin, byte_tokenizer, tmp_path):
    ids = run_cli(gptoss_bin, "tokenize", "--tokenizer", byte_tokenizer, "--text", "hi ab").stdout.strip()
    assert ids == "[104,105,32,256]"
    f = tmp_path / "ids.txt"
    f.write_text(ids + "\n")
    for args, kw in [(["--file", f], {}), (["--file", "-"], {"input": ids}), ([], {"input": "104 105 32 256"}),
                     (["--tokens", "104,105 32 256"], {})]:
        r = run_cli(gptoss_bin, "detokenize", "--tokenizer", byte_tokenizer, *args, **kw)
        assert r.stdout == "hi ab", args
    # A million ids do not fit in argv; they do through stdin.
    r = subprocess.run([str(gptoss_bin), "detokenize", "--tokenizer", str(byte_tokenizer)],
                       input=b"104," * 999999 + b"104", capture_output=True, timeout=60)
    assert r.returncode == 0 and r.stdout == b"h" * 1000000
    # parse: <|start|>assistant<|message|>hi<|end|> from a file of ids.
    f.write_text("200006 " + " ".join(["97", "115", "115", "105", "115", "116", "97", "110", "116"]) +
                 " 200008 104 105 200007\n")
    r = run_cli(gptoss_bin, "parse", "--tokenizer", byte_tokenizer, "--file", f, "--role", "")
    assert '"assistant"' in r.stdout and '"hi"' in r.stdout


def test_demo_model_chats(gptoss_bin, tool_bin, tmp_path, shared_dir):
    """scripts/setup.sh's demo: `make-checkpoint --preset demo` + o200k_base.tiktoken in the directory."""
    demo = tmp_path / "demo-model"
    subprocess.run([str(tool_bin("make-checkpoint")), str(demo), "--preset", "demo", "--seed", "1"], check=True,
                   capture_output=True)
    shutil.copy(shared_dir / "data" / "o200k_base.tiktoken", demo)
    r = run_cli(gptoss_bin, "generate", "--model", demo, "--device", "cpu", "--prompt", "Hello!", "-n", "8",
                "--seed", "1")
    assert "tokens/s" in r.stderr
    r = subprocess.run([str(gptoss_bin), "chat", "--model", str(demo), "--device", "cpu", "--max-tokens", "8"],
                       input="hello\nsecond\n", capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert sum("tokens/s" in line for line in r.stderr.splitlines()) == 2


def test_thread_creation_failure_is_one_line(gptoss_bin, model):
    # 1024 threads reserve 8 GiB of stacks: more than a 2 GiB address space allows.
    run_bad([gptoss_bin, "verify", "--model", model, "--device", "cpu", "--threads", "1024"], timeout=60, as_gib=2)
