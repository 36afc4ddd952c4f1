"""How much the nodes' real compute slowed each other down when they shared one machine.

An emulation runs every draft and target on this host. With real models (the hf backend) a verify batch that
runs while a draft is computing competes with it for cores, caches and memory bandwidth, which separate edge
and cloud machines would not; the simulator has no such term. From the emulation's own tables:

- verify batches: duration when no draft computed during it (overlap < 10 % of the batch) vs when a draft
  computed during most of it (> 90 %), per (batch size, tokens) class with both kinds present;
- draft rounds after the first: time per drafted token when no batch ran during it vs during most of it.

The ratio (overlapped / alone) is the interference; 1.0 means none. Profiled backends sleep instead of
computing: nothing to measure there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ALONE, TOGETHER = 0.1, 0.9


def _overlap_fraction(starts: np.ndarray, ends: np.ndarray, other: np.ndarray) -> np.ndarray:
    """For each interval [s, e): the time the `other` intervals (n, 2) cover in it, summed over them, as a fraction
    of e - s (at most 1; NaN for empty intervals). F(t) = integral of the number of `other` intervals active up to
    t is piecewise linear, so every interval's overlap is F(e) - F(s): O((n + m) log n), not n x m."""
    starts, ends = np.asarray(starts, float), np.asarray(ends, float)
    if not len(other):
        return np.where(ends > starts, 0.0, np.nan)
    t = np.concatenate([other[:, 0], other[:, 1]])
    step = np.concatenate([np.ones(len(other)), -np.ones(len(other))])
    order = np.argsort(t, kind="stable")
    t, active = t[order], np.cumsum(step[order])  # intervals active on [t[k], t[k + 1])
    F = np.concatenate([[0.0], np.cumsum(active[:-1] * np.diff(t))])
    covered = np.interp(ends, t, F) - np.interp(starts, t, F)
    length = ends - starts
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(length > 0, np.minimum(1.0, covered / length), np.nan)


def _split(values: pd.Series, frac: np.ndarray) -> dict[str, Any]:
    a, t = values[frac < ALONE], values[frac > TOGETHER]
    return {
        "alone_ms": float(a.mean()) if len(a) else None,
        "alone_n": int(len(a)),
        "together_ms": float(t.mean()) if len(t) else None,
        "together_n": int(len(t)),
        "ratio": float(t.mean() / a.mean()) if len(a) and len(t) and a.mean() > 0 else None,
    }


def overlap_stats(emu: Path) -> dict[str, Any] | None:
    """Interference figures from an emulation directory (emu/), or None without batches and rounds."""
    emu = Path(emu)
    try:
        b = pd.read_parquet(emu / "batches.parquet")
        r = pd.read_parquet(emu / "rounds.parquet")
    except (OSError, ValueError):
        return None
    if b.empty or r.empty:
        return None
    drafting = r.loc[r["gamma"] > 0, ["draft_start_s", "send_s"]].to_numpy(float)
    batches = b[["start_s", "end_s"]].to_numpy(float)
    v = b[b["kind"] == "verify"].copy()
    v["ms"] = (v["end_s"] - v["start_s"]) * 1e3
    v["frac"] = _overlap_fraction(v["start_s"].to_numpy(float), v["end_s"].to_numpy(float), drafting)
    classes = []
    for (size, tokens), g in v.groupby(["size", "tokens"]):
        s = _split(g["ms"], g["frac"].to_numpy())
        if s["ratio"] is not None:
            classes.append({"batch_size": int(size), "tokens": int(tokens), **s})
    first = r["round"] == r.groupby("request_id")["round"].transform("min")
    d = r[(~first) & (r["gamma"] > 0)].copy()
    d["ms_per_token"] = (d["send_s"] - d["draft_start_s"]) * 1e3 / d["gamma"]
    d["frac"] = _overlap_fraction(d["draft_start_s"].to_numpy(float), d["send_s"].to_numpy(float), batches)
    n_all = sum(c["alone_n"] + c["together_n"] for c in classes)
    weighted = (sum(c["ratio"] * (c["alone_n"] + c["together_n"]) for c in classes) / n_all) if n_all else None
    return {
        "verify_classes": classes,
        "verify_ratio": weighted,
        "verify_overlapped_share": float(np.nanmean(v["frac"] > 0.5)) if len(v) else None,
        "draft": _split(d["ms_per_token"], d["frac"].to_numpy()),
        "thresholds": {"alone_below": ALONE, "together_above": TOGETHER},
    }
