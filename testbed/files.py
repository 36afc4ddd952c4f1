"""Atomic file writes, used by every executor and command that writes a run's files.

A reader (the orchestrator polling a node's progress.json, a report reading a run directory, a run killed
half-way) sees either the old file or the complete new one, never a partial file: the content goes to a
hidden temporary file next to the target (named with the writer's pid, so concurrent writers never share
one), which then replaces the target in one rename.
"""

from __future__ import annotations

import json
import os
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
