#!/usr/bin/env python3
"""Load generator for `gptoss serve` (or any OpenAI-compatible server): N concurrent streaming clients.

Standard library only (http.client, threads), so it runs wherever a Python 3 does, the GPU machine included.
Each client sends its requests one after another with "stream": true and stream_options.include_usage, and
times every chunk: time to first token (TTFT, from sending to the first chunk with text) and time per output
token (TPOT, the rest of the generation over completion_tokens - 1). Prints one summary line and, with --json,
a JSON object: output_tokens_per_s (all clients' completion tokens over the wall time), ttft_ms_p50/p99,
tpot_ms_p50/p99, decode_tokens_per_s_per_client (1000 / tpot_ms_p50).

  bench/serve_load.py --url http://127.0.0.1:8000 --clients 16 --requests 64 --max-tokens 256
  bench/serve_load.py --endpoint chat --clients 1 --requests 4 --json
"""
import argparse
import http.client
import json
import statistics
import sys
import threading
import time
import urllib.parse

WORDS = ("the quick brown fox jumps over a lazy dog while seven wizards quietly judge boxing matches "
         "in a large hall of mirrors near the old river bank").split()


def prompt_text(words, seed):
    return " ".join(WORDS[(seed * 7 + i) % len(WORDS)] for i in range(words))


def percentile(values, p):
    if not values:
        return float("nan")
    v = sorted(values)
    k = (len(v) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def one_request(url, args, seed, headers):
    """Runs one streaming request; returns (ttft_s, tpot_s or None, completion_tokens, prompt_tokens)."""
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=args.timeout)
    text = prompt_text(args.prompt_words, seed)
    body = {"model": "gptoss", "max_tokens": args.max_tokens, "temperature": args.temperature, "stream": True,
            "stream_options": {"include_usage": True}}
    if args.temperature > 0:
        body["seed"] = seed
    if args.endpoint == "chat":
        path = "/v1/chat/completions"
        body["messages"] = [{"role": "user", "content": text}]
    else:
        path = "/v1/completions"
        body["prompt"] = text
    t0 = time.perf_counter()
    conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json", **headers})
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError(f"HTTP {resp.status}: {resp.read()[:300]!r}")
    first = last = None
    usage = None
    for raw in resp:
        line = raw.decode("utf-8", "replace").strip()
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            break
        chunk = json.loads(data)
        if chunk.get("usage"):
            usage = chunk["usage"]
        for ch in chunk.get("choices") or []:
            piece = ch.get("text") if args.endpoint == "completions" else None
            if piece is None:
                d = ch.get("delta") or {}
                piece = (d.get("content") or "") + (d.get("reasoning_content") or "") + json.dumps(d.get("tool_calls") or "")
            if piece:
                now = time.perf_counter()
                first = first if first is not None else now
                last = now
    conn.close()
    if usage is None:
        raise RuntimeError("no usage chunk (stream_options.include_usage)")
    n = int(usage["completion_tokens"])
    ttft = (first if first is not None else time.perf_counter()) - t0
    tpot = (last - first) / (n - 1) if first is not None and n > 1 else None
    return ttft, tpot, n, int(usage["prompt_tokens"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--endpoint", choices=["completions", "chat"], default="completions",
                    help="completions: raw text, one chunk per token (the timing reference); chat: Harmony")
    ap.add_argument("--clients", type=int, default=1)
    ap.add_argument("--requests", type=int, default=None, help="total requests (default: 2 per client)")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--prompt-words", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--api-key", default=None)
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    total = args.requests or 2 * args.clients
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}

    results, errors = [], []
    lock = threading.Lock()
    next_id = [0]

    def client():
        while True:
            with lock:
                i = next_id[0]
                if i >= total:
                    return
                next_id[0] += 1
            try:
                r = one_request(args.url, args, i, headers)
                with lock:
                    results.append(r)
            except Exception as e:  # reported, not raised: one failure must not hide the others' numbers
                with lock:
                    errors.append(str(e))

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0

    out_tokens = sum(r[2] for r in results)
    in_tokens = sum(r[3] for r in results)
    ttft = [r[0] * 1e3 for r in results]
    tpot = [r[1] * 1e3 for r in results if r[1] is not None]
    summary = {
        "clients": args.clients, "requests": len(results), "errors": len(errors), "endpoint": args.endpoint,
        "max_tokens": args.max_tokens, "wall_s": wall, "prompt_tokens": in_tokens, "output_tokens": out_tokens,
        "output_tokens_per_s": out_tokens / wall if wall > 0 else 0.0,
        "total_tokens_per_s": (in_tokens + out_tokens) / wall if wall > 0 else 0.0,
        "ttft_ms_p50": percentile(ttft, 50), "ttft_ms_p99": percentile(ttft, 99),
        "tpot_ms_p50": percentile(tpot, 50), "tpot_ms_p99": percentile(tpot, 99),
        "decode_tokens_per_s_per_client": 1e3 / statistics.median(tpot) if tpot else 0.0,
    }
    if errors:
        summary["first_error"] = errors[0]
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{len(results)} requests ({len(errors)} failed) from {args.clients} clients in {wall:.2f} s: "
              f"{summary['output_tokens_per_s']:.1f} output tokens/s; TTFT p50 {summary['ttft_ms_p50']:.1f} ms "
              f"p99 {summary['ttft_ms_p99']:.1f}; TPOT p50 {summary['tpot_ms_p50']:.2f} ms p99 "
              f"{summary['tpot_ms_p99']:.2f} ({summary['decode_tokens_per_s_per_client']:.1f} tokens/s per client)")
    return 1 if errors or not results else 0


if __name__ == "__main__":
    sys.exit(main())
