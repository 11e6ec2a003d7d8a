"""The bad-input battery for files (issue 17): crafted configs, hostile JSON, special files, corrupted
native checkpoints, lenient safetensors, truncated shards and unsafe --force targets.

Every case runs the CLI through badinput.run_bad (timeout, address-space limit, non-zero exit, no
signal, one "gptoss: error: " line on stderr) and then checks that nothing was left behind: the
directory holding the input and the output is exactly as it was before the run.
"""
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from badinput import run_bad

# ---- fixtures: small generated checkpoints -----------------------------------------------------


@pytest.fixture(scope="session")
def made(tmp_path_factory, gptoss_bin, tool_bin):
    """{"hf": DIR, "original": DIR (holding original/), "native": DIR}, each a tiny 4-layer model."""
    root = tmp_path_factory.mktemp("bad_inputs_src")
    mk = tool_bin("make-checkpoint")
    subprocess.run([str(mk), str(root / "hf"), "--preset", "tiny"], check=True, capture_output=True)
    subprocess.run([str(mk), str(root / "orig"), "--preset", "tiny", "--layout", "original"], check=True,
                   capture_output=True)
    subprocess.run([str(gptoss_bin), "convert", "--model-path", str(root / "hf"), "-o", str(root / "native"), "-q"],
                   check=True, capture_output=True)
    return {"hf": root / "hf", "original": root / "orig", "native": root / "native"}


@pytest.fixture
def work(tmp_path):
    """A scratch directory whose tree is compared before and after each bad run."""
    return tmp_path


def copy_model(made, kind, work):
    d = work / kind
    shutil.copytree(made[kind], d, symlinks=True)
    return d


def tree(root):
    return sorted(str(p.relative_to(root)) for p in Path(root).rglob("*"))


def fail_cleanly(cmd, root, timeout=30):
    """run_bad + nothing created or removed under root (no output dir, no .tmp-PID, no partial file)."""
    before = tree(root)
    p = run_bad(cmd, timeout=timeout)
    after = tree(root)
    assert after == before, f"files changed under {root}: +{sorted(set(after) - set(before))} " \
                            f"-{sorted(set(before) - set(after))}"
    return p.stderr.strip()


def convert_cmd(gptoss_bin, model, out, *extra):
    return [gptoss_bin, "convert", "--model-path", model, "-o", out, "-q", *extra]


def verify_cmd(gptoss_bin, model):
    return [gptoss_bin, "verify", "--model", model, "--device", "cpu"]


def edit_config(d, sub="", **changes):
    p = Path(d) / sub / "config.json"
    c = json.loads(p.read_text())
    for k, v in changes.items():
        if v is None:
            c.pop(k, None)
        else:
            c[k] = v
    p.write_text(json.dumps(c))


def read_header(path):
    raw = Path(path).read_bytes()
    n = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def write_shard(path, header, data):
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    Path(path).write_bytes(len(h).to_bytes(8, "little") + h + data)


def rewrite_tensors(path, edit):
    """Rewrites a shard tensor by tensor: edit(name, dtype, shape) returns a new (dtype, shape) or None to
    keep it; changed tensors get zero bytes. The result is a valid (tiled) safetensors file."""
    h, data = read_header(path)
    out_h, out = {"__metadata__": h.get("__metadata__", {})}, bytearray()
    size = {"BF16": 2, "F32": 4, "U8": 1}
    for name in sorted((k for k in h if k != "__metadata__"), key=lambda k: h[k]["data_offsets"][0]):
        v = h[name]
        new = edit(name, v["dtype"], v["shape"])
        if new is None:
            a, b = v["data_offsets"]
            blob = data[a:b]
        else:
            dt, shape = new
            v = {"dtype": dt, "shape": shape}
            n = size[dt]
            for d in shape:
                n *= d
            blob = bytes(n)
        out_h[name] = {"dtype": v["dtype"], "shape": v["shape"], "data_offsets": [len(out), len(out) + len(blob)]}
        out += blob
    write_shard(path, out_h, bytes(out))


def deep(n):
    return "[" * n + "]" * n


# ---- item 2 and 4: config values that overflowed, wrapped or exhausted memory ------------------

# heads x head_dim = 65536 x 65536 = 2^32: wrapped to 0 in 32-bit int, so tensors shaped [0, H] passed
# every check and verify wrote past a buffer (SIGSEGV).
WRAP = {"num_attention_heads": 65536, "num_key_value_heads": 65536, "head_dim": 65536}

CONFIG_CASES = {
    "heads-x-head-dim-wraps": (WRAP, "head_dim"),
    "layers-1e8-no-layer-types": ({"num_hidden_layers": 100_000_000, "layer_types": None}, "num_hidden_layers"),
    "sliding-window-int-max": ({"sliding_window": 2**31 - 1}, "sliding_window"),
    "vocab-int-max": ({"vocab_size": 2**31 - 1}, "vocab_size"),
    "hidden-huge": ({"hidden_size": 2**31 - 32}, "hidden_size"),
    "intermediate-huge": ({"intermediate_size": 2**31 - 32}, "intermediate_size"),
    "experts-int-max": ({"num_local_experts": 2**31 - 1}, "num_local_experts"),
    "top-k-above-experts": ({"num_experts_per_tok": 9}, "num_experts_per_tok"),
    "max-positions-int-max": ({"max_position_embeddings": 2**31 - 1}, "max_position_embeddings"),
    "layers-u64-max": ({"num_hidden_layers": 2**64 - 1}, "num_hidden_layers"),
    "negative-kv-heads": ({"num_key_value_heads": -2}, "num_key_value_heads"),
    "layer-types-wrong-length": ({"layer_types": ["full_attention"]}, "layer_types"),
    "rope-factor-negative": ({"rope_scaling": {"rope_type": "yarn", "factor": -1.0}}, "factor"),
    "rms-eps-zero": ({"rms_norm_eps": 0.0}, "rms_norm_eps"),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_config_value_verify(gptoss_bin, made, work, case):
    changes, field = CONFIG_CASES[case]
    m = copy_model(made, "hf", work)
    edit_config(m, **changes)
    err = fail_cleanly(verify_cmd(gptoss_bin, m), work)
    assert field in err and "config.json" in err, err


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_config_value_convert(gptoss_bin, made, work, case):
    changes, field = CONFIG_CASES[case]
    m = copy_model(made, "hf", work)
    edit_config(m, **changes)
    err = fail_cleanly(convert_cmd(gptoss_bin, m, work / "out"), work)
    assert field in err, err


def _wrapped_hf(name, dt, shape):
    """Tensors shaped to the wrapped sizes: q/k/v/o with 0 rows or columns, 65536 sinks."""
    if any(p in name for p in ("q_proj", "k_proj", "v_proj")):
        return dt, [0] + shape[1:]
    if "o_proj.weight" in name:
        return dt, [shape[0], 0]
    if name.endswith("sinks"):
        return dt, [65536]
    return None


def _wrapped_original(name, dt, shape):
    if "attn.qkv" in name:
        return dt, [0] + shape[1:]
    if name.endswith("attn.out.weight"):
        return dt, [shape[0], 0]
    if name.endswith("attn.sinks"):
        return dt, [65536]
    return None


def test_config_wrap_with_matching_tensors(gptoss_bin, made, work):
    """With tensors shaped to the wrapped value every shape check passed: verify wrote past a buffer
    (SIGSEGV) and convert wrote a "valid" checkpoint of it."""
    m = copy_model(made, "hf", work)
    edit_config(m, **WRAP)
    rewrite_tensors(m / "model.safetensors", _wrapped_hf)
    for cmd in (verify_cmd(gptoss_bin, m), convert_cmd(gptoss_bin, m, work / "out")):
        err = fail_cleanly(cmd, work)
        assert "head_dim" in err, err


def test_config_wrap_original_layout(gptoss_bin, made, work):
    """The original layout sliced the fused qkv by rows = q + 2 kv = 0 after the wrap: SIGFPE."""
    m = copy_model(made, "original", work)
    edit_config(m, "original", **WRAP)
    rewrite_tensors(m / "original" / "model.safetensors", _wrapped_original)
    for cmd in (verify_cmd(gptoss_bin, m), convert_cmd(gptoss_bin, m, work / "out")):
        err = fail_cleanly(cmd, work)
        assert "head_dim" in err, err


def test_config_original_context_overflow(gptoss_bin, made, work):
    """initial_context_length x rope_scaling_factor became an int through an overflowing cast."""
    m = copy_model(made, "original", work)
    edit_config(m, "original", initial_context_length=4096, rope_scaling_factor=1e300)
    err = fail_cleanly(convert_cmd(gptoss_bin, m, work / "out"), work)
    assert "rope_scaling_factor" in err, err


# ---- item 3: nested JSON, long values, duplicate keys --------------------------------------------

def test_config_deeply_nested_value(gptoss_bin, made, work):
    """Formatting the error serialized the whole 100k-deep value recursively: stack overflow."""
    m = copy_model(made, "hf", work)
    c = json.loads((m / "config.json").read_text())
    text = json.dumps(c).replace('"hidden_size": 128', '"hidden_size": ' + deep(100_000))
    (m / "config.json").write_text(text)
    for cmd in (verify_cmd(gptoss_bin, m), convert_cmd(gptoss_bin, m, work / "out")):
        err = fail_cleanly(cmd, work)
        assert "nested deeper" in err, err


def test_config_is_deeply_nested(gptoss_bin, made, work):
    m = copy_model(made, "hf", work)
    (m / "config.json").write_text(deep(100_000))
    fail_cleanly(convert_cmd(gptoss_bin, m, work / "out"), work)


def test_config_long_string_value(gptoss_bin, made, work):
    m = copy_model(made, "hf", work)
    edit_config(m, hidden_size="x" * 1_000_000)
    err = fail_cleanly(convert_cmd(gptoss_bin, m, work / "out"), work)
    assert "hidden_size" in err and len(err) < 400, err


def test_config_duplicate_key(gptoss_bin, made, work):
    """nlohmann kept one of two values silently."""
    m = copy_model(made, "hf", work)
    text = (m / "config.json").read_text()
    (m / "config.json").write_text(text.replace("{", '{"hidden_size": 4096, ', 1))
    err = fail_cleanly(convert_cmd(gptoss_bin, m, work / "out"), work)
    assert "appears twice" in err, err


def test_index_deeply_nested(gptoss_bin, made, work):
    m = copy_model(made, "hf", work)
    (m / "model.safetensors.index.json").write_text('{"weight_map": ' + deep(100_000) + "}")
    fail_cleanly(convert_cmd(gptoss_bin, m, work / "out"), work)


def test_manifest_deeply_nested(gptoss_bin, made, work):
    m = copy_model(made, "native", work)
    (m / "gptoss.json").write_text('{"format": "gptoss-native", "tensors": ' + deep(100_000) + "}")
    for cmd in (verify_cmd(gptoss_bin, m), convert_cmd(gptoss_bin, m, work / "out")):
        fail_cleanly(cmd, work)


def test_safetensors_header_deeply_nested(gptoss_bin, made, work):
    m = copy_model(made, "hf", work)
    write_shard(m / "model.safetensors", ('{"a": ' + deep(100_000) + "}").encode(), b"")
    fail_cleanly(convert_cmd(gptoss_bin, m, work / "out"), work)


# ---- item 5: special files -------------------------------------------------------------------------

def _fifo(path):
    path.unlink()
    os.mkfifo(path)


SPECIAL_CASES = {
    "config-fifo": ("hf", "config.json", _fifo),
    "config-dev-zero": ("hf", "config.json", lambda p: (p.unlink(), p.symlink_to("/dev/zero"))),
    "config-directory": ("hf", "config.json", lambda p: (p.unlink(), p.mkdir())),
    "shard-fifo": ("hf", "model.safetensors", _fifo),
    "shard-dev-zero": ("hf", "model.safetensors", lambda p: (p.unlink(), p.symlink_to("/dev/zero"))),
    "index-fifo": ("native", "model.safetensors.index.json", _fifo),
    "manifest-fifo": ("native", "gptoss.json", _fifo),
    "manifest-dev-zero": ("native", "gptoss.json", lambda p: (p.unlink(), p.symlink_to("/dev/zero"))),
    # A config.json past the 64 MiB cap (sparse: costs no disk).
    "config-over-size-cap": ("hf", "config.json", lambda p: os.truncate(p, 65 << 20)),
}


@pytest.mark.parametrize("case", sorted(SPECIAL_CASES))
def test_special_file(gptoss_bin, made, work, case):
    kind, name, make = SPECIAL_CASES[case]
    m = copy_model(made, kind, work)
    make(m / name)
    for cmd in (convert_cmd(gptoss_bin, m, work / "out"), verify_cmd(gptoss_bin, m)):
        err = fail_cleanly(cmd, work, timeout=20)
        assert name in err, err


@pytest.mark.parametrize("target", ["fifo", "/dev/zero"])
def test_convert_side_file_special(gptoss_bin, made, work, target):
    """convert copies tokenizer.json and the other side files: one that is not a regular file was skipped
    silently (an output without its tokenizer); now it is refused, and the copy is size-capped."""
    m = copy_model(made, "hf", work)
    if target == "fifo":
        os.mkfifo(m / "tokenizer.json")
    else:
        (m / "tokenizer.json").symlink_to(target)
    err = fail_cleanly(convert_cmd(gptoss_bin, m, work / "out"), work, timeout=20)
    assert "tokenizer.json: not a regular file" in err, err


@pytest.mark.parametrize("target", ["fifo", "/dev/zero"])
def test_tokenizer_special_file(gptoss_bin, made, work, target):
    """--tokenizer naming a FIFO blocked in open(); /dev/zero was read until memory ran out."""
    m = copy_model(made, "hf", work)
    tok = work / "tok.json"
    if target == "fifo":
        os.mkfifo(tok)
    else:
        tok.symlink_to(target)
    err = fail_cleanly([gptoss_bin, "generate", "--model", m, "--device", "cpu", "--prompt", "hi", "-n", "1",
                        "--tokenizer", tok], work, timeout=20)
    assert "not a regular file" in err, err


# ---- item 6: integrity of native checkpoints -----------------------------------------------------

def _flip_last_tensor_byte(m):
    s = next(m.glob("model-*.safetensors"))
    b = bytearray(s.read_bytes())
    b[-3] ^= 0xFF
    s.write_bytes(bytes(b))


def test_verify_corrupted_checksum(gptoss_bin, made, work):
    """verify exited 0 on weights that fail their checksums."""
    m = copy_model(made, "native", work)
    _flip_last_tensor_byte(m)
    err = fail_cleanly(verify_cmd(gptoss_bin, m), work)
    assert "lm_head.weight" in err and "checksum" in err, err


@pytest.mark.parametrize("fmt", ["native", "safetensors"])
def test_convert_from_corrupted_native(gptoss_bin, made, work, fmt):
    """convert wrote fresh checksums over the corrupted bytes."""
    m = copy_model(made, "native", work)
    _flip_last_tensor_byte(m)
    err = fail_cleanly(convert_cmd(gptoss_bin, m, work / "out", "--format", fmt), work)
    assert "lm_head.weight" in err and "checksum" in err, err


MANIFEST_CASES = {
    "no-tensors": (lambda m: {**m, "tensors": []}, "lists no tensors"),
    "tensor-missing": (lambda m: {**m, "tensors": m["tensors"][1:]}, "not listed in the manifest"),
    "wrong-shape": (lambda m: {**m, "tensors": [{**m["tensors"][0], "shape": [1, 1], "nbytes": 2}] + m["tensors"][1:]},
                    "manifest says"),
    "wrong-offset": (lambda m: {**m, "tensors": [{**m["tensors"][0], "offset": 8}] + m["tensors"][1:]},
                     "manifest says bytes"),
    "wrong-file": (lambda m: {**m, "tensors": [{**m["tensors"][0], "file": "other.safetensors"}] + m["tensors"][1:]},
                   "manifest says file"),
}


@pytest.mark.parametrize("case", sorted(MANIFEST_CASES))
def test_manifest_inconsistent(gptoss_bin, made, work, case):
    """An empty manifest "verified"; the manifest was not cross-checked with the safetensors headers."""
    edit, needle = MANIFEST_CASES[case]
    m = copy_model(made, "native", work)
    p = m / "gptoss.json"
    p.write_text(json.dumps(edit(json.loads(p.read_text()))))
    for cmd in (verify_cmd(gptoss_bin, m), convert_cmd(gptoss_bin, m, work / "out")):
        err = fail_cleanly(cmd, work)
        assert needle in err, err


# ---- item 7: the safetensors format's own rules --------------------------------------------------

def _shard_edit(edit):
    def apply(m):
        s = m / "model.safetensors"
        h, data = read_header(s)
        h, data = edit(h, data)
        write_shard(s, h, data)
    return apply


def _names(h):
    return sorted((k for k in h if k != "__metadata__"), key=lambda k: h[k]["data_offsets"][0])


def _duplicate(h, data):
    """The last tensor written twice: the second entry duplicates the key with the same bytes."""
    text = json.dumps(h)
    last = _names(h)[-1]
    entry = json.dumps({last: h[last]})[1:-1]
    return (text[:-1] + ", " + entry + "}").encode(), data


def _gap(h, data):
    """4 unused bytes before the last tensor."""
    last = _names(h)[-1]
    a, b = h[last]["data_offsets"]
    h[last]["data_offsets"] = [a + 4, b + 4]
    return h, data[:a] + b"\0" * 4 + data[a:]


def _trailing(h, data):
    return h, data + b"\0" * 16


def _hidden_overlap(h, data):
    """The last tensor moved back to start 2 bytes into its neighbour, with a zero-size tensor at that
    offset: sorted, the zero-size one sits between the two, and only sort-neighbours were compared, so
    it hid the overlap."""
    names = _names(h)
    prev, last = h[names[-2]], h[names[-1]]
    n = last["data_offsets"][1] - last["data_offsets"][0]
    start = prev["data_offsets"][0] + 2
    assert start < prev["data_offsets"][1]
    last["data_offsets"] = [start, start + n]
    h["zz.empty"] = {"dtype": "U8", "shape": [0], "data_offsets": [start, start]}
    return h, data


SAFETENSORS_CASES = {
    "duplicate-name": (_duplicate, "appears twice"),
    "gap": (_gap, "no gaps"),
    "trailing-bytes": (_trailing, "trailing bytes"),
    "overlap-hidden-by-zero-size": (_hidden_overlap, "overlap"),
}


@pytest.mark.parametrize("case", sorted(SAFETENSORS_CASES))
def test_safetensors_rules(gptoss_bin, made, work, case):
    edit, needle = SAFETENSORS_CASES[case]
    m = copy_model(made, "hf", work)
    _shard_edit(edit)(m)
    # --layers / --test-only: tensors beyond the model's (the zero-size one) are then not an error by
    # themselves, so only the format's rules can refuse these files.
    for cmd in (convert_cmd(gptoss_bin, m, work / "out", "--layers", "4"), verify_cmd(gptoss_bin, m) + ["--test-only"]):
        err = fail_cleanly(cmd, work)
        assert needle in err and "model.safetensors" in err, err


# ---- item 8: truncated shards, --force targets, original/ itself -----------------------------------

def test_truncated_shard(gptoss_bin, made, work):
    m = copy_model(made, "native", work)
    s = next(m.glob("model-*.safetensors"))
    os.truncate(s, s.stat().st_size - 100)
    for cmd in (verify_cmd(gptoss_bin, m), convert_cmd(gptoss_bin, m, work / "out")):
        err = fail_cleanly(cmd, work)
        assert s.name in err, err


@pytest.mark.parametrize("target", ["file", "symlink-to-output", "dir-not-an-output"])
def test_force_refuses_non_output(gptoss_bin, made, work, target):
    """--force silently replaced a regular file with a directory."""
    m = copy_model(made, "hf", work)
    out = work / "out"
    if target == "file":
        out.write_text("precious")
    elif target == "symlink-to-output":
        shutil.copytree(made["native"], work / "real")
        out.symlink_to(work / "real")
    else:
        out.mkdir()
        (out / "notes.txt").write_text("precious")
    err = fail_cleanly(convert_cmd(gptoss_bin, m, out, "--force"), work)
    assert str(out) in err and "--force" in err, err
    if target == "file":
        assert out.read_text() == "precious"


def test_force_replaces_earlier_output(gptoss_bin, made, work):
    """What --force is for still works."""
    m = copy_model(made, "hf", work)
    out = work / "out"
    shutil.copytree(made["native"], out)
    (out / "stale.txt").write_text("old")
    subprocess.run([str(c) for c in convert_cmd(gptoss_bin, m, out, "--force")], check=True, capture_output=True)
    assert (out / "gptoss.json").exists() and not (out / "stale.txt").exists()
    assert not [p for p in work.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def test_original_directory_itself(gptoss_bin, made, work):
    """--model-path DIR/original failed with a misleading "missing tensor model.embed_tokens.weight"."""
    m = copy_model(made, "original", work)
    r = subprocess.run([str(c) for c in verify_cmd(gptoss_bin, m / "original")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "original layout" in r.stdout
    for src, out in ((m / "original", work / "a"), (m, work / "b")):
        subprocess.run([str(c) for c in convert_cmd(gptoss_bin, src, out)], check=True, capture_output=True)
    a = sorted(p.name for p in (work / "a").iterdir())
    assert a == sorted(p.name for p in (work / "b").iterdir())
    for f in (work / "a").glob("*.safetensors"):
        assert f.read_bytes() == (work / "b" / f.name).read_bytes()
