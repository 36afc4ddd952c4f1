"""Build the simulator's compiled core (testbed/compiled.py says what it is and when it is used):
`python -m testbed.compile_core build [--if-stale] | clean | status`. Needs mypy (mypyc), a C compiler and Python's
headers, all installed by `make setup`."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from testbed.compiled import GROUP, MODULES, RECORD, ROOT, built, clean, record, source_hash, source_path, usable


def build(if_stale: bool = False) -> None:
    """Compile MODULES with mypyc (needs mypy, a C compiler and Python's headers), then record their hash."""
    if if_stale and usable():
        return
    from mypyc.build import mypycify
    from setuptools import setup

    clean()
    digest = source_hash()
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="dsd-mypyc-") as tmp:
        os.chdir(ROOT)  # mypyc places the extensions relative to the working directory (next to the sources)
        try:
            setup(
                name="dsd-compiled-core",
                ext_modules=mypycify(
                    [str(source_path(m).relative_to(ROOT)) for m in MODULES]
                    + ["--follow-imports=silent", "--ignore-missing-imports"],  # type-check the compiled modules
                    opt_level="3",
                    group_name=GROUP,
                    target_dir=str(Path(tmp) / "c"),
                ),
                script_args=["-q", "build_ext", "--inplace", "--build-temp", str(Path(tmp) / "o")],
            )
        finally:
            os.chdir(cwd)
    if source_hash() != digest:  # edited while compiling: the build may hold either version
        clean()
        raise SystemExit("testbed.compile_core: sources changed during the build; run it again")
    RECORD.write_text(json.dumps(record(), indent=1) + "\n")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m testbed.compile_core", description=__doc__)
    ap.add_argument("action", choices=("build", "clean", "status"))
    ap.add_argument("--if-stale", action="store_true", help="build only when there is no usable build")
    a = ap.parse_args(argv)
    if a.action == "build":
        build(a.if_stale)
    elif a.action == "clean":
        clean()
    state = "usable" if usable() else ("stale or unrecorded: pure Python in use" if built() else "not built")
    print(f"compiled core: {state}")


if __name__ == "__main__":
    main()
