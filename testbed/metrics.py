"""Metric definitions (named as in vLLM's benchmark), one implementation for simulator and emulator.

From the requests / rounds / batches tables:
- TTFT  = first_token_s - arrival_s                      (ms)
- TPOT  = (finish_s - first_token_s) / (output_tokens - 1) (ms; requests with one output token excluded)
- E2E   = finish_s - arrival_s                           (ms)
- duration = last finish (or last arrival, if later) - 0 (the run's start, first arrival)
- request throughput = completed / duration; output token throughput = tokens of completed / duration
- goodput = completed requests meeting both SLOs (TTFT <= slo_ttft_ms, TPOT <= slo_tpot_ms) / duration
- acceptance rate = accepted / drafted tokens over all rounds with gamma > 0
- tokens per round = mean gained; mean gamma = mean drafted window over rounds with gamma > 0
- batch size = mean requests per verify batch; utilisation = busy time / duration per target
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

DEFAULT_SLO_TTFT_MS = 2000.0
DEFAULT_SLO_TPOT_MS = 100.0


def latencies(requests: pd.DataFrame) -> pd.DataFrame:
    """Per-request ttft_ms / tpot_ms / e2e_ms (NaN where undefined)."""
    r = requests
    ttft = (r["first_token_s"] - r["arrival_s"]) * 1e3
    e2e = (r["finish_s"] - r["arrival_s"]) * 1e3
    n = r["output_tokens"].astype("float64")
    tpot = ((r["finish_s"] - r["first_token_s"]) * 1e3 / (n - 1)).where(n > 1)
    return pd.DataFrame({"ttft_ms": ttft, "tpot_ms": tpot, "e2e_ms": e2e}, index=r.index)


def dist(x: pd.Series | np.ndarray) -> dict[str, float | None]:
    a = np.asarray(x, dtype=np.float64)
    a = a[~np.isnan(a)]
    if a.size == 0:
        return {"mean": None, "p50": None, "p90": None, "p99": None}
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {"mean": float(a.mean()), "p50": float(p50), "p90": float(p90), "p99": float(p99)}


def _f(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def summarize(requests: pd.DataFrame, rounds: pd.DataFrame, batches: pd.DataFrame,
              slo_ttft_ms: float = DEFAULT_SLO_TTFT_MS, slo_tpot_ms: float = DEFAULT_SLO_TPOT_MS) -> dict[str, Any]:
    ok = requests["status"] == "ok"
    done = requests[ok]
    lat = latencies(done)
    ends = [done["finish_s"].max() if len(done) else 0.0, requests["arrival_s"].max() if len(requests) else 0.0]
    duration = float(max(e for e in ends if not pd.isna(e)) if any(not pd.isna(e) for e in ends) else 0.0)
    dur = duration if duration > 0 else float("nan")
    tpot_ok = lat["tpot_ms"].fillna(0.0) <= slo_tpot_ms
    good = int(((lat["ttft_ms"] <= slo_ttft_ms) & tpot_ok).sum())
    spec = rounds[rounds["gamma"] > 0]
    drafted = int(spec["gamma"].sum())
    verify = batches[batches["kind"] == "verify"]
    per_target = {}
    for t, b in batches.groupby("target", sort=True):
        busy = float((b["end_s"] - b["start_s"]).sum())
        vb = b[b["kind"] == "verify"]
        per_target[str(t)] = {
            "utilisation": _f(busy / dur),
            "batches": int(len(b)),
            "mean_verify_batch": _f(vb["size"].mean()) if len(vb) else None,
        }
    return {
        "requests_total": int(len(requests)),
        "requests_completed": int(ok.sum()),
        "requests_failed": int((requests["status"] == "failed").sum()),
        "requests_unfinished": int((requests["status"] == "unfinished").sum()),
        "duration_s": duration,
        "request_throughput_rps": _f(len(done) / dur),
        "output_token_throughput_tps": _f(float(done["output_tokens"].sum()) / dur),
        "goodput_rps": _f(good / dur),
        "slo": {"ttft_ms": slo_ttft_ms, "tpot_ms": slo_tpot_ms},
        "ttft_ms": dist(lat["ttft_ms"]),
        "tpot_ms": dist(lat["tpot_ms"]),
        "e2e_ms": dist(lat["e2e_ms"]),
        "acceptance_rate": _f(spec["accepted"].sum() / drafted) if drafted else None,
        "tokens_per_round": _f(rounds["gained"].mean()) if len(rounds) else None,
        "mean_gamma": _f(spec["gamma"].mean()) if len(spec) else None,
        "rounds": int(len(rounds)),
        "target_batch_size": _f(verify["size"].mean()) if len(verify) else None,
        "targets": per_target,
    }
