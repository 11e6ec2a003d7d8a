"""Shared pytest fixtures: where the CLI, the repo and ../shared are, a safetensors reader, and a
session-wide tiny checkpoint.

GPTOSS_BIN overrides the CLI (default build/gptoss); the tools (gptoss-make-checkpoint, ...) are
looked up beside it.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"


def _bin():
    return Path(os.environ.get("GPTOSS_BIN", REPO / "build" / "gptoss")).resolve()


@pytest.fixture(scope="session")
def repo_root():
    return REPO


@pytest.fixture(scope="session")
def shared_dir():
    if not (SHARED / "oracle").is_dir():
        pytest.skip(f"{SHARED} (the read-only shared material) is not present")
    return SHARED


@pytest.fixture(scope="session")
def gptoss_bin():
    b = _bin()
    if not b.exists():
        pytest.skip(f"{b} not built (set GPTOSS_BIN or build with cmake)")
    return b


@pytest.fixture(scope="session")
def tool_bin():
    """tool_bin("make-checkpoint") -> path of build/gptoss-make-checkpoint (beside GPTOSS_BIN)."""
    def get(name):
        p = _bin().parent / f"gptoss-{name}"
        if not p.exists():
            pytest.skip(f"{p} not built")
        return p
    return get


@pytest.fixture(scope="session")
def oracle(shared_dir):
    """The numpy reference module ../shared/oracle/np_ref.py (deq, load, forward)."""
    sys.path.insert(0, str(shared_dir / "oracle"))
    import np_ref
    return np_ref


def make_tiny_hf(shared, out, *args):
    subprocess.run([sys.executable, str(shared / "oracle" / "make_tiny_hf.py"), str(out), *map(str, args)],
                   check=True, capture_output=True)
    return Path(out)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, shared_dir):
    """A tiny Hugging Face MXFP4 checkpoint (make_tiny_hf.py defaults, seed 0, 2 shards)."""
    return make_tiny_hf(shared_dir, tmp_path_factory.mktemp("tiny") / "model", "--seed", 0, "--shard-mb", 1)


def run_cli(binary, *args, check=True, **kw):
    r = subprocess.run([str(binary), *map(str, args)], capture_output=True, text=True, **kw)
    if check and r.returncode != 0:
        raise AssertionError(f"{binary} {' '.join(map(str, args))} failed ({r.returncode}):\n{r.stderr}")
    return r


def read_safetensors(path, raw=False):
    """{name: array} of one file; BF16 widened to float32 exactly unless raw (then uint16 bits)."""
    data = np.fromfile(path, dtype=np.uint8)
    n = int.from_bytes(data[:8].tobytes(), "little")
    hdr = json.loads(data[8:8 + n].tobytes())
    out = {}
    for k, v in hdr.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        buf = data[8 + n + a: 8 + n + b]
        dt = v["dtype"]
        if dt == "BF16":
            bits = buf.view(np.uint16)
            arr = bits if raw else (bits.astype(np.uint32) << 16).view(np.float32)
        elif dt == "F32":
            arr = buf.view(np.float32)
        elif dt == "U8":
            arr = buf
        else:
            raise ValueError(dt)
        out[k] = arr.reshape(v["shape"])
    return out


def read_dir(d, raw=False):
    """Every tensor of every .safetensors file in a directory."""
    t = {}
    for f in sorted(Path(d).glob("*.safetensors")):
        t.update(read_safetensors(f, raw))
    return t


@pytest.fixture(scope="session")
def load_tensors():
    return read_dir
