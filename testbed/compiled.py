"""The simulator's optional compiled core: the SAME Python sources compiled with mypyc (no second implementation).

`python -m testbed.compile_core build` (run by `make setup` / `make compile`) compiles MODULES into C extensions placed
next to their sources (testbed/sim/engine.cpython-311-*.so ...) and records the SHA-256 of those sources in
testbed/_compiled.json. An extension is imported in preference to its .py, so `guard()` (called when the testbed
package is imported, before any of these modules) checks the record: when a source changed since the build (a stale
build), when the record is missing, or when DSD_PURE=1 is set, every module of the group is loaded from its .py
instead (all or none: compiled modules of one group call each other directly). The pure modules stay the reference:
tests compare a compiled run with a pure one table by table.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the directory holding the testbed package
# the simulator's hot loop: event loop, network, nodes, and the shared round / batching / cost / wire rules
MODULES = (
    "testbed.sim.engine",
    "testbed.sim.network",
    "testbed.sim.nodes",
    "testbed.rounds",
    "testbed.policies.batching",
    "testbed.wire",
)  # Not compiled, tried: testbed.tables (its compiled record_batches, a generator yielding from a nested
# generator, raised "generator already executing" about once in 12 reports when compare read two sides on two
# threads) and testbed.compute / acceptance / rows (a compiled function checks its annotations at the boundary:
# interpreted callers pass floats and numpy integers where `int` is annotated, e.g. calibrate.fromrun's context)
GROUP = "testbed._compiled_core"  # mypyc's shared library of the group (testbed/_compiled_core__mypyc.*.so)
RECORD = ROOT / "testbed" / "_compiled.json"
PURE_ENV = "DSD_PURE"  # set to 1: always the pure-Python modules


def source_path(module: str) -> Path:
    return ROOT.joinpath(*module.split(".")).with_suffix(".py")


def source_hash() -> str:
    """SHA-256 over the modules' names and sources, in MODULES order."""
    h = hashlib.sha256()
    for m in MODULES:
        h.update(m.encode() + b"\0" + source_path(m).read_bytes() + b"\0")
    return h.hexdigest()


def extensions() -> list[Path]:
    """Every compiled extension inside the testbed package (only this build puts any there)."""
    return sorted({p for s in importlib.machinery.EXTENSION_SUFFIXES for p in (ROOT / "testbed").rglob("*" + s)})


def built() -> bool:
    return bool(extensions())


def record() -> dict[str, object]:
    """What a build of the current sources records: their hash and the extension files it leaves."""
    return {"source_sha256": source_hash(), "extensions": [str(p.relative_to(ROOT)) for p in extensions()]}


def usable() -> bool:
    """True when the compiled modules may be imported: built from the current sources, nothing else compiled."""
    if os.environ.get(PURE_ENV, "") not in ("", "0") or not built():
        return False
    try:
        return json.loads(RECORD.read_text()) == record()
    except (OSError, ValueError):
        return False


class _PureFinder(importlib.abc.MetaPathFinder):
    """Finds the testbed's modules as their .py sources (ahead of an extension the default finder would pick)."""

    def find_spec(self, name, path=None, target=None):  # noqa: ANN001 (the importlib protocol)
        src = source_path(name)
        if name.startswith("testbed.") and src.exists():
            return importlib.util.spec_from_file_location(name, src)
        return None


def guard() -> None:
    """Called once when the testbed package is imported: fall back to the sources unless the build is usable."""
    if built() and not usable() and not any(isinstance(f, _PureFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _PureFinder())


def active() -> bool:
    """Are the compiled modules the ones in use (for benchmarks to say which they measured)?"""
    import testbed.rounds  # one module of the group: all of them are compiled or none

    return not str(testbed.rounds.__file__).endswith(".py")


def clean() -> None:
    RECORD.unlink(missing_ok=True)
    for p in extensions():
        p.unlink()
