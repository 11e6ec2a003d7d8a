"""The CPU engine end to end through the CLI: differential tests against the float64 numpy reference
(../shared/oracle/np_ref.py) on freshly generated random models of several shapes, every input layout
the engine opens directly, and `gptoss verify` on converted and unconverted directories."""
import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import make_tiny_hf, run_cli

# (make_tiny_hf.py arguments, number of tokens): windows and original contexts small enough that the
# sequences run past twice the window and past original_max_position_embeddings.
SHAPES = [
    (["--seed", "21"], 40),
    (["--seed", "22", "--layers", "2", "--hidden", "96", "--experts", "5", "--topk", "3", "--heads", "6",
      "--kv-heads", "3", "--head-dim", "8", "--inter", "64", "--vocab", "300", "--window", "4", "--orig-ctx", "16"], 30),
    (["--seed", "23", "--layers", "3", "--hidden", "64", "--experts", "4", "--topk", "4", "--heads", "2",
      "--kv-heads", "2", "--head-dim", "32", "--inter", "32", "--vocab", "700", "--window", "16", "--orig-ctx", "8",
      "--shard-mb", "1"], 36),
    # The 20b attention geometry (64/8 heads, d = 64, window 128, YaRN over 4096) at long range: 600 positions,
    # several windows, chunked prefill (max_batch 128 by default).
    (["--seed", "5", "--layers", "2", "--hidden", "256", "--experts", "4", "--topk", "4", "--heads", "64",
      "--kv-heads", "8", "--head-dim", "64", "--inter", "128", "--vocab", "1000", "--window", "128",
      "--orig-ctx", "4096"], 600),
]


def rel_err(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


# --cpu-math exact on every shape; fast (int16 activations for the experts in decode, rows decoded once per
# prefill chunk) on two of them, at its own tolerance: 1e-2 per token row, top-1 outside near-ties.
@pytest.mark.parametrize("args,n,math", [(a, n, "exact") for a, n in SHAPES] +
                         [(a, n, "fast") for a, n in SHAPES[:2]])
def test_logits_match_numpy_reference(tmp_path, shared_dir, oracle, gptoss_bin, args, n, math):
    model = make_tiny_hf(shared_dir, tmp_path / "m", *args)
    vocab = int(args[args.index("--vocab") + 1]) if "--vocab" in args else 1024
    rng = np.random.default_rng(n)
    tokens = rng.integers(0, vocab, size=n).tolist()
    ids = ",".join(map(str, tokens))
    # fast: steps of 3 tokens, so the experts take the int16 kernels (the C++ FastMathStaysCloseToExact covers
    # longer steps).
    chunks = ["--max-batch", "3"] if math == "fast" else []
    run_cli(gptoss_bin, "logits", "--model", model, "--device", "cpu", "--cpu-math", math, *chunks, "--tokens", ids,
            "--out", tmp_path / "ours.npy")
    ours = np.load(tmp_path / "ours.npy")
    ref = np.load(_np_ref(shared_dir, model, ids, tmp_path / "ref.npy"))
    assert ours.shape == ref.shape == (n, vocab)
    if math == "exact":
        assert rel_err(ours, ref) <= 1e-4
        assert (ours.argmax(-1) == ref.argmax(-1)).all()
        return
    err = np.abs(ours - ref).max(-1)
    assert (err / np.abs(ref).max(-1)).max() <= 1e-2
    top2 = np.sort(ref, -1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 2 * err
    assert (ours.argmax(-1) == ref.argmax(-1))[clear].all()


def _np_ref(shared_dir, model, ids, out):
    subprocess.run([sys.executable, str(shared_dir / "oracle" / "np_ref.py"), str(model), "--tokens", ids, "--out", str(out)],
                   check=True, capture_output=True)
    return out


def test_layouts_give_identical_logits(tmp_path, tiny_model, gptoss_bin, tool_bin):
    """HF MXFP4, converted native, dense bf16/f32 safetensors: the same logits (dense f32 bit-exact
    weights; bf16 dense is also exact because every MXFP4 value is a bf16)."""
    ids = "5,17,900,3,44,1000,2,8,9,10,11,12"
    outs = {}
    dirs = {"hf": tiny_model}
    for fmt, dtype in [("native", "mxfp4"), ("safetensors", "f32"), ("safetensors", "bf16")]:
        d = tmp_path / f"{fmt}-{dtype}"
        run_cli(gptoss_bin, "convert", "--model-path", tiny_model, "--output", d, "--format", fmt, "--dtype", dtype,
                "--quiet")
        dirs[f"{fmt}-{dtype}"] = d
    for name, d in dirs.items():
        run_cli(gptoss_bin, "logits", "--model", d, "--device", "cpu", "--cpu-math", "exact", "--tokens", ids, "--out",
                tmp_path / f"{name}.npy")
        outs[name] = np.load(tmp_path / f"{name}.npy")
    for name, v in outs.items():
        assert rel_err(v, outs["hf"]) <= 1e-5, name


def test_verify_on_hf_and_converted(tmp_path, tiny_model, gptoss_bin):
    r = run_cli(gptoss_bin, "verify", "--model", tiny_model, "--device", "cpu")
    assert re.search(r"logits shape \(1, 10, 1024\)", r.stdout)
    assert "finite: OK" in r.stdout
    conv = tmp_path / "native"
    run_cli(gptoss_bin, "convert", "--model-path", tiny_model, "--output", conv, "--quiet")
    r = run_cli(gptoss_bin, "verify", "--model", conv, "--device", "cpu")
    assert "native layout" in r.stdout and "(1, 10, 1024)" in r.stdout
    test_only = tmp_path / "two"
    run_cli(gptoss_bin, "convert", "--model-path", tiny_model, "--output", test_only, "--test-only", "--quiet")
    r = run_cli(gptoss_bin, "verify", "--model", test_only, "--device", "cpu")
    assert "2 layers" in r.stdout


def test_verify_rejects_bad_model(tmp_path, tiny_model, gptoss_bin):
    r = run_cli(gptoss_bin, "verify", "--model", tmp_path, check=False)
    assert r.returncode != 0 and "error" in r.stderr
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in tiny_model.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    import json
    cfg = json.loads((bad / "config.json").read_text())
    cfg["num_hidden_layers"] = 5
    cfg["layer_types"].append("sliding_attention")
    (bad / "config.json").write_text(json.dumps(cfg))
    r = run_cli(gptoss_bin, "verify", "--model", bad, check=False)
    assert r.returncode != 0 and "model.layers.4" in r.stderr


def test_generate_is_deterministic(tiny_model, gptoss_bin):
    args = ["generate", "--model", tiny_model, "--device", "cpu", "--tokens", "1,2,3", "-n", "12", "--temperature",
            "0.8", "--top-p", "0.9", "--seed", "5", "--json"]
    import json
    a = json.loads(run_cli(gptoss_bin, *args).stdout)["tokens"]
    b = json.loads(run_cli(gptoss_bin, *args).stdout)["tokens"]
    assert a == b and len(a) >= 1
    c = json.loads(run_cli(gptoss_bin, *args[:-2], "6", "--json").stdout)["tokens"]
    assert c != a  # another seed, another sample
    r = run_cli(gptoss_bin, "generate", "--model", tiny_model, "--tokens", "1,99999", check=False)
    assert r.returncode != 0 and "out of range" in r.stderr


def test_bench_json(tiny_model, gptoss_bin):
    import json
    r = run_cli(gptoss_bin, "bench", "--model", tiny_model, "--device", "cpu", "--prompt-tokens", "32",
                "--gen-tokens", "8", "--json")
    j = json.loads(r.stdout)
    for k in ["prefill_tokens_per_s", "decode_tokens_per_s", "achieved_gb_per_s", "roofline_fraction"]:
        assert j[k] > 0, k
    assert "op_costs_us_per_token" not in j
    r = run_cli(gptoss_bin, "bench", "--model", tiny_model, "--device", "cpu", "--prompt-tokens", "16",
                "--gen-tokens", "4", "--op-costs", "--json")
    costs = json.loads(r.stdout)["op_costs_us_per_token"]
    assert costs["decode_step_us"] > 0
    assert sorted(costs) == ["attention", "decode_step_us", "lm_head", "moe", "o_proj", "qkv"]
    assert all(abs(v) < 10 * costs["decode_step_us"] for v in costs.values())  # differences of step times


def test_prefill_chunk_size_does_not_change_logits(tmp_path, tiny_model, gptoss_bin):
    ids = ",".join(str(i) for i in range(3, 60))
    for mb in ["1", "7", "4096"]:
        run_cli(gptoss_bin, "logits", "--model", tiny_model, "--device", "cpu", "--cpu-math", "exact", "--tokens", ids,
                "--max-batch", mb, "--out", tmp_path / f"l{mb}.npy")
    ref = np.load(tmp_path / "l4096.npy")
    for mb in ["1", "7"]:
        assert rel_err(np.load(tmp_path / f"l{mb}.npy"), ref) <= 1e-5


def test_logits_of_several_sequences_in_batched_steps(tmp_path, tiny_model, gptoss_bin):
    """`logits --tokens A --tokens B ...` runs the sequences together (chunks beside single-token rows, sequences
    joining one step apart) and writes seq0, seq1, ... to an .npz: each equal to the sequence run alone."""
    rng = np.random.default_rng(11)
    seqs = [rng.integers(0, 1024, size=n).tolist() for n in (37, 1, 12, 60)]
    seqs[2][:5] = seqs[0][:5]  # a shared prefix
    args = []
    for s in seqs:
        args += ["--tokens", ",".join(map(str, s))]
    # Exact math: with the fast kernels a row moves with its neighbours (within their tolerance, Batch tests).
    r = run_cli(gptoss_bin, "logits", "--model", tiny_model, "--device", "cpu", "--cpu-math", "exact", *args,
                "--max-batch", "16", "--out", tmp_path / "all.npz")
    assert "4 sequences" in r.stdout
    z = np.load(tmp_path / "all.npz")
    assert sorted(z.files) == ["seq0", "seq1", "seq2", "seq3"]
    for i, s in enumerate(seqs):
        run_cli(gptoss_bin, "logits", "--model", tiny_model, "--device", "cpu", "--cpu-math", "exact", "--tokens",
                ",".join(map(str, s)), "--out", tmp_path / f"s{i}.npy")
        alone = np.load(tmp_path / f"s{i}.npy")
        assert z[f"seq{i}"].shape == alone.shape == (len(s), 1024)
        assert rel_err(z[f"seq{i}"], alone) <= 1e-5, i
    # Errors name the sequence.
    r = run_cli(gptoss_bin, "logits", "--model", tiny_model, "--tokens", "1,2", "--tokens", "3,x",
                "--out", tmp_path / "bad.npz", check=False)
    assert r.returncode != 0 and "--tokens #2" in r.stderr


def test_bench_concurrency_json(tiny_model, gptoss_bin):
    """Engine-level serving benchmark: fixed lengths, every request produces exactly --gen-tokens."""
    import json
    r = run_cli(gptoss_bin, "bench", "--model", tiny_model, "--device", "cpu", "--concurrency", "4", "--requests", "8",
                "--prompt-tokens", "20", "--gen-tokens", "6", "--json")
    j = json.loads(r.stdout)
    assert j["errors"] == 0 and j["requests"] == 8 and j["batching"] is True
    assert j["output_tokens"] == 8 * 6 and j["input_tokens"] == 8 * 20
    for k in ["output_tokens_per_s", "total_tokens_per_s", "ttft_ms_p50", "ttft_ms_p99", "tpot_ms_p50", "tpot_ms_p99",
              "kv_bytes"]:
        assert j[k] > 0, k
    assert j["ttft_ms_p99"] >= j["ttft_ms_p50"]
    r = run_cli(gptoss_bin, "bench", "--model", tiny_model, "--device", "cpu", "--concurrency", "3", "--requests", "5",
                "--workload", "sharegpt", "--max-context", "256", "--json")
    j = json.loads(r.stdout)
    assert j["errors"] == 0 and j["requests"] == 5 and j["output_tokens"] > 5
