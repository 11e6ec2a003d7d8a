"""Single-thread encode throughput: gptoss's tokenizer (bench_tokenizer executable) vs tiktoken, on the
same corpus (tests/py/make_corpus.py, ~5.3 MB of documents, each encoded separately).

Usage: python3 bench/bench_tokenizer.py [BUILD_DIR] [REPEATS]
Build first: cmake --build BUILD_DIR --target bench_tokenizer. Needs the PyPI package tiktoken.
"""

import base64
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO / "tests" / "py"))
import make_corpus  # noqa: E402
from test_tokenizer import O200K_PATTERN  # noqa: E402


def main():
    build = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "build"
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    import tiktoken

    docs = make_corpus.samples()
    data = [d.encode("utf-8") for d in docs]
    total = sum(map(len, data))
    with tempfile.NamedTemporaryFile(suffix=".corpus", delete=False) as f:
        f.write(b"\0".join(data))
        path = f.name
    try:
        for tok in (SHARED / "o200k_base.tiktoken", SHARED / "gpt-oss-tokenizer" / "tokenizer.json"):
            out = subprocess.run([str(build / "bench_tokenizer"), str(tok), path, str(repeats)], check=True,
                                 capture_output=True, text=True).stdout.strip()
            print(f"{tok.name}: {out}")
        ours = float(re.search(r"([0-9.]+) MB/s", out).group(1))
    finally:
        os.unlink(path)

    ranks = {}
    for line in (SHARED / "o200k_base.tiktoken").read_bytes().splitlines():
        if line:
            t, r = line.split()
            ranks[base64.b64decode(t)] = int(r)
    enc = tiktoken.Encoding(name="o200k_local", pat_str=O200K_PATTERN, mergeable_ranks=ranks, special_tokens={})
    best = 1e30
    for _ in range(repeats):
        t0 = time.perf_counter()
        n = sum(len(enc.encode_ordinary(d)) for d in docs)
        best = min(best, time.perf_counter() - t0)
    theirs = total / 1e6 / best
    print(f"tiktoken {tiktoken.__version__}: {len(docs)} docs, {total / 1e6:.2f} MB, {n} tokens, best of {repeats}: "
          f"{best:.3f} s, {theirs:.2f} MB/s")
    print(f"ratio gptoss / tiktoken: {ours / theirs:.2f}")


if __name__ == "__main__":
    main()
