"""Orbax judges OrbaxWriter: gptoss-orbax-selftest writes pseudo-random leaves, Orbax restores them
with its standard API (no target tree), and every leaf must match in structure, dtype, shape and
bytes. The byte stream is splitmix64 words (see tools/orbax_selftest.cpp), recomputed here."""

import json
import os
import pathlib
import subprocess

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


def selftest_bin():
    gptoss = pathlib.Path(os.environ.get("GPTOSS_BIN", REPO / "build" / "gptoss"))
    if not gptoss.is_absolute():
        gptoss = REPO / gptoss
    exe = gptoss.parent / "gptoss-orbax-selftest"
    if not exe.exists():
        pytest.skip(f"{exe} not built (cmake --build <dir> --target gptoss-orbax-selftest)")
    return exe


def orbax():
    try:
        import ml_dtypes  # noqa: F401
        import orbax.checkpoint as ocp
    except ImportError as e:
        pytest.skip(f"jax/orbax not installed (pip install 'jax[cpu]' orbax-checkpoint): {e}")
    return ocp


def stream_bytes(seed, total):
    """Bytes [0, total) of the selftest stream: word j = mix(seed + (j + 1) * gamma), little-endian."""
    j = np.arange(1, (total + 7) // 8 + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = np.uint64(seed) + j * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return z.astype("<u8").tobytes()[:total]


def np_dtype(name):
    import ml_dtypes

    return {"F32": np.dtype("<f4"), "BF16": np.dtype(ml_dtypes.bfloat16), "U8": np.dtype("u1")}[name]


def expected_tree(spec, seed):
    sizes = [int(np.prod(l["shape"], dtype=np.int64)) * np_dtype(l["dtype"]).itemsize for l in spec["leaves"]]
    data = stream_bytes(seed, sum(sizes))
    tree, off = {}, 0
    for leaf, n in zip(spec["leaves"], sizes):
        node, *_, last = [tree] + leaf["name"].split(".")
        for key in leaf["name"].split(".")[:-1]:
            node = node.setdefault(key, {})
        arr = np.frombuffer(data[off:off + n], dtype=np_dtype(leaf["dtype"])).reshape(leaf["shape"])
        node[last] = arr
        off += n
    for path in spec.get("empty_dicts", []):
        node = tree
        for key in path.split("."):
            node = node.setdefault(key, {})
    return tree


def assert_same(got, want, path="<root>"):
    if isinstance(want, dict):
        assert isinstance(got, dict), f"{path}: restored {type(got).__name__}, expected dict"
        assert sorted(got) == sorted(want), f"{path}: keys {sorted(got)}, expected {sorted(want)}"
        for k in want:
            assert_same(got[k], want[k], f"{path}.{k}")
        return
    got = np.asarray(got)
    assert got.dtype == want.dtype, f"{path}: dtype {got.dtype}, expected {want.dtype}"
    assert got.shape == want.shape, f"{path}: shape {got.shape}, expected {want.shape}"
    assert got.tobytes() == want.tobytes(), f"{path}: values differ"


# Chunks of at most 4 KiB so that small leaves still span many chunks, with padded last chunks.
SPEC = {
    "leaves": [
        {"name": "model.embed.weight", "dtype": "BF16", "shape": [301, 24]},  # 14448 B: 4 chunks of 76 rows
        {"name": "model.layers.0.attn.qkv.weight", "dtype": "BF16", "shape": [40, 16]},
        {"name": "model.layers.0.attn.qkv.bias", "dtype": "F32", "shape": [40]},
        {"name": "model.layers.0.attn.sinks", "dtype": "F32", "shape": [3]},
        {"name": "model.layers.0.mlp.experts.blocks", "dtype": "U8", "shape": [4, 7, 3, 16]},
        {"name": "model.layers.0.mlp.experts.big", "dtype": "U8", "shape": [3, 5, 1000]},  # chunks [1, 3, 1000]
        {"name": "model.layers.1.norm.scale", "dtype": "F32", "shape": [2000]},  # 1-D over 2 chunks
        {"name": "model.layers.1.w4", "dtype": "F32", "shape": [2, 3, 4, 5]},
        {"name": "model.scalar", "dtype": "F32", "shape": []},
        {"name": "model.zero_rows", "dtype": "BF16", "shape": [0, 8]},
        {"name": "lm_head.weight", "dtype": "BF16", "shape": [33, 24]},
    ],
    "empty_dicts": ["model.layers.2", "extra"],
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    exe = selftest_bin()
    orbax()
    d = tmp_path_factory.mktemp("orbax")
    spec = d / "spec.json"
    spec.write_text(json.dumps(SPEC))
    out = d / "jax_params"
    subprocess.run([exe, "--spec", spec, "--out", out, "--seed", "12345", "--max-chunk-bytes", "4096"], check=True)
    return out, expected_tree(SPEC, 12345)


def test_chunking_on_disk(checkpoint):
    out, _ = checkpoint
    zarray = json.loads((out / "model.embed.weight" / ".zarray").read_text())
    assert zarray["chunks"] == [76, 24] and zarray["compressor"] is None
    assert sorted(os.listdir(out / "model.embed.weight")) == [".zarray", "0.0", "1.0", "2.0", "3.0"]
    assert (out / "model.embed.weight" / "3.0").stat().st_size == 76 * 24 * 2  # padded to the full chunk
    assert json.loads((out / "model.layers.0.mlp.experts.big" / ".zarray").read_text())["chunks"] == [1, 3, 1000]


def test_standard_checkpointer_restores(checkpoint):
    ocp = orbax()
    out, want = checkpoint
    assert_same(ocp.StandardCheckpointer().restore(out), want)


def test_pytree_checkpointer_restores(checkpoint):
    ocp = orbax()
    out, want = checkpoint
    assert_same(ocp.PyTreeCheckpointer().restore(out), want)


def test_restore_onto_device_with_target(checkpoint):
    """The JAX user's path: restore straight into jax.Arrays given shapes, dtypes and a sharding."""
    ocp = orbax()
    import jax

    out, want = checkpoint
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), want)
    got = ocp.StandardCheckpointer().restore(out, target)
    assert all(isinstance(x, jax.Array) for x in jax.tree.leaves(got))
    assert_same(got, want)


def test_metadata_then_restore_onto_device(checkpoint):
    """The docs/ORBAX.md snippet: shapes and dtypes from Orbax's metadata, then a sharded restore."""
    ocp = orbax()
    import jax

    out, want = checkpoint
    ckpt = ocp.StandardCheckpointer()
    meta = ckpt.metadata(out)
    meta = getattr(meta, "item_metadata", meta)  # older orbax returns the tree itself
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding), meta)
    got = ckpt.restore(out, target)
    assert all(isinstance(x, jax.Array) for x in jax.tree.leaves(got))
    assert_same(got, want)
