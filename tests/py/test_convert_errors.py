"""Bad input: one line on stderr naming the file/tensor with expected vs actual, non-zero exit, no output."""
import json
import shutil
from pathlib import Path

import pytest

from conftest import run_cli


@pytest.fixture
def model(tmp_path, tiny_model):
    d = tmp_path / "m"
    shutil.copytree(tiny_model, d)
    return d


def shards(d):
    return sorted(Path(d).glob("model-*.safetensors"))


def rewrite_header(path, edit, data_edit=None):
    """Rewrites a shard's JSON header with edit(header) (dict or raw bytes), keeping its data."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    hdr = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    new = edit(hdr)
    h = new if isinstance(new, bytes) else json.dumps(new).encode()
    path.write_bytes(len(h).to_bytes(8, "little") + h + (data_edit(data) if data_edit else data))


def first_tensor(hdr):
    return next(k for k in hdr if k != "__metadata__")


def expect_failure(gptoss_bin, model, *needles):
    out = model.parent / "out"
    r = run_cli(gptoss_bin, "convert", "--model-path", model, "-o", out, check=False)
    err = r.stderr.strip()
    assert r.returncode != 0, err
    assert err and "\n" not in err, f"expected one line, got:\n{err}"
    for n in needles:
        assert n in err, f"{n!r} not in: {err}"
    assert not out.exists()
    assert not [p for p in model.parent.iterdir() if ".tmp-" in p.name]
    return err


def test_missing_config(gptoss_bin, model):
    (model / "config.json").unlink()
    expect_failure(gptoss_bin, model, "config.json")


def test_invalid_config_json(gptoss_bin, model):
    (model / "config.json").write_text("{not json")
    expect_failure(gptoss_bin, model, "config.json", "JSON")


def test_config_missing_key(gptoss_bin, model):
    c = json.loads((model / "config.json").read_text())
    del c["hidden_size"]
    (model / "config.json").write_text(json.dumps(c))
    expect_failure(gptoss_bin, model, "config.json", "hidden_size")


def test_shape_contradicts_config(gptoss_bin, model):
    c = json.loads((model / "config.json").read_text())
    c["intermediate_size"] = 64
    (model / "config.json").write_text(json.dumps(c))
    expect_failure(gptoss_bin, model, "gate_up_proj", "expected", "[8, 128, 4, 16]", "config.json")


def test_missing_shard(gptoss_bin, model):
    s = shards(model)[-1]
    s.unlink()
    expect_failure(gptoss_bin, model, s.name, "does not exist")


def test_truncated_shard(gptoss_bin, model):
    s = shards(model)[0]
    s.write_bytes(s.read_bytes()[:-1000])
    expect_failure(gptoss_bin, model, s.name, "past the data section")


def test_index_names_missing_tensor(gptoss_bin, model):
    idx = json.loads((model / "model.safetensors.index.json").read_text())
    idx["weight_map"]["model.layers.0.bogus.weight"] = shards(model)[0].name
    (model / "model.safetensors.index.json").write_text(json.dumps(idx))
    expect_failure(gptoss_bin, model, "model.layers.0.bogus.weight", shards(model)[0].name)


def drop_tensor(path, name):
    """Removes a tensor and its bytes from a shard, moving the later tensors down: still a valid file."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    hdr = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    a, b = hdr.pop(name)["data_offsets"]
    for k, v in hdr.items():
        if k != "__metadata__" and v["data_offsets"][0] >= b:
            v["data_offsets"] = [v["data_offsets"][0] - (b - a), v["data_offsets"][1] - (b - a)]
    h = json.dumps(hdr).encode()
    path.write_bytes(len(h).to_bytes(8, "little") + h + data[:a] + data[b:])


def test_index_misses_expected_tensor(gptoss_bin, model):
    """A tensor the config needs is in no file: named, with the index mentioned."""
    s = shards(model)[0]
    victim = first_tensor(json.loads(s.read_bytes()[8:8 + int.from_bytes(s.read_bytes()[:8], "little")]))
    drop_tensor(s, victim)
    idx = json.loads((model / "model.safetensors.index.json").read_text())
    del idx["weight_map"][victim]
    (model / "model.safetensors.index.json").write_text(json.dumps(idx))
    expect_failure(gptoss_bin, model, victim, "missing")


def test_unknown_layout(gptoss_bin, tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    (d / "README.md").write_text("hello")
    expect_failure(gptoss_bin, d, "not a gpt-oss checkpoint")


def test_not_a_directory(gptoss_bin, tmp_path):
    expect_failure(gptoss_bin, tmp_path / "nothing-here", "not a directory")


def _set(key, value):
    def f(h):
        h[first_tensor(h)][key] = value
        return h
    return f


def _overlap(h):
    names = [k for k in h if k != "__metadata__"]
    a, b = h[names[0]], h[names[1]]
    if a["data_offsets"][1] - a["data_offsets"][0] == b["data_offsets"][1] - b["data_offsets"][0]:
        b["data_offsets"] = list(a["data_offsets"])
    else:  # force equal-size tensors to share bytes
        b["data_offsets"] = [a["data_offsets"][0], a["data_offsets"][0] + b["data_offsets"][1] - b["data_offsets"][0]]
    return h


HEADER_CASES = {
    "not-json": (lambda h: b"{this is not json", ["not valid JSON"]),
    "not-object": (lambda h: b"[1, 2, 3]", ["not a JSON object"]),
    "unknown-dtype": (_set("dtype", "Q4_K"), ["unknown dtype", "Q4_K"]),
    "bad-shape": (_set("shape", [-1, 3]), ["shape"]),
    "size-mismatch": (_set("shape", [3]), ["needs", "data_offsets give"]),
    "offsets-past-end": (_set("data_offsets", [0, 1 << 40]), ["past the data section"]),
    "reversed-offsets": (_set("data_offsets", [10, 0]), ["reversed"]),
    "overlap": (_overlap, ["overlap"]),
    "entry-not-object": (lambda h: {**h, first_tensor(h): 5}, ["not an object"]),
    "metadata-not-strings": (lambda h: {**h, "__metadata__": {"a": 1}}, ["__metadata__"]),
}


@pytest.mark.parametrize("case", sorted(HEADER_CASES))
def test_malformed_header(gptoss_bin, model, case):
    edit, needles = HEADER_CASES[case]
    s = shards(model)[0]
    rewrite_header(s, edit)
    expect_failure(gptoss_bin, model, s.name, *needles)


def test_header_length_too_large(gptoss_bin, model):
    s = shards(model)[0]
    raw = bytearray(s.read_bytes())
    raw[:8] = (1 << 62).to_bytes(8, "little")
    s.write_bytes(bytes(raw))
    expect_failure(gptoss_bin, model, s.name, "header length")


def test_file_too_short(gptoss_bin, model):
    s = shards(model)[0]
    s.write_bytes(b"\x01\x02")
    expect_failure(gptoss_bin, model, s.name, "too short")


def test_wrong_dtype_for_quantized(gptoss_bin, model):
    s = shards(model)[0]

    def edit(h):
        for k, v in h.items():
            if k.endswith("_scales"):
                v["dtype"] = "I8"
                return h
        pytest.skip("no scales tensor in the first shard")
    rewrite_header(s, edit)
    expect_failure(gptoss_bin, model, "_scales", "dtype I8, expected U8")


def test_disk_full_leaves_nothing(gptoss_bin, tiny_model, tmp_path):
    """A write that fails mid-conversion (here: the file-size limit, EFBIG, as a stand-in for a full
    disk) gives a clear error and leaves neither the output nor its temporary sibling."""
    import resource
    import signal
    import subprocess

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG from write() instead of a signal
        resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))

    out = tmp_path / "out"
    r = subprocess.run([str(gptoss_bin), "convert", "--model-path", str(tiny_model), "--format", "safetensors",
                        "--dtype", "f32", "-o", str(out), "-q"], capture_output=True, text=True, preexec_fn=limit)
    assert r.returncode != 0
    assert "write failed" in r.stderr or "File too large" in r.stderr, r.stderr
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
