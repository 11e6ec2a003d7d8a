"""bench/serve_load.py against `gptoss serve` on a generated tiny model (CPU): the fixed-length and the
ShareGPT-like workloads send exactly the lengths asked (token-id prompts, ignore_eos) and report the keys
the continuous-batching benchmarks read; the ShareGPT-like length draws are seeded and have the documented
means. And the server's `ignore_eos`, on a model edited so that its every greedy token is <|return|>."""
import http.client
import importlib.util
import json
import math
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time

import numpy as np
import pytest

REPORT_KEYS = {"output_tokens_per_s", "total_tokens_per_s", "ttft_ms_p50", "ttft_ms_p99", "tpot_ms_p50",
               "tpot_ms_p99", "requests_per_s", "failures", "prompt_tokens", "output_tokens", "length_mismatches",
               # the first version's keys, which bench/serve_vs_bench.sh and scripts/gpu-check.sh read
               "clients", "requests", "errors", "wall_seconds", "ttft_p50_s", "ttft_p99_s", "tpot_p50_s",
               "tpot_p99_s", "decode_tokens_per_s_median"}
RETURN_ID = 200002  # <|return|>: a stop token of /v1/completions and of chat


def load_tool(repo_root):
    spec = importlib.util.spec_from_file_location("serve_load", repo_root / "bench" / "serve_load.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def make_model(tool_bin, shared_dir, out):
    subprocess.run([str(tool_bin("make-checkpoint")), str(out), "--vocab", "201088", "--layers", "2", "--hidden",
                    "64", "--inter", "64", "--seed", "4"], check=True, capture_output=True)
    shutil.copy(shared_dir / "data" / "gpt-oss-tokenizer" / "tokenizer.json", out / "tokenizer.json")
    return out


def edit_bf16(path, name, edit):
    """Applies edit(array of float32) to BF16 tensor `name` of a safetensors file, in place."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        hdr = json.loads(f.read(n))
    a, b = hdr[name]["data_offsets"]
    bits = np.memmap(path, dtype=np.uint16, mode="r+", offset=8 + n + a, shape=((b - a) // 2,))
    x = (bits.astype(np.uint32) << 16).view(np.float32).reshape(hdr[name]["shape"])
    edit(x)
    bits[:] = (x.reshape(-1).view(np.uint32) >> 16).astype(np.uint16)  # the edits are exact in bf16
    bits.flush()


class Server:
    def __init__(self, gptoss_bin, model, *args):
        self.proc = subprocess.Popen([str(gptoss_bin), "serve", "--model", str(model), "--device", "cpu", "--port", "0",
                                      *map(str, args)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        line = self.proc.stderr.readline()
        m = re.search(r"listening on http://([\d.]+):(\d+)", line)
        assert m, line + self.proc.stderr.read()
        self.host, self.port = m.group(1), int(m.group(2))
        self.url = f"http://{self.host}:{self.port}/v1"

    def post(self, path, body):
        c = http.client.HTTPConnection(self.host, self.port, timeout=60)
        c.request("POST", "/v1" + path, body=json.dumps(body), headers={"Content-Type": "application/json"})
        r = c.getresponse()
        out = r.status, json.loads(r.read())
        c.close()
        return out

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=20)


@pytest.fixture(scope="module")
def server(gptoss_bin, tool_bin, shared_dir, tmp_path_factory):
    s = Server(gptoss_bin, make_model(tool_bin, shared_dir, tmp_path_factory.mktemp("load") / "tiny"),
               "--max-context", "128", "--parallel", "4")
    yield s
    assert s.stop() == 0


@pytest.fixture(scope="module")
def return_server(gptoss_bin, tool_bin, shared_dir, tmp_path_factory):
    """A model whose greedy token is always <|return|>: every embedding's first component is 1000, so the
    final hidden state's first component is positive whatever the layers add; lm_head is zero but for
    <|return|>'s row, 10 * e0."""
    d = make_model(tool_bin, shared_dir, tmp_path_factory.mktemp("load") / "returns")
    (st,) = d.glob("*.safetensors")

    def embed(x):
        x[:, 0] = 1000.0

    def head(x):
        x[:] = 0.0
        x[RETURN_ID, 0] = 10.0
    edit_bf16(st, "model.embed_tokens.weight", embed)
    edit_bf16(st, "lm_head.weight", head)
    s = Server(gptoss_bin, d, "--max-context", "128", "--parallel", "2")
    yield s
    assert s.stop() == 0


def run_tool(repo_root, url, *args, tmp_path=None):
    cmd = [sys.executable, str(repo_root / "bench" / "serve_load.py"), "--base-url", url, "--json", *map(str, args)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)


def per_request(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_fixed_lengths(server, repo_root, tmp_path):
    rows = tmp_path / "rows.jsonl"
    r = run_tool(repo_root, server.url, "--fixed", "24:8", "--concurrency", "4", "--num-requests", "8",
                 "--save-requests", rows)
    assert REPORT_KEYS <= r.keys(), REPORT_KEYS - r.keys()
    assert r["failures"] == 0 and r["errors"] == 0 and r["requests"] == 8 and r["length_mismatches"] == 0
    assert r["workload"] == "fixed 24:8" and r["clients"] == 4
    assert r["prompt_tokens"] == 8 * 24 and r["output_tokens"] == 8 * 8
    got = per_request(rows)
    assert sorted(x["index"] for x in got) == list(range(8))
    assert all(x["prompt_tokens"] == 24 and x["output_tokens"] == 8 for x in got), got
    assert r["output_tokens_per_s"] > 0 and r["total_tokens_per_s"] > r["output_tokens_per_s"]
    assert 0 < r["ttft_ms_p50"] <= r["ttft_ms_p99"] and 0 < r["tpot_ms_p50"] <= r["tpot_ms_p99"]
    assert math.isclose(r["ttft_p50_s"] * 1e3, r["ttft_ms_p50"])


def test_sharegpt_lengths_are_seeded(server, repo_root, tmp_path):
    rows = tmp_path / "rows.jsonl"
    r = run_tool(repo_root, server.url, "--workload", "sharegpt", "--num-requests", "12", "--max-context", "128",
                 "--seed", "3", "--save-requests", rows)
    assert REPORT_KEYS <= r.keys(), REPORT_KEYS - r.keys()
    assert r["failures"] == 0 and r["requests"] == 12 and r["request_rate"] == "inf"
    want = load_tool(repo_root).sharegpt_lengths(12, 3, 128)
    assert len(set(want)) > 6  # lengths vary
    got = sorted(per_request(rows), key=lambda x: x["index"])
    assert [(x["prompt_tokens"], x["output_tokens"]) for x in got] == want
    assert [(x["prompt_tokens_asked"], x["output_tokens_asked"]) for x in got] == want
    assert r["length_mismatches"] == 0 and r["prompt_tokens"] == sum(p for p, _ in want)
    # A Poisson rate, two client processes: the same requests, spread over time (12 arrivals at 40/s: ~0.3 s).
    p = run_tool(repo_root, server.url, "--workload", "sharegpt", "--num-requests", "12", "--max-context", "128",
                 "--seed", "3", "--request-rate", "40", "--max-concurrency", "4", "--processes", "2")
    assert p["failures"] == 0 and p["request_rate"] == 40 and p["max_concurrency"] == 4 and p["processes"] == 2
    assert p["prompt_tokens"] == r["prompt_tokens"] and p["output_tokens"] == r["output_tokens"]


def test_text_workload_and_report(server, repo_root):
    r = run_tool(repo_root, server.url, "--clients", "2", "--requests", "2", "--max-tokens", "6")
    assert r["failures"] == 0 and r["requests"] == 4 and 4 <= r["output_tokens"] <= 24
    text = subprocess.run([sys.executable, str(repo_root / "bench" / "serve_load.py"), "--base-url", server.url,
                           "--fixed", "8:4", "--concurrency", "2", "--num-requests", "2"],
                          capture_output=True, text=True, timeout=120)
    assert text.returncode == 0, text.stderr
    assert "2 of 2 requests (0 failed)" in text.stdout and "TPOT" in text.stdout


def test_failures_are_counted(repo_root, tmp_path):
    """Nothing listens: every request fails, the exit status says so."""
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    r = subprocess.run([sys.executable, str(repo_root / "bench" / "serve_load.py"), "--base-url",
                        f"http://127.0.0.1:{port}/v1", "--fixed", "4:2", "--concurrency", "2", "--num-requests", "3",
                        "--json"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    out = json.loads(r.stdout)
    assert out["failures"] == 3 and out["requests"] == 0 and out["ttft_ms_p50"] is None


def test_sharegpt_length_distribution(repo_root):
    """The documented shape: medians about 150 and 140, means about 231 and 204 (clipped to [4, 1024])."""
    tool = load_tool(repo_root)
    lengths = tool.sharegpt_lengths(20000, 0, 4096)
    assert lengths == tool.sharegpt_lengths(20000, 0, 4096) and lengths != tool.sharegpt_lengths(20000, 1, 4096)
    prompt, output = [p for p, _ in lengths], [o for _, o in lengths]
    assert abs(statistics.median(prompt) - 150) < 6 and abs(statistics.median(output) - 140) < 6
    assert abs(statistics.mean(prompt) - 231) < 8 and abs(statistics.mean(output) - 204) < 7
    assert min(prompt) == min(output) == 4 and max(prompt) == max(output) == 1024
    short = tool.sharegpt_lengths(2000, 0, 128)
    assert all(p + o <= 128 and p >= 4 and o >= 1 for p, o in short)


def test_ignore_eos(return_server, repo_root):
    s = return_server
    base = {"model": "m", "prompt": [1, 2, 3], "max_tokens": 8, "temperature": 0}
    status, r = s.post("/completions", base)
    assert status == 200 and r["usage"]["completion_tokens"] == 1 and r["choices"][0]["finish_reason"] == "stop"
    status, r = s.post("/completions", dict(base, ignore_eos=True))
    assert status == 200 and r["usage"]["completion_tokens"] == 8, r
    assert r["choices"][0]["finish_reason"] == "length" and r["choices"][0]["text"] == ""  # <|return|> not shown
    chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, "temperature": 0}
    status, r = s.post("/chat/completions", chat)
    assert status == 200 and r["usage"]["completion_tokens"] == 1
    status, r = s.post("/chat/completions", dict(chat, ignore_eos=True))
    assert status == 200 and r["usage"]["completion_tokens"] == 8
    status, r = s.post("/completions", dict(base, ignore_eos="yes"))
    assert status == 400 and r["error"]["param"] == "ignore_eos"
    # Through the load generator: the lengths asked, though the model would stop at once.
    out = run_tool(repo_root, s.url, "--fixed", "16:6", "--concurrency", "2", "--num-requests", "4")
    assert out["failures"] == 0 and out["output_tokens"] == 4 * 6 and out["length_mismatches"] == 0
    free = run_tool(repo_root, s.url, "--fixed", "16:6", "--concurrency", "2", "--num-requests", "4",
                    "--no-ignore-eos")
    assert free["failures"] == 0 and free["output_tokens"] == 4


def test_listen_backlog_takes_a_burst(server):
    """1,000 requests released at once arrive faster than one accept thread takes them: the kernel must
    complete the handshakes meanwhile (httplib's own backlog of 5 reset some). While the server is stopped
    (SIGSTOP) nothing is accepted, so every connection that completes waits in the backlog."""
    import os
    import selectors
    import socket
    with open("/proc/sys/net/core/somaxconn") as f:  # the kernel's cap on any backlog (4096 since Linux 5.4)
        n = min(300, int(f.read()) - 8)
    socks = []
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        for _ in range(n):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex((server.host, server.port))
            socks.append(s)
        sel = selectors.DefaultSelector()
        for s in socks:
            sel.register(s, selectors.EVENT_WRITE)
        connected, deadline = set(), time.monotonic() + 5
        while len(connected) < n and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=0.2):
                if key.fileobj.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                    connected.add(key.fileobj)
                sel.unregister(key.fileobj)
        sel.close()
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
    assert len(connected) == n, f"{len(connected)} of {n} connections completed while the server was stopped"
    served = 0
    for s in socks:
        s.setblocking(True)
        s.settimeout(30)
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        served += s.recv(64).startswith(b"HTTP/1.1 200")
        s.close()
    assert served == n
