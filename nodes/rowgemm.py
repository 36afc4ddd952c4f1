"""Linear layers over a few rows (nodes/rowgemm.c): what a verify forward computes, at the cost of reading the weights
once. `install(model)` makes the model's plain nn.Linear layers use it for inputs of 1 to MAX_ROWS rows (a distilled
draft's SubsetHead calls `linear_t` itself); nodes.models.load_model calls it for every model it loads, so nodes,
calibration and the run's profile check time the same kernels, and the target decoding alone (one row) gets the
same kernel as its verify.

Why: a BLAS GEMM packs the weight matrix on every call. For the few rows of a verify (the last token plus the
draft) that costs as much as the product: on this project's 2-core AMD EPYC machines a 5-token forward of
SmolLM2-135M cost ~1.6x a 1-token one with MKL (its matrix products 2.0x), although both read the same weights
once. Here every weight row is read once (fetched ahead) and multiplied into all rows of the input while it is in
registers: the products of a 5-token forward cost about what a 1-token one costs, and one row no more than MKL's
matrix-vector product (nodes/backends/HF.md has the measurement).

float32 only, one thread (the call runs on the caller's thread; with more torch threads MKL is used, which
spreads its work over them), AVX2 + FMA; the same products in another summation order (results within 1e-6 of
MKL's for these layers). `DSD_ROW_GEMM=0` turns it off; without a C compiler or AVX2 the model keeps MKL.
`state()` says which; the hf backend logs it, calibrate and the profile check record it.
"""

from __future__ import annotations

import ctypes
import functools
import os
from pathlib import Path

from nodes.blas import cpu_flags
from testbed.files import build_c, cache_build_path

SOURCE = Path(__file__).with_name("rowgemm.c")
ENV = "DSD_ROW_GEMM"
MAX_ROWS = 48  # measured: below ~48 rows this beats MKL on the SmolLM2 layers (one thread); prefills keep MKL

_lib = None
_state: str | None = None


def library_path() -> Path:
    return cache_build_path(SOURCE, "libdsd-rowgemm", ".so")


def build() -> Path:
    return build_c(SOURCE, library_path(), ("-O3", "-mavx2", "-mfma", "-shared", "-fPIC"))


def cpu_supported() -> bool:
    """Does this CPU run the kernel (AVX2 + FMA)?"""
    return {"avx2", "fma"} <= cpu_flags()


def load() -> str:
    """Build and load the library once per process; returns the state."""
    global _lib, _state
    if _state is not None:
        return _state
    if os.environ.get(ENV, "1") == "0":
        _state = f"off ({ENV}=0)"
    elif not cpu_supported():
        _state = "off (the CPU has no AVX2 + FMA)"
    else:
        try:
            lib = ctypes.CDLL(str(build()))
            fn = lib.dsd_linear_rows
            p, i = ctypes.c_void_p, ctypes.c_int
            fn.argtypes = [p, i, i, p, i, p, p]
            fn.restype = None
            _lib = fn
            _state = f"on (linear layers of 1-{MAX_ROWS} rows, one thread)"
        except (OSError, RuntimeError) as e:
            _state = f"off ({e})"
    return _state


def state() -> str:
    """What load() found in this process ('not asked' before it was called)."""
    return _state or "not asked"


def linear(x, weight, bias=None):
    """x @ weight.T + bias with the (loaded) row kernel: x (..., I) float32, at most MAX_ROWS rows; weight (O, I)."""
    import torch

    rows = x.reshape(-1, x.shape[-1]).contiguous()
    w = weight.contiguous()
    b = bias.contiguous() if bias is not None else None
    m, n_in = rows.shape
    n_out = w.shape[0]
    y = torch.empty((m, n_out), dtype=torch.float32)
    _lib(rows.data_ptr(), m, n_in, w.data_ptr(), n_out, b.data_ptr() if b is not None else None, y.data_ptr())
    return y.reshape(*x.shape[:-1], n_out)


def _use(x, weight) -> bool:
    import torch

    if _lib is None or x.dtype != torch.float32 or weight.dtype != torch.float32 or x.device.type != "cpu":
        return False
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return False  # training (testbed/distill.py) needs autograd
    rows = x.numel() // max(1, x.shape[-1])
    return 1 <= rows <= MAX_ROWS and torch.get_num_threads() == 1


def linear_t(x, weight, bias=None):
    """torch.nn.functional.linear(x, weight, bias), with the row kernel where it applies (loaded, float32, few rows,
    one thread, no autograd): the one dispatch of RowLinear and SubsetHead."""
    if _use(x, weight):
        return linear(x, weight, bias)
    import torch

    return torch.nn.functional.linear(x, weight, bias)


@functools.cache
def _row_linear_class():
    import torch  # here, not at import: `python -m nodes.rowgemm` builds the library where torch is not installed

    class RowLinear(torch.nn.Linear):
        """nn.Linear whose forward takes the row kernel where it is faster (same parameters and state dict)."""

        def forward(self, x):
            return linear_t(x, self.weight, self.bias)

    return RowLinear


def install(model) -> str:
    """Give the model's plain nn.Linear layers the row kernel (their class changes, nothing else). Returns state()."""
    import torch

    if load().startswith("on"):
        row_linear = _row_linear_class()
        for mod in model.modules():
            if type(mod) is torch.nn.Linear:
                mod.__class__ = row_linear
    return state()


if __name__ == "__main__":  # make setup: build it ahead of the first real-model run
    print(build())
