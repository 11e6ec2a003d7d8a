"""Token ids of `gptoss tokenize` must equal Hugging Face `tokenizers` and `tiktoken`, byte for byte,
over a generated multilingual corpus (> 5 MB, make_corpus.py), the o200k_base records of
../shared/data/o200k_test_vectors.txt, special tokens, and invalid UTF-8 (our defined behaviour:
valid runs encode as usual, each byte that starts no valid sequence becomes its byte token).

Needs the PyPI packages tiktoken and tokenizers; the CLI is $GPTOSS_BIN (default build/gptoss).
"""

import base64
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
TOKENIZER_JSON = SHARED / "gpt-oss-tokenizer" / "tokenizer.json"
TIKTOKEN_FILE = SHARED / "o200k_base.tiktoken"
VECTORS = SHARED / "o200k_test_vectors.txt"
BIN = Path(os.environ.get("GPTOSS_BIN", REPO / "build" / "gptoss"))

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_corpus  # noqa: E402

O200K_PATTERN = "|".join([
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""\p{N}{1,3}""",
    r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
    r"""\s*[\r\n]+""",
    r"""\s+(?!\S)""",
    r"""\s+""",
])
HARMONY_SPECIALS = {
    "<|startoftext|>": 199998, "<|endoftext|>": 199999, "<|return|>": 200002, "<|constrain|>": 200003,
    "<|channel|>": 200005, "<|start|>": 200006, "<|end|>": 200007, "<|message|>": 200008, "<|call|>": 200012,
    "<|endofprompt|>": 200018,
}


def _require():
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} not found (../shared data files)")
    if not BIN.exists():
        pytest.skip(f"gptoss binary not found at {BIN} (set GPTOSS_BIN)")


@pytest.fixture(scope="module")
def tiktoken_enc():
    _require()
    tiktoken = pytest.importorskip("tiktoken", reason="PyPI package tiktoken not installed")
    ranks = {}
    for line in TIKTOKEN_FILE.read_bytes().splitlines():
        if line:
            tok, rank = line.split()
            ranks[base64.b64decode(tok)] = int(rank)
    return tiktoken.Encoding(name="o200k_local", pat_str=O200K_PATTERN, mergeable_ranks=ranks,
                             special_tokens=HARMONY_SPECIALS)


@pytest.fixture(scope="module")
def hf_tok():
    _require()
    tokenizers = pytest.importorskip("tokenizers", reason="PyPI package tokenizers not installed")
    return tokenizers.Tokenizer.from_file(str(TOKENIZER_JSON))


@pytest.fixture(scope="module")
def corpus():
    docs = make_corpus.samples()
    assert sum(len(d.encode("utf-8")) for d in docs) >= 5_000_000
    return docs


def run_batch(samples_bytes, tokenizer_path, allow_special=False):
    """Encodes each bytes sample with one `gptoss tokenize --hex-lines` process."""
    with tempfile.NamedTemporaryFile("w", suffix=".hex", delete=False) as f:
        for b in samples_bytes:
            f.write(b.hex())
            f.write("\n")
        path = f.name
    try:
        cmd = [str(BIN), "tokenize", "--tokenizer", str(tokenizer_path), "--hex-lines", "--file", path]
        if allow_special:
            cmd.append("--allow-special")
        out = subprocess.run(cmd, check=True, capture_output=True).stdout.decode()
    finally:
        os.unlink(path)
    lines = out.splitlines()
    assert len(lines) == len(samples_bytes)
    return [json.loads(l) for l in lines]


def first_mismatch(ours, theirs, docs):
    for i, (a, b) in enumerate(zip(ours, theirs)):
        if a != b:
            j = next((k for k in range(min(len(a), len(b))) if a[k] != b[k]), min(len(a), len(b)))
            return f"sample {i} differs at token {j}: ours {a[j:j+8]} vs {b[j:j+8]}; text {docs[i]!r:.300}"
    return None


@pytest.mark.parametrize("source", ["tokenizer.json", "tiktoken"])
def test_corpus_matches_tiktoken_and_hf(source, corpus, tiktoken_enc, hf_tok):
    path = TOKENIZER_JSON if source == "tokenizer.json" else TIKTOKEN_FILE
    ours = run_batch([d.encode("utf-8") for d in corpus], path)
    ref_tt = tiktoken_enc.encode_ordinary_batch(corpus)
    assert first_mismatch(ours, ref_tt, corpus) is None, first_mismatch(ours, ref_tt, corpus)
    ref_hf = [e.ids for e in hf_tok.encode_batch(corpus, add_special_tokens=False)]
    assert first_mismatch(ours, ref_hf, corpus) is None, first_mismatch(ours, ref_hf, corpus)


def test_o200k_test_vectors(tiktoken_enc):
    records = []
    name = sample = None
    for line in VECTORS.read_text(encoding="utf-8").split("\n"):
        if line.startswith("EncodingName: "):
            name = line[len("EncodingName: "):]
        elif line.startswith("Sample: "):
            sample = line[len("Sample: "):]
        elif line.startswith("Encoded: ") and name == "o200k_base":
            records.append((sample, json.loads(line[len("Encoded: "):])))
    assert len(records) == 57
    for path in (TOKENIZER_JSON, TIKTOKEN_FILE):
        ours = run_batch([s.encode("utf-8") for s, _ in records], path)
        for (s, want), got in zip(records, ours):
            assert got == want, f"{path.name}: {s!r}"


def test_special_tokens(tiktoken_enc, hf_tok):
    texts = [
        "<|start|>user<|message|>hi<|end|>",
        "a<|endoftext|>b<|endofprompt|> <|call|>",
        "<|<|start|>|> <|notaspecial|> <|return|x",
        "<|channel|>analysis<|message|>Simple question.<|end|><|start|>assistant<|channel|>final",
    ]
    data = [t.encode() for t in texts]
    for path in (TOKENIZER_JSON, TIKTOKEN_FILE):
        allowed = run_batch(data, path, allow_special=True)
        assert allowed == [tiktoken_enc.encode(t, allowed_special="all") for t in texts]
        assert allowed == [e.ids for e in hf_tok.encode_batch(texts, add_special_tokens=False)]
        # Without --allow-special, special strings are ordinary text (no control-token injection).
        ordinary = run_batch(data, path)
        assert ordinary == tiktoken_enc.encode_ordinary_batch(texts)
        assert all(i < 199998 for ids in ordinary for i in ids)


def _reference_invalid(enc, data):
    """Our defined behaviour, with tiktoken doing the valid runs."""
    out = []
    i = 0
    while i < len(data):
        try:
            text = data[i:].decode("utf-8")
            out += enc.encode_ordinary(text)
            break
        except UnicodeDecodeError as e:
            if e.start > 0:
                out += enc.encode_ordinary(data[i:i + e.start].decode("utf-8"))
            out.append(enc.encode_single_token(data[i + e.start:i + e.start + 1]))
            i += e.start + 1
    return out


def test_invalid_utf8(tiktoken_enc):
    samples = make_corpus.invalid_utf8_samples()
    for path in (TOKENIZER_JSON, TIKTOKEN_FILE):
        ours = run_batch(samples, path)
        for data, ids in zip(samples, ours):
            assert ids == _reference_invalid(tiktoken_enc, data), data[:200]
            assert tiktoken_enc.decode_bytes(ids) == data


def test_detokenize_roundtrip_and_errors():
    _require()
    text = "Hello, 世界! 👩‍💻 don't\r\n"
    ids = run_batch([text.encode()], TOKENIZER_JSON)[0]
    out = subprocess.run([str(BIN), "detokenize", "--tokenizer", str(TOKENIZER_JSON), "--tokens",
                          ",".join(map(str, ids))], check=True, capture_output=True).stdout
    assert out == text.encode()
    # 200500 is a model id that tokenizer.json cannot decode (it has 200019 ids) ...
    r = subprocess.run([str(BIN), "detokenize", "--tokenizer", str(TOKENIZER_JSON), "--tokens", "200500"],
                       capture_output=True)
    assert r.returncode != 0 and b"200500" in r.stderr and len(r.stderr.splitlines()) == 1
    # ... but the .tiktoken + o200k_harmony tokenizer has all 201088.
    r = subprocess.run([str(BIN), "detokenize", "--tokenizer", str(TIKTOKEN_FILE), "--tokens", "200500,201087"],
                       check=True, capture_output=True)
    assert r.stdout == b"<|reserved_200500|><|reserved_201087|>"


def test_bad_tokenizer_files(tmp_path):
    _require()
    cases = {
        "empty.json": b"",
        "notjson.json": b"{not json",
        "array.json": b"[]",
        "nomodel.json": b"{}",
        "wordpiece.json": b'{"model": {"type": "WordPiece", "vocab": {}}}',
        "bad.tiktoken": b"!!!! 0\n",
    }
    for name, data in cases.items():
        p = tmp_path / name
        p.write_bytes(data)
        r = subprocess.run([str(BIN), "tokenize", "--tokenizer", str(p), "--text", "hi"], capture_output=True)
        assert r.returncode != 0, name
        assert r.stderr.startswith(b"gptoss: ") and len(r.stderr.splitlines()) == 1, (name, r.stderr)
    r = subprocess.run([str(BIN), "tokenize", "--model", str(tmp_path), "--text", "hi"], capture_output=True)
    assert r.returncode != 0 and b"tokenizer.json" in r.stderr
