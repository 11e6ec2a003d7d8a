#!/usr/bin/env python3
"""Load generator for `gptoss serve`: N concurrent streaming clients (plain HTTP + SSE from the standard
library, so it runs where pip cannot reach, and its own parsing costs little), each sending R requests one
after another. Reports output tokens/s over the run, time to first token and time per output
token (p50 / p99), as text or one JSON object (--json).

  python bench/serve_load.py --base-url http://127.0.0.1:8000/v1 --clients 8 --requests 4 --max-tokens 256

Time per output token of a request = (last token time - first token time) / (tokens - 1); its decode rate
is the inverse. Tokens are counted by the server (stream_options.include_usage)."""
import argparse
import json
import statistics
import sys
import threading
import time
import http.client
import urllib.parse


def percentile(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    k = (len(xs) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def one_request(base, args, i):
    """One streaming request; returns its timings (perf_counter seconds) and the server's token count."""
    u = urllib.parse.urlparse(base)
    body = {"model": args.model, "max_tokens": args.max_tokens, "temperature": args.temperature, "seed": i,
            "stream": True, "stream_options": {"include_usage": True}}
    if args.endpoint == "completions":
        path, body["prompt"] = "/completions", args.prompt
    else:
        path, body["messages"] = "/chat/completions", [{"role": "user", "content": args.prompt}]
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=3600)
    t0 = time.perf_counter()
    conn.request("POST", u.path.rstrip("/") + path, body=json.dumps(body),
                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {args.api_key}"})
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError(f"HTTP {resp.status}: {resp.read()[:200]!r}")
    first = last = None
    tokens = 0
    while True:
        line = resp.readline()
        if not line:
            break
        if not line.startswith(b"data: "):
            continue
        data = line[6:].strip()
        if data == b"[DONE]":
            break
        now = time.perf_counter()
        ch = json.loads(data)
        if ch.get("usage"):
            tokens = ch["usage"]["completion_tokens"]
        if ch.get("choices"):
            c = ch["choices"][0]
            d = c.get("delta") or {}
            if c.get("text") or d.get("content") or d.get("reasoning_content") or d.get("tool_calls"):
                first = first or now
                last = now
    conn.close()
    return {"ttft": (first - t0) if first else None, "tokens": tokens, "first": first, "last": last,
            "start": t0, "end": time.perf_counter()}


def run(args):
    results, errors = [], []
    lock = threading.Lock()

    def worker(w):
        for r in range(args.requests):
            try:
                res = one_request(args.base_url, args, w * 1000 + r)
                with lock:
                    results.append(res)
            except Exception as e:  # noqa: BLE001 -- counted and reported
                with lock:
                    errors.append(repr(e))

    if args.warmup:
        one_request(args.base_url, args, 999999)
    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(w,)) for w in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ttft = [r["ttft"] for r in results if r["ttft"] is not None]
    tpot = [(r["last"] - r["first"]) / (r["tokens"] - 1) for r in results
            if r["first"] and r["tokens"] > 1 and r["last"] > r["first"]]
    total = sum(r["tokens"] for r in results)
    return {"clients": args.clients, "requests": len(results), "errors": len(errors), "wall_seconds": wall,
            "output_tokens": total, "output_tokens_per_s": total / wall if wall > 0 else 0.0,
            "ttft_p50_s": percentile(ttft, 50), "ttft_p99_s": percentile(ttft, 99),
            "tpot_p50_s": percentile(tpot, 50), "tpot_p99_s": percentile(tpot, 99),
            "decode_tokens_per_s_median": 1 / statistics.median(tpot) if tpot else 0.0,
            "error_samples": errors[:3]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    ap.add_argument("--api-key", default="none")
    ap.add_argument("--model", default="gpt-oss")
    ap.add_argument("--endpoint", choices=["chat", "completions"], default="completions",
                    help="completions: raw text, the model is not asked to stop (default); chat: Harmony")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--requests", type=int, default=2, help="requests per client, one after another")
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--prompt", default="Write a long story about a lighthouse keeper.")
    ap.add_argument("--warmup", action="store_true", help="one request before timing")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    r = run(args)
    if args.json:
        print(json.dumps(r))
    else:
        print(f"{r['clients']} clients, {r['requests']} requests ({r['errors']} errors) in {r['wall_seconds']:.2f} s")
        print(f"output       {r['output_tokens']} tokens, {r['output_tokens_per_s']:.1f} tokens/s")
        print(f"TTFT         p50 {r['ttft_p50_s'] * 1e3:.1f} ms, p99 {r['ttft_p99_s'] * 1e3:.1f} ms")
        print(f"per token    p50 {r['tpot_p50_s'] * 1e3:.2f} ms, p99 {r['tpot_p99_s'] * 1e3:.2f} ms "
              f"(one request's decode: {r['decode_tokens_per_s_median']:.1f} tokens/s median)")
    return 1 if r["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
