"""Issue 6: `gptoss convert --format orbax` restored by orbax-checkpoint's standard API into a nested dict
whose every array equals the reference dequantization (../shared/oracle/np_ref.py `deq`) bit for bit —
full and --test-only, for each dtype (bf16, f32, mxfp4)."""
import json

import numpy as np
import pytest

from conftest import read_dir, run_cli

ocp = pytest.importorskip("orbax.checkpoint", reason="orbax-checkpoint is not installed (pip install orbax-checkpoint)")
pytest.importorskip("jax", reason="jax is not installed (pip install 'jax[cpu]')")


def flatten(tree, prefix=""):
    out = {}
    for k, v in tree.items():
        name = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict):
            out.update(flatten(v, name))
        else:
            out[name] = np.asarray(v)
    return out


def expected(src, oracle, dtype, layers):
    """What each leaf must hold: HF tensors (raw bits) with MXFP4 experts dequantized by the oracle and
    transposed to [E, in, out], cast like the converter promises (exact: MXFP4 values are bf16)."""
    t = read_dir(src)  # bf16 widened exactly to f32; U8 as is
    out = {}
    for k, v in t.items():
        if ".layers." in k and int(k.split(".")[2]) >= layers:
            continue
        if dtype == "mxfp4" or not (k.endswith("_blocks") or k.endswith("_scales")):
            out[k] = v
        elif k.endswith("_blocks"):
            base = k[: -len("_blocks")]
            out[base] = oracle.deq(v, t[base + "_scales"]).transpose(0, 2, 1)
    return out


@pytest.mark.parametrize("dtype", ["bf16", "f32", "mxfp4"])
@pytest.mark.parametrize("test_only", [False, True])
def test_orbax_restores_reference_bits(tmp_path, tiny_model, oracle, gptoss_bin, dtype, test_only):
    out = tmp_path / "jax"
    args = ["convert", "--model-path", tiny_model, "--format", "orbax", "--dtype", dtype, "-o", out, "-q"]
    if test_only:
        args.append("--test-only")
    run_cli(gptoss_bin, *args)
    cfg = json.loads((out / "config.json").read_text())
    layers = 2 if test_only else 4
    assert cfg["num_hidden_layers"] == layers
    restored = ocp.StandardCheckpointer().restore(str((out / "jax_params").resolve()))
    got = flatten(restored)
    want = expected(tiny_model, oracle, dtype, layers)
    assert sorted(got) == sorted(want)
    for name, w in want.items():
        g = got[name]
        assert g.shape == w.shape, name
        if dtype == "mxfp4" and w.dtype == np.uint8:
            assert g.dtype == np.uint8 and np.array_equal(g, w), name
            continue
        want_dtype = "float32" if dtype == "f32" else "bfloat16"
        assert str(g.dtype) == want_dtype, (name, g.dtype)
        g32 = g.astype(np.float32)
        assert np.array_equal(g32.view(np.uint32), w.astype(np.float32).view(np.uint32)), name
