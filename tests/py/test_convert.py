"""gptoss convert: exactness against the numpy reference, round trips, layouts, atomicity."""
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import make_tiny_hf, read_dir, run_cli

SHAPES = [
    ("default-1shard", 0, []),
    ("default-multishard", 1, ["--shard-mb", 1]),
    ("odd", 7, ["--layers", 3, "--hidden", 64, "--experts", 4, "--topk", 2, "--heads", 4, "--kv-heads", 1,
                "--head-dim", 16, "--inter", 160, "--vocab", 300, "--shard-mb", 1]),
]


@pytest.mark.parametrize("name,seed,args", SHAPES, ids=[s[0] for s in SHAPES])
def test_safetensors_f32_bit_identical_to_np_ref(tmp_path, shared_dir, oracle, gptoss_bin, name, seed, args):
    src = make_tiny_hf(shared_dir, tmp_path / "m", "--seed", seed, *args)
    out = tmp_path / "out"
    run_cli(gptoss_bin, "convert", "--model-path", src, "--format", "safetensors", "--dtype", "f32", "-o", out, "-q")
    ref = oracle.load(str(src))
    got = read_dir(out)
    cfg = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in cfg and cfg["torch_dtype"] == "float32"
    idx = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(idx["weight_map"]) == set(got)
    want = {}
    for k, v in ref.items():
        if k.endswith("_scales"):
            continue
        if k.endswith("_blocks"):
            base = k[: -len("_blocks")]
            want[base] = oracle.deq(v, ref[base + "_scales"]).transpose(0, 2, 1).astype(np.float32)
        else:
            want[k] = v.astype(np.float32)
    assert set(got) == set(want)
    for k, w in want.items():
        g = got[k]
        assert g.dtype == np.float32 and g.shape == w.shape, k
        assert np.array_equal(g.view(np.uint32), np.ascontiguousarray(w).view(np.uint32)), k


def test_safetensors_bf16_is_f32_rounded(tmp_path, tiny_model, gptoss_bin):
    run_cli(gptoss_bin, "convert", "--model-path", tiny_model, "--format", "safetensors", "--dtype", "f32",
            "-o", tmp_path / "f32", "-q")
    run_cli(gptoss_bin, "convert", "--model-path", tiny_model, "--format", "safetensors", "-o", tmp_path / "bf16", "-q")
    f32, bf16 = read_dir(tmp_path / "f32"), read_dir(tmp_path / "bf16")
    for k in f32:  # every value is exact in bf16, so widening the bf16 output gives the f32 output
        assert np.array_equal(f32[k], bf16[k]), k


def test_native_round_trip_and_verify(tmp_path, tiny_model, gptoss_bin):
    out = tmp_path / "n"
    r = run_cli(gptoss_bin, "convert", "--model-path", tiny_model, "-o", out, "--json")
    summary = json.loads(r.stdout)
    assert summary["ok"] and summary["format"] == "native" and summary["dtype"] == "mxfp4"
    assert summary["bytes_in"] == summary["bytes_out"] and summary["peak_rss_bytes"] > 0
    src, got = read_dir(tiny_model, raw=True), read_dir(out, raw=True)
    assert set(src) == set(got)
    for k in src:
        assert np.array_equal(src[k], got[k]), k
    man = json.loads((out / "gptoss.json").read_text())
    assert man["format"] == "gptoss-native" and man["version"] == 1 and man["source_layout"] == "huggingface"
    names = [t["name"] for t in man["tensors"]]
    assert names[0] == "model.embed_tokens.weight" and names[-1] == "lm_head.weight"
    # data sections start 64-byte aligned (tensors inside are back to back, as safetensors requires)
    firsts = {}
    for t in man["tensors"]:
        firsts.setdefault(t["file"], t["offset"])
    assert all(o % 64 == 0 for o in firsts.values())
    insp = json.loads(run_cli(gptoss_bin, "inspect", out, "--json", "--verify").stdout)
    assert insp["layout"] == "native" and insp["verified"]["ok"]
    assert [t["name"] for t in insp["tensors"]] == names
    # one flipped byte is caught, naming the tensor
    t = man["tensors"][3]
    f = out / t["file"]
    b = bytearray(f.read_bytes())
    b[t["offset"]] ^= 1
    f.write_bytes(bytes(b))
    r = run_cli(gptoss_bin, "inspect", out, "--verify", check=False)
    assert r.returncode != 0 and t["name"] in r.stderr and "checksum" in r.stderr
    r = run_cli(gptoss_bin, "convert", "--model-path", out, "--verify-only", check=False)
    assert r.returncode != 0 and t["name"] in r.stderr


@pytest.mark.parametrize("dtype", ["bf16", "f32"])
def test_native_dense(tmp_path, tiny_model, gptoss_bin, dtype):
    out = tmp_path / "n"
    run_cli(gptoss_bin, "convert", "--model-path", tiny_model, "-o", out, "--dtype", dtype, "-q")
    run_cli(gptoss_bin, "inspect", out, "--verify", "-q")
    run_cli(gptoss_bin, "convert", "--model-path", tiny_model, "--format", "safetensors", "--dtype", "f32",
            "-o", tmp_path / "ref", "-q")
    got, ref = read_dir(out), read_dir(tmp_path / "ref")
    for k in ref:
        assert np.array_equal(got[k].astype(np.float32), ref[k]), k
    kinds = {str(v.dtype) for v in read_dir(out, raw=True).values()}
    assert kinds == ({"float32"} if dtype == "f32" else {"uint16"})


def test_original_and_dense_layouts_convert_like_hf(tmp_path, tool_bin, gptoss_bin):
    mk = tool_bin("make-checkpoint")
    for layout, shard in [("hf", 1), ("original", 1), ("dense", 4096)]:
        run_cli(mk, tmp_path / layout, "--seed", 11, "--layout", layout, "--shard-mb", shard)
        run_cli(gptoss_bin, "convert", "--model-path", tmp_path / layout, "--format", "safetensors", "--dtype", "f32",
                "-o", tmp_path / f"{layout}-f32", "-q")
    base = (tmp_path / "hf-f32" / "model-00001-of-00001.safetensors").read_bytes()
    for layout in ["original", "dense"]:
        assert (tmp_path / f"{layout}-f32" / "model-00001-of-00001.safetensors").read_bytes() == base, layout
    for layout in ["hf", "original"]:
        run_cli(gptoss_bin, "convert", "--model-path", tmp_path / layout, "-o", tmp_path / f"{layout}-n", "-q")
    assert (tmp_path / "hf-n" / "model-00001-of-00001.safetensors").read_bytes() == \
        (tmp_path / "original-n" / "model-00001-of-00001.safetensors").read_bytes()
    assert json.loads((tmp_path / "original-n" / "gptoss.json").read_text())["source_layout"] == "original"


def test_tool_matches_reference_writer_layout(tmp_path, tool_bin, shared_dir, gptoss_bin):
    """Our writer's HF layout has the same names, dtypes and shapes as make_tiny_hf.py's."""
    run_cli(tool_bin("make-checkpoint"), tmp_path / "ours", "--seed", 2, "--shard-mb", 1)
    make_tiny_hf(shared_dir, tmp_path / "ref", "--seed", 2, "--shard-mb", 1)
    ours, ref = read_dir(tmp_path / "ours", raw=True), read_dir(tmp_path / "ref", raw=True)
    assert {k: (v.dtype, v.shape) for k, v in ours.items()} == {k: (v.dtype, v.shape) for k, v in ref.items()}
    assert sorted(p.name for p in (tmp_path / "ours").glob("*.safetensors"))[0] == "model-00000-of-00001.safetensors"


def test_test_only_and_layers(tmp_path, tiny_model, gptoss_bin):
    out = tmp_path / "t"
    run_cli(gptoss_bin, "convert", "--model-path", tiny_model, "--test-only", "-o", out, "-q")
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 2
    insp = json.loads(run_cli(gptoss_bin, "inspect", out, "--json", "--verify").stdout)
    assert insp["config"]["num_hidden_layers"] == 2 and len(insp["tensors"]) == 3 + 2 * 19
    src, got = read_dir(tiny_model, raw=True), read_dir(out, raw=True)
    for k in got:
        assert np.array_equal(src[k], got[k]), k
    run_cli(gptoss_bin, "convert", "--model-path", out, "--format", "safetensors", "-o", tmp_path / "t2", "-q")
    run_cli(gptoss_bin, "convert", "--model-path", tiny_model, "--layers", 3, "-o", tmp_path / "l3", "-q")
    assert json.loads((tmp_path / "l3" / "config.json").read_text())["num_hidden_layers"] == 3


def test_default_output_and_force(tmp_path, tiny_model, gptoss_bin):
    src = tmp_path / "m"
    src.mkdir()
    for f in tiny_model.iterdir():
        (src / f.name).write_bytes(f.read_bytes())
    (src / "tokenizer.json").write_text('{"tok": 1}')
    run_cli(gptoss_bin, "convert", "--model-path", str(src) + "/", "-q")
    out = tmp_path / "m-gptoss"
    assert (out / "gptoss.json").exists() and (out / "tokenizer.json").read_text() == '{"tok": 1}'
    r = run_cli(gptoss_bin, "convert", "--model-path", src, check=False)
    assert r.returncode != 0 and "--force" in r.stderr
    (out / "marker").write_text("old")
    run_cli(gptoss_bin, "convert", "--model-path", src, "--force", "-q")
    assert not (out / "marker").exists() and (out / "gptoss.json").exists()
    run_cli(gptoss_bin, "convert", "--model-path", src, "--format", "safetensors", "-q")
    assert (tmp_path / "m-bf16" / "config.json").exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name or ".old-" in p.name]
    r = run_cli(gptoss_bin, "convert", "--model-path", src, "-o", src / "inside", check=False)
    assert r.returncode != 0 and "overlaps" in r.stderr


def test_format_dtype_refusals(tmp_path, tiny_model, gptoss_bin):
    r = run_cli(gptoss_bin, "convert", "--model-path", tiny_model, "--format", "safetensors", "--dtype", "mxfp4",
                "-o", tmp_path / "x", check=False)
    assert r.returncode != 0 and "mxfp4" in r.stderr and not (tmp_path / "x").exists()


def test_orbax_output(tmp_path, tiny_model, gptoss_bin):
    out = tmp_path / "j"
    run_cli(gptoss_bin, "convert", "--model-path", tiny_model, "--format", "orbax", "-o", out, "-q")
    assert (out / "config.json").exists() and (out / "jax_params" / "_METADATA").exists()
    assert (out / "jax_params" / "model.layers.0.mlp.experts.gate_up_proj" / ".zarray").exists()


@pytest.fixture(scope="module")
def bigger_model(tmp_path_factory, tool_bin):
    d = tmp_path_factory.mktemp("big") / "m"
    run_cli(tool_bin("make-checkpoint"), d, "--layers", 4, "--hidden", 1024, "--experts", 16, "--inter", 1024,
            "--vocab", 32000, "--shard-mb", 64)
    return d


@pytest.mark.parametrize("how", ["kill9", "sigterm"])
def test_interrupted_run_leaves_no_output(tmp_path, bigger_model, gptoss_bin, how):
    out = tmp_path / "out"
    p = subprocess.Popen([str(gptoss_bin), "convert", "--model-path", str(bigger_model), "--format", "safetensors",
                          "--dtype", "f32", "-o", str(out), "-q", "--threads", "1"],
                         stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 20
    while time.time() < deadline and not any(".tmp-" in q.name for q in tmp_path.iterdir()):
        time.sleep(0.01)
    time.sleep(0.2)
    if p.poll() is not None:
        pytest.skip("conversion finished before it could be interrupted")
    p.send_signal(signal.SIGKILL if how == "kill9" else signal.SIGTERM)
    p.wait(timeout=30)
    assert p.returncode != 0
    assert not out.exists()
    leftovers = [q for q in tmp_path.iterdir() if ".tmp-" in q.name]
    if how == "sigterm":
        assert not leftovers and "interrupted" in p.stderr.read()
    else:
        assert len(leftovers) == 1
        # the next run removes the stale temp dir of the dead process
        run_cli(gptoss_bin, "convert", "--model-path", bigger_model, "--test-only", "-o", out, "-q")
        assert out.exists() and not [q for q in tmp_path.iterdir() if ".tmp-" in q.name]


@pytest.mark.parametrize("fmt", ["native", "safetensors", "orbax"])
def test_output_sends_large_files_through_git_lfs(tmp_path, tiny_model, shared_dir, gptoss_bin, fmt):
    """Every output carries a .gitattributes under which Git itself (git check-attr) sends each weight file,
    and any other file of 10 MiB or more (here the real 27 MB tokenizer.json), through LFS; small files stay
    plain Git."""
    src = tmp_path / "in"
    subprocess.run(["cp", "-r", str(tiny_model), str(src)], check=True)
    subprocess.run(["cp", str(shared_dir / "data" / "gpt-oss-tokenizer" / "tokenizer.json"), str(src)], check=True)
    out = tmp_path / "out"
    run_cli(gptoss_bin, "convert", "--model", src, "--output", out, "--format", fmt, "--quiet")
    assert (out / ".gitattributes").is_file()
    subprocess.run(["git", "init", "-q", str(out)], check=True)
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and ".git" not in p.parts)
    r = subprocess.run(["git", "-C", str(out), "check-attr", "filter", "--", *files], check=True,
                       capture_output=True, text=True)
    lfs = {line.split(": filter: ")[0] for line in r.stdout.splitlines() if line.endswith(": filter: lfs")}
    weights = [f for f in files if f.endswith(".safetensors") or f.startswith("jax_params/")]
    assert weights and set(weights) <= lfs
    assert "tokenizer.json" in lfs
    assert "config.json" not in lfs and ".gitattributes" not in lfs
