"""The run directory (DESIGN.md "run directory contract"): spec.yaml, meta.json and per-executor results."""

from __future__ import annotations

import json
import os
import platform
import socket
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

from testbed import __version__
from testbed.files import write_json, write_text
from testbed.spec import Scenario, spec_to_yaml
from testbed.tables import write_events, write_tables
from testbed.workload import Workload

# `testbed run --sim-spread K`: {"net_seeds": [...], "summaries": [...]} of the simulation repeated with K other
# network seeds (testbed/sim/spread.py), or {"skipped": why}; read by analysis/compare.py ("spread")
SPREAD_FILE = "sim-spread.json"


def prepare(
    out: Path,
    scenario: Scenario,
    command: str,
    workload: Workload,
    backends: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """Create DIR, write the resolved spec and meta.json (updated, not replaced, by later steps)."""
    tr = workload.trace
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "spec.yaml", f"# resolved from {scenario.source}\n" + spec_to_yaml(scenario.spec))
    update_meta(
        out,
        {
            "testbed_version": __version__,
            "command": command,
            "argv": sys.argv,
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "seed": scenario.spec.seed,
            "scenario": scenario.spec.name,
            "source": scenario.source,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "backends": backends or {},
            "workload": {
                "requests": len(workload),
                "trace": tr.source,
                "skipped_rows": tr.skipped_rows,
                "excluded_rows": tr.excluded_rows,
            },
            **(extra or {}),
        },
    )


def update_meta(out: Path, fields: dict[str, Any]) -> None:
    p = out / "meta.json"
    meta = json.loads(p.read_text()) if p.is_file() else {}
    for k, v in fields.items():
        if isinstance(v, dict) and isinstance(meta.get(k), dict):
            meta[k] = {**meta[k], **v}
        else:
            meta[k] = v
    write_json(p, meta)


def write_results(
    d: Path,
    requests: pd.DataFrame | None,
    rounds: pd.DataFrame | None,
    batches: pd.DataFrame | None,
    summary: dict[str, Any],
    events: pd.DataFrame | None = None,
) -> None:
    """The tables (None: already streamed there by the executor), the events and summary.json."""
    d.mkdir(parents=True, exist_ok=True)
    if requests is not None and rounds is not None and batches is not None:
        write_tables(d, requests, rounds, batches)
    if events is not None:
        write_events(d, events)
    write_json(d / "summary.json", summary)
