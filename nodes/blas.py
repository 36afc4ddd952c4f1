"""MKL's kernels on CPUs that are not Intel's (nodes/mkl_vendor.c): `prefer_fast_kernels()` must run before torch
is imported; nodes/models.py, through which every use of torch in the project goes, calls it when imported.

torch's CPU build links Intel MKL, which picks its GEMM kernels by CPU vendor. On AMD CPUs the target's verify
forward (several rows: the last token and the draft) took a generic path: on this project's 2-core AMD EPYC
machines a 5-token forward of SmolLM2-135M cost 1.8-2.2x a 1-token decode step. A two-function library that
answers MKL's vendor query as Intel's, loaded ahead of torch, makes MKL use its AVX2 kernels: a 5-token forward
cost ~20-30 % less, a 1-token step about the same (nodes/backends/HF.md has the measurement).

`DSD_MKL_VENDOR=0` turns it off (then MKL chooses as it would). Without a C compiler, or when torch was imported
before the call, the process runs without it; `state()` says which, and the hf backend logs it.
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

from testbed.files import build_c, cache_build_path

SOURCE = Path(__file__).with_name("mkl_vendor.c")
ENV = "DSD_MKL_VENDOR"

_state: str | None = None  # this process's outcome: a process-wide fact, decided once


def cpuinfo(field: str) -> str:
    """The value of `field` for the first CPU in /proc/cpuinfo ('' where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.split(":", 1)[0].strip() == field:
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def cpu_vendor() -> str:
    return cpuinfo("vendor_id")


def cpu_flags() -> set[str]:
    return set(cpuinfo("flags").split())


def library_path() -> Path:
    return cache_build_path(SOURCE, "libdsd-mkl-vendor", ".so")


def build() -> Path:
    """Compile the library if missing (cc). Raises RuntimeError naming what is missing."""
    return build_c(SOURCE, library_path(), ("-O2", "-shared", "-fPIC"))


def prefer_fast_kernels() -> str:
    """Load the vendor library before torch where it applies; returns (and remembers) the outcome, see state()."""
    global _state
    if _state is not None:
        return _state
    vendor = cpu_vendor()
    if os.environ.get(ENV, "1") == "0":
        _state = f"off ({ENV}=0)"
    elif vendor in ("GenuineIntel", ""):
        _state = f"off (not needed: CPU vendor {vendor or 'unknown'})"
    elif "torch" in sys.modules:
        _state = "off (torch was imported before nodes.blas.prefer_fast_kernels())"
    else:
        try:
            ctypes.CDLL(str(build()), mode=os.RTLD_GLOBAL)
            _state = f"on (MKL told the {vendor} CPU is Intel's)"
        except (OSError, RuntimeError) as e:
            _state = f"off ({e})"
    return _state


def state() -> str:
    """What prefer_fast_kernels() did in this process ('not asked' before it was called)."""
    return _state or "not asked"


if __name__ == "__main__":  # make setup: build it ahead of the first real-model run
    print(build())
