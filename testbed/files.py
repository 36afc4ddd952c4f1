"""Atomic file writes, used by every executor and command that writes a run's files; the testbed's cache on this
machine and the small C programs compiled into it (`build_c`).

A reader (the orchestrator polling a node's progress.json, a report reading a run directory, a run killed
half-way) sees either the old file or the complete new one, never a partial file: the content goes to a
hidden temporary file next to the target (named with the writer's pid, so concurrent writers never share
one), which then replaces the target in one rename.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_text(path: Path, text: str) -> None:
    tmp = _tmp(path)
    tmp.write_text(text)
    tmp.replace(path)


def write_json(path: Path, obj: Any, indent: int = 2) -> None:
    """JSON with numpy scalars as numbers and anything else unknown (paths...) as its text."""
    write_text(path, json.dumps(obj, indent=indent, default=_json_default) + "\n")


def write_parquet(path: Path, df: pd.DataFrame) -> None:
    tmp = _tmp(path)
    df.to_parquet(tmp, index=False)
    tmp.replace(path)


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    return str(o)


def cache_dir() -> Path:
    """The testbed's cache on this machine: $DSD_CACHE_DIR, else $XDG_CACHE_HOME (or ~/.cache)/dsd-testbed."""
    base = os.environ.get("DSD_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "dsd-testbed"
    )
    return Path(base)


def model_cache_dir() -> Path:
    """Where the shipped models are materialised: $DSD_MODEL_CACHE, else ~/.cache/dsd-testbed/models. Read by the
    node programs and by the docker runtime, which mounts it into the node containers."""
    return Path(os.environ.get("DSD_MODEL_CACHE", "~/.cache/dsd-testbed/models")).expanduser()


def cache_build_path(source: Path, stem: str, suffix: str = "") -> Path:
    """Where what is compiled from `source` is kept: one per version of the source (checkouts and worktrees of
    different versions never share one)."""
    digest = hashlib.sha1(source.read_bytes()).hexdigest()[:10]
    return cache_dir() / f"{stem}-{digest}{suffix}"


def build_c(
    source: Path, out: Path, flags: tuple[str, ...], libs: tuple[str, ...] = (), hint: str = "", force: bool = False
) -> Path:
    """Compile `source` into `out` with cc (`cc flags -o out source libs`) unless `out` exists and is not older than
    the source; the result replaces `out` in one rename (concurrent builders never share a temporary file).
    RuntimeError naming what is missing; `hint`: what to install when the compiler fails."""
    if not force and out.exists() and out.stat().st_mtime >= source.stat().st_mtime:
        return out
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise RuntimeError(f"no C compiler (apt-get install gcc) to build {out.name}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp(out)
    r = subprocess.run([cc, *flags, "-o", str(tmp), str(source), *libs], capture_output=True, text=True)
    if r.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(
            f"building {out.name} from {source} failed{f' ({hint})' if hint else ''}:\n{r.stderr.strip()}"
        )
    tmp.replace(out)
    return out
