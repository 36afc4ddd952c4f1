"""nodes/blas.py: the MKL vendor library is built, exports what MKL asks, and the hf backend loads it before torch."""

import ctypes
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nodes import blas

ROOT = Path(__file__).resolve().parent.parent


def _state_after(code: str, **env) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nfrom nodes import blas; print(blas.state())"],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def test_library_answers_mkl_as_intel(tmp_path, monkeypatch):
    monkeypatch.setenv("DSD_CACHE_DIR", str(tmp_path))
    lib = blas.build()
    assert lib.parent == tmp_path and lib.exists()
    f = ctypes.CDLL(str(lib)).mkl_serv_intel_cpu_true
    assert f() == 1
    assert blas.build() == lib  # built once per version of the source


@pytest.mark.parametrize(
    "code",
    [
        "import nodes.backends.hf",  # a node program
        # testbed run's model check loads a tokenizer: transformers imports torch (it did so before the library
        # was loaded when only the hf backend loaded it)
        "from nodes import models\nfrom transformers import AutoTokenizer",
    ],
)
def test_loaded_before_torch_by_what_uses_torch(tmp_path, code):
    pytest.importorskip("torch")
    state = _state_after(code, DSD_CACHE_DIR=str(tmp_path))
    if blas.cpu_vendor() in ("GenuineIntel", ""):
        assert state.startswith("off (not needed"), state
    else:
        assert state.startswith("on ("), state  # not 'torch was imported before'


def test_switched_off_and_too_late(tmp_path):
    pytest.importorskip("torch")
    assert _state_after("import nodes.backends.hf", DSD_MKL_VENDOR="0") == "off (DSD_MKL_VENDOR=0)"
    if blas.cpu_vendor() not in ("GenuineIntel", ""):
        late = _state_after("import torch\nimport nodes.backends.hf", DSD_CACHE_DIR=str(tmp_path))
        assert late.startswith("off (torch was imported before"), late
