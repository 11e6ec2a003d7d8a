#!/usr/bin/env python3
"""Load generator for `gptoss serve` and any OpenAI-compatible server (vLLM, llama-server, ...): streaming
clients in plain HTTP + SSE from the standard library (it runs where pip cannot reach, and its own parsing
costs little). Three workloads:

  text (default)   N clients (--clients) each send R requests (--requests) one after another, one text
                   prompt (--prompt), up to --max-tokens each; chat or raw completions (--endpoint).
  --fixed P:O      N clients (--concurrency) send requests back to back, each a prompt of exactly P token
                   ids and exactly O output tokens (max_tokens with ignore_eos), --num-requests in all
                   (default N x --requests).
  --workload sharegpt
                   --num-requests prompts with ShareGPT-like lengths (below), released at once
                   (--request-rate inf, the default) or as a Poisson process of that many requests per
                   second, at most --max-concurrency in flight (default: no limit).

  python bench/serve_load.py --base-url http://127.0.0.1:8000/v1 --clients 8 --requests 4 --max-tokens 256
  python bench/serve_load.py --fixed 512:256 --concurrency 64 --num-requests 256 --json
  python bench/serve_load.py --workload sharegpt --num-requests 1000 --request-rate inf --seed 0 --json

Token-id workloads use /v1/completions with `prompt` a list of token ids (random ordinary tokens of
[0, --vocab-size), seeded per request, so no two prompts share a prefix) and `ignore_eos: true` (vLLM's
extension, which gptoss serve has too), so the server runs exactly the drawn lengths; --no-ignore-eos
leaves the model free to stop early.

ShareGPT-like lengths (an approximation, not the dataset): prompt and output lengths are log-normal,
prompt median 150 tokens (sigma 1.0), output median 140 (sigma 0.9), rounded and clipped to [4, 1024]
each, the output also to the context left after the prompt (--max-context). Clipped this way the means
over many draws are about 231 prompt and 204 output tokens, matching the averages vLLM's benchmark
reports for 1,000 ShareGPT prompts (about 230 and 203 per request); the shapes (sigma) are our choice,
not fitted to the dataset.

Reported (text, or one JSON object with --json): output and total tokens/s, requests/s, time to first
token (TTFT: from sending the request to the first text), time per output token (TPOT, excluding the
first: (last text time - first text time) / (output tokens - 1) per request), end-to-end latency, p50
and p99, failures. Tokens are the server's counts (stream_options.include_usage). --save-requests FILE
writes one JSON line per request (asked and counted lengths, timings). One client process parses some
30,000 streamed tokens/s on a loaded 2-core machine; past that, --processes K shares the requests among K
processes (timestamps from one monotonic clock) so that the client is not what is measured."""
import argparse
import json
import math
import multiprocessing
import random
import statistics
import sys
import threading
import time
import http.client
import urllib.parse

SHAREGPT_PROMPT = (math.log(150), 1.0)  # (mu, sigma) of ln(length)
SHAREGPT_OUTPUT = (math.log(140), 0.9)
SHAREGPT_MIN, SHAREGPT_MAX = 4, 1024


def percentile(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    k = (len(xs) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def token_prompt(seed, i, n, vocab):
    """n random token ids of [0, vocab) for request i: the same for the same seed, whatever the rate."""
    r = random.Random(f"{seed}/prompt/{i}")
    return [r.randrange(vocab) for _ in range(n)]


def sharegpt_lengths(n, seed, max_context):
    """[(prompt_len, output_len)] * n: the log-normal draws above, clipped."""
    r = random.Random(f"{seed}/lengths")
    out = []
    for _ in range(n):
        p = min(max(round(r.lognormvariate(*SHAREGPT_PROMPT)), SHAREGPT_MIN), SHAREGPT_MAX, max_context - 1)
        o = round(r.lognormvariate(*SHAREGPT_OUTPUT))
        o = max(1, min(max(o, SHAREGPT_MIN), SHAREGPT_MAX, max_context - p))
        out.append((p, o))
    return out


class Request:
    """One request to send: the body and what was asked of it."""

    def __init__(self, index, body, path, prompt_len=None, output_len=None):
        self.index, self.body, self.path = index, body, path
        self.prompt_len, self.output_len = prompt_len, output_len  # None: text workload, nothing exact asked


def make_requests(args):
    """The workload's requests, in the order they are released."""
    common = {"model": args.model, "temperature": args.temperature, "stream": True,
              "stream_options": {"include_usage": True}}
    reqs = []
    if args.fixed or args.workload == "sharegpt":
        if args.fixed:
            n = args.num_requests or args.clients * args.requests
            lengths = [args.fixed] * n
        else:
            lengths = sharegpt_lengths(args.num_requests or 1000, args.seed, args.max_context)
        for i, (p, o) in enumerate(lengths):
            body = dict(common, prompt=token_prompt(args.seed, i, p, args.vocab_size), max_tokens=o, seed=i)
            if args.ignore_eos:
                body["ignore_eos"] = True
            reqs.append(Request(i, body, "/completions", p, o))
        return reqs
    for i in range(args.clients * args.requests):
        body = dict(common, max_tokens=args.max_tokens, seed=i)
        if args.endpoint == "completions":
            body["prompt"], path = args.prompt, "/completions"
        else:
            body["messages"], path = [{"role": "user", "content": args.prompt}], "/chat/completions"
        reqs.append(Request(i, body, path))
    return reqs


def one_request(args, req):
    """Sends one streaming request; returns its timings (perf_counter seconds) and the server's counts."""
    u = urllib.parse.urlparse(args.base_url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=args.timeout)
    try:
        t0 = time.perf_counter()
        conn.request("POST", u.path.rstrip("/") + req.path, body=json.dumps(req.body),
                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {args.api_key}"})
        resp = conn.getresponse()
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {resp.read()[:200]!r}")
        first = last = None
        usage = None
        chunks = 0
        done = False
        while True:
            line = resp.readline()
            if not line:
                break
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                done = True
                break
            now = time.perf_counter()
            ch = json.loads(data)
            if ch.get("error"):
                raise RuntimeError(f"error in the stream: {str(ch['error'])[:200]}")
            if ch.get("usage"):
                usage = ch["usage"]
            if ch.get("choices"):
                c = ch["choices"][0]
                d = c.get("delta") or {}
                if c.get("text") or d.get("content") or d.get("reasoning_content") or d.get("tool_calls"):
                    first = first or now
                    last = now
                    chunks += 1
        if not done:
            raise RuntimeError("the stream ended without data: [DONE]")
    finally:
        conn.close()
    return {"index": req.index, "prompt_tokens_asked": req.prompt_len, "output_tokens_asked": req.output_len,
            "prompt_tokens": usage.get("prompt_tokens") if usage else None,
            "output_tokens": usage["completion_tokens"] if usage else chunks, "usage": usage is not None,
            "start": t0, "first": first, "last": last, "end": time.perf_counter()}


def open_loop(args):
    """Requests released on a schedule (sharegpt), not by clients waiting for their last answer."""
    return args.workload == "sharegpt" and not args.fixed


def run_lane(args, lane, t_start, scheduled):
    """One process's share: open loop, [(due offset in s, Request)]; closed loop, [[Request] per client].
    Returns (results, errors)."""
    results, errors = [], []
    lock = threading.Lock()

    def send(req):
        try:
            res = one_request(args, req)
            with lock:
                results.append(res)
        except Exception as e:  # noqa: BLE001 -- counted and reported
            with lock:
                errors.append(repr(e))

    threading.stack_size(512 * 1024)  # up to --num-requests threads at once
    time.sleep(max(0.0, t_start - time.perf_counter()))
    threads = []
    if scheduled:
        limit = math.ceil(args.max_concurrency / args.processes) if args.max_concurrency else 0
        slots = threading.Semaphore(limit) if limit else None

        def go(req):
            try:
                send(req)
            finally:
                if slots:
                    slots.release()
        for due, req in lane:
            time.sleep(max(0.0, t_start + due - time.perf_counter()))
            if slots:
                slots.acquire()
            threads.append(threading.Thread(target=go, args=(req,)))
            threads[-1].start()
    else:
        def client(queue):
            for req in queue:
                send(req)
        threads = [threading.Thread(target=client, args=(q,)) for q in lane]
        for t in threads:
            t.start()
    for t in threads:
        t.join()
    return results, errors


def lane_process(args, lane, t_start, scheduled, out):
    out.put(run_lane(args, lane, t_start, scheduled))


def run(args):
    reqs = make_requests(args)
    if args.warmup:  # a prompt of its own: a server's prefix cache must not hold request 0's
        warm = dict(reqs[0].body, seed=999999)
        if isinstance(warm.get("prompt"), list):
            warm["prompt"] = token_prompt(args.seed, "warmup", len(warm["prompt"]), args.vocab_size)
        one_request(args, Request(-1, warm, reqs[0].path))
    k = args.processes
    if open_loop(args):
        # Released at once or at Poisson arrival times (seeded), at most --max-concurrency in flight.
        arrivals = random.Random(f"{args.seed}/arrivals")
        due, dues = 0.0, []
        for _ in reqs:
            if args.request_rate != math.inf:
                due += arrivals.expovariate(args.request_rate)
            dues.append(due)
        lanes = [list(zip(dues[i::k], reqs[i::k])) for i in range(k)]
    else:
        # Closed loop: client j sends requests j, j + N, j + 2N, ... each when the last one ended.
        n = args.clients
        lanes = [[reqs[j::n] for j in range(i, n, k)] for i in range(k)]
    if k == 1:
        t_start = time.perf_counter()
        results, errors = run_lane(args, lanes[0], t_start, open_loop(args))
    else:
        # perf_counter is CLOCK_MONOTONIC, one clock for all processes: they start together at t_start.
        ctx = multiprocessing.get_context("fork")
        out = ctx.Queue()
        t_start = time.perf_counter() + 0.5
        procs = [ctx.Process(target=lane_process, args=(args, lane, t_start, open_loop(args), out)) for lane in lanes]
        for p in procs:
            p.start()
        results, errors = [], []
        for _ in procs:
            r, e = out.get()
            results += r
            errors += e
        for p in procs:
            p.join()
    wall = time.perf_counter() - t_start
    return summarize(args, reqs, results, errors, wall)


def summarize(args, reqs, results, errors, wall):
    results.sort(key=lambda r: r["index"])
    ttft = [r["first"] - r["start"] for r in results if r["first"] is not None]
    tpot = [(r["last"] - r["first"]) / (r["output_tokens"] - 1) for r in results
            if r["first"] is not None and r["output_tokens"] > 1 and r["last"] > r["first"]]
    latency = [r["end"] - r["start"] for r in results]
    out_tokens = sum(r["output_tokens"] for r in results)
    prompt_tokens = sum(r["prompt_tokens"] or 0 for r in results)

    def mismatch(r):
        if r["prompt_tokens_asked"] is None:
            return False
        return (r["prompt_tokens"] != r["prompt_tokens_asked"] or
                (args.ignore_eos and r["output_tokens"] != r["output_tokens_asked"]))

    ms = 1e3
    per_s = (lambda x: x / wall) if wall > 0 else (lambda x: 0.0)
    workload = f"fixed {args.fixed[0]}:{args.fixed[1]}" if args.fixed else args.workload
    r = {
        "workload": workload, "clients": None if open_loop(args) else args.clients,
        "request_rate": "inf" if args.request_rate == math.inf else args.request_rate,
        "max_concurrency": args.max_concurrency, "seed": args.seed, "processes": args.processes,
        "num_requests": len(reqs), "requests": len(results), "errors": len(errors), "failures": len(errors),
        "wall_seconds": wall, "duration_s": wall,
        "prompt_tokens": prompt_tokens, "output_tokens": out_tokens,
        "prompt_tokens_requested": sum(q.prompt_len or 0 for q in reqs),
        "output_tokens_requested": sum(q.output_len or 0 for q in reqs),
        "length_mismatches": sum(1 for r in results if mismatch(r)),
        "usage_missing": sum(1 for r in results if not r["usage"]),
        "requests_per_s": per_s(len(results)),
        "output_tokens_per_s": per_s(out_tokens), "total_tokens_per_s": per_s(out_tokens + prompt_tokens),
        "ttft_ms_p50": percentile(ttft, 50) * ms, "ttft_ms_p99": percentile(ttft, 99) * ms,
        "ttft_ms_mean": statistics.mean(ttft) * ms if ttft else float("nan"),
        "tpot_ms_p50": percentile(tpot, 50) * ms, "tpot_ms_p99": percentile(tpot, 99) * ms,
        "tpot_ms_mean": statistics.mean(tpot) * ms if tpot else float("nan"),
        "latency_ms_p50": percentile(latency, 50) * ms, "latency_ms_p99": percentile(latency, 99) * ms,
        # The keys of the first version (bench/serve_vs_bench.sh and scripts/gpu-check.sh read them).
        "ttft_p50_s": percentile(ttft, 50), "ttft_p99_s": percentile(ttft, 99),
        "tpot_p50_s": percentile(tpot, 50), "tpot_p99_s": percentile(tpot, 99),
        "decode_tokens_per_s_median": 1 / statistics.median(tpot) if tpot else 0.0,
        "error_samples": errors[:3],
    }
    if args.save_requests:
        with open(args.save_requests, "w") as f:
            for x in results:
                f.write(json.dumps({k: x[k] for k in ("index", "prompt_tokens_asked", "output_tokens_asked",
                                                      "prompt_tokens", "output_tokens")} |
                                   {"ttft_s": x["first"] - x["start"] if x["first"] is not None else None,
                                    "latency_s": x["end"] - x["start"]}) + "\n")
    return r


def fixed_lengths(text):
    try:
        p, o = (int(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected PROMPT_LEN:OUTPUT_LEN (two integers), got {text!r}")
    if p < 1 or o < 1:
        raise argparse.ArgumentTypeError(f"lengths must be >= 1, got {text!r}")
    return p, o


def rate(text):
    v = float(text)
    if not v > 0:
        raise argparse.ArgumentTypeError(f"--request-rate must be > 0 or inf, got {text!r}")
    return v


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    ap.add_argument("--api-key", default="none")
    ap.add_argument("--model", default="gpt-oss")
    ap.add_argument("--workload", choices=["text", "sharegpt"], default="text")
    ap.add_argument("--fixed", type=fixed_lengths, metavar="PROMPT_LEN:OUTPUT_LEN",
                    help="fixed-length token-id requests from --concurrency clients back to back")
    ap.add_argument("--clients", "--concurrency", dest="clients", type=int, default=4,
                    help="closed-loop clients (text and --fixed)")
    ap.add_argument("--requests", type=int, default=2, help="requests per client (text; --fixed's default)")
    ap.add_argument("--num-requests", type=int, help="requests in all (sharegpt: default 1000; --fixed)")
    ap.add_argument("--request-rate", type=rate, default=math.inf,
                    help="sharegpt: Poisson arrivals per second, or inf (default): all at once")
    ap.add_argument("--max-concurrency", type=int, default=0, help="sharegpt: requests in flight at most (0: all)")
    ap.add_argument("--max-context", type=int, default=4096,
                    help="the server's context per sequence: sharegpt lengths are clipped to it (default 4096)")
    ap.add_argument("--vocab-size", type=int, default=199998,
                    help="prompt ids are drawn from [0, N) (default: o200k's ordinary tokens)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-ignore-eos", dest="ignore_eos", action="store_false",
                    help="token-id workloads: do not send ignore_eos (the model may stop before max_tokens)")
    ap.add_argument("--endpoint", choices=["chat", "completions"], default="completions",
                    help="text workload: completions: raw text, the model is not asked to stop (default); "
                         "chat: Harmony")
    ap.add_argument("--max-tokens", type=int, default=256, help="text workload")
    ap.add_argument("--prompt", default="Write a long story about a lighthouse keeper.", help="text workload")
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--processes", type=int, default=1,
                    help="client processes sharing the requests (one Python process parses some 30,000 "
                         "chunks/s; use more when the server is faster than that); --max-concurrency is split")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds a request may wait for the server")
    ap.add_argument("--warmup", action="store_true", help="one request before timing")
    ap.add_argument("--save-requests", metavar="FILE", help="one JSON line per request")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    for name in ("clients", "requests", "num_requests", "max_context", "vocab_size", "processes"):
        v = getattr(args, name)
        if v is not None and v < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1, got {v}")
    if args.max_context < 2 * SHAREGPT_MIN:
        ap.error(f"--max-context must be >= {2 * SHAREGPT_MIN}, got {args.max_context}")
    if args.fixed and args.workload == "sharegpt":
        ap.error("--fixed and --workload sharegpt are two workloads; give one")
    if not (args.fixed or args.workload == "sharegpt"):
        args.ignore_eos = False  # the text workload asks nothing exact
    r = run(args)
    if args.json:  # no timings (no text arrived): null, not NaN, which strict JSON readers refuse
        print(json.dumps({k: None if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()}))
    else:
        print(f"{r['workload']}: {r['requests']} of {r['num_requests']} requests ({r['failures']} failed) "
              f"in {r['duration_s']:.2f} s, {r['requests_per_s']:.2f} requests/s")
        print(f"tokens       {r['prompt_tokens']} prompt, {r['output_tokens']} output; "
              f"{r['output_tokens_per_s']:.1f} output tokens/s, {r['total_tokens_per_s']:.1f} total tokens/s")
        if r["length_mismatches"]:
            print(f"             {r['length_mismatches']} requests did not get the lengths asked")
        print(f"TTFT         p50 {r['ttft_ms_p50']:.1f} ms, p99 {r['ttft_ms_p99']:.1f} ms")
        print(f"TPOT         p50 {r['tpot_ms_p50']:.2f} ms, p99 {r['tpot_ms_p99']:.2f} ms "
              f"(one request's decode: {r['decode_tokens_per_s_median']:.1f} tokens/s median)")
        print(f"latency      p50 {r['latency_ms_p50']:.0f} ms, p99 {r['latency_ms_p99']:.0f} ms")
        for e in r["error_samples"]:
            print(f"error        {e}")
    return 1 if r["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
