"""A sweep's output directory: one record per finished trial (what makes a sweep resumable), the trial table.

OUT/sweep.yaml            the sweep file as it was run
OUT/sweep.json            its trials (id, parameters, command line), the swept dimensions, how it ran
OUT/trials/<id>/          each trial's run directory (spec.yaml, meta.json, sim/ emu/ ..., trial.log)
OUT/records/<id>.json     each finished trial: status (ok | partial | failed), error, metrics, wall_s, host
OUT/trials.parquet        one row per trial: parameters x metrics (sim.*, emu.*) x fidelity errors (err.*)
OUT/summary.html          plots along the swept dimensions (analysis/sweep_report.py)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from testbed.files import write_json, write_parquet
from testbed.sweep.file import Sweep

BASE_COLUMNS = ("trial", "status", "error", "wall_s", "host")


def record_path(out: Path, trial_id: str) -> Path:
    return out / "records" / f"{trial_id}.json"


def save_record(out: Path, record: dict[str, Any]) -> None:
    p = record_path(out, record["id"])
    p.parent.mkdir(parents=True, exist_ok=True)
    write_json(p, record)


def load_record(out: Path, trial_id: str) -> dict[str, Any] | None:
    try:
        return json.loads(record_path(out, trial_id).read_text())
    except (OSError, ValueError):
        return None  # absent or half-written: the trial runs (again)


def table(sweep: Sweep, records: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """One row per trial of the sweep that has a record (in sweep order)."""
    rows = []
    for t in sweep.trials:
        r = records.get(t.id)
        if r is None:
            continue
        row: dict[str, Any] = {
            "trial": t.id,
            "status": r["status"],
            "error": r.get("error"),
            "wall_s": r.get("wall_s"),
            "host": r.get("host"),
        }
        row.update(t.param_dict())
        row.update(r.get("metrics") or {})
        rows.append(row)
    df = pd.DataFrame(rows)
    for c in df.columns:  # parquet wants one type per column: mixed parameter values become text
        if df[c].dtype == object and c not in ("error",):
            vals = df[c].dropna()
            if not vals.map(lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)).all():
                df[c] = df[c].map(lambda v: None if v is None else (v if isinstance(v, str) else json.dumps(v)))
    return df


def write_table(out: Path, df: pd.DataFrame) -> Path:
    p = out / "trials.parquet"
    write_parquet(p, df)
    return p
