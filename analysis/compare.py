"""Compare two result sets of the run-directory schema: simulated vs emulated (DIR/compare.json), or run A vs run B.

Every number is recomputed from the tables through `testbed.metrics.summarize` (the one definition of each
metric); nothing here defines a metric. For each metric: both values, the absolute difference, the relative
error (b - a) / |a| with a (sim, or run A) as the reference, and a pass flag against the tolerance below.

Tolerances (relative, |error| <= tolerance passes; the fidelity goals of the project, issue 5):

    statistic                                             tolerance
    ----------------------------------------------------  ---------
    request / output-token throughput, goodput             5 %
    mean of TTFT, TPOT, E2E                                5 %
    p50 of TTFT, TPOT, E2E                                 5 %
    p90 of TTFT, TPOT, E2E                                10 %
    p99 of TTFT, TPOT, E2E                                15 %
    acceptance rate, tokens per round, mean gamma,
    mean target (verify) batch size                        5 %
    requests completed, duration                           none (shown, not judged)

Missing values: both None -> no error, not judged; one None -> no error, fails (one side could not produce it);
reference 0 -> relative error 0 if the other is 0 too, otherwise undefined (None) and it fails.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from testbed.errors import InputError
from testbed.metrics import DEFAULT_SLO_TPOT_MS, DEFAULT_SLO_TTFT_MS, dist, latencies, summarize
from testbed.tables import TABLES

# statistic kind -> relative tolerance (None: shown, not judged). The table in the module docstring.
TOLERANCES: dict[str, float | None] = {
    "throughput": 0.05,
    "mean": 0.05,
    "p50": 0.05,
    "p90": 0.10,
    "p99": 0.15,
    "model": 0.05,
    "info": None,
}
TOLERANCE_DOC = [
    ("request / output-token throughput, goodput", "throughput"),
    ("mean of TTFT, TPOT, E2E", "mean"),
    ("p50 of TTFT, TPOT, E2E", "p50"),
    ("p90 of TTFT, TPOT, E2E", "p90"),
    ("p99 of TTFT, TPOT, E2E", "p99"),
    ("acceptance rate, tokens per round, mean gamma, target batch size", "model"),
    ("requests completed, duration", "info"),
]


@dataclass(frozen=True)
class Metric:
    key: str          # "ttft_ms.p99": path into the summary, dot-separated
    label: str
    unit: str
    group: str        # latency | throughput | speculation | batching | run
    kind: str         # key into TOLERANCES

    @property
    def tolerance(self) -> float | None:
        return TOLERANCES[self.kind]

    def get(self, summary: dict[str, Any]) -> float | None:
        v: Any = summary
        for part in self.key.split("."):
            if not isinstance(v, dict) or part not in v:
                return None
            v = v[part]
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return None
        return int(v) if isinstance(v, int) and not isinstance(v, bool) else float(v)


def _metrics() -> list[Metric]:
    out = [Metric("requests_completed", "requests completed", "", "run", "info"),
           Metric("duration_s", "duration", "s", "run", "info")]
    for key, name in (("ttft_ms", "TTFT"), ("tpot_ms", "TPOT"), ("e2e_ms", "E2E")):
        for stat in ("mean", "p50", "p90", "p99"):
            out.append(Metric(f"{key}.{stat}", f"{name} {stat}", "ms", "latency", stat))
    out += [
        Metric("request_throughput_rps", "request throughput", "req/s", "throughput", "throughput"),
        Metric("output_token_throughput_tps", "output token throughput", "tok/s", "throughput", "throughput"),
        Metric("goodput_rps", "goodput (SLO-meeting req/s)", "req/s", "throughput", "throughput"),
        Metric("acceptance_rate", "acceptance rate", "", "speculation", "model"),
        Metric("tokens_per_round", "tokens per round", "tok", "speculation", "model"),
        Metric("mean_gamma", "mean γ", "tok", "speculation", "model"),
        Metric("target_batch_size", "target batch size (verify)", "req", "batching", "model"),
    ]
    return out


METRICS: list[Metric] = _metrics()

# Round columns the analysis reads (the string columns edge/target of the largest table are skipped: 5x faster).
ROUND_COLUMNS_USED = ["request_id", "round", "produced", "gamma", "accepted", "gained", "send_s", "recv_s"]


# ---- loading -------------------------------------------------------------------------------------------------

@dataclass
class Side:
    """One result set (a run's sim/ or emu/ directory), its tables and its summary recomputed from them."""

    name: str
    path: Path
    requests: pd.DataFrame
    rounds: pd.DataFrame
    batches: pd.DataFrame
    summary: dict[str, Any]
    recorded: dict[str, Any] = field(default_factory=dict)  # summary.json as the executor wrote it

    @property
    def partial(self) -> bool:
        return bool(self.recorded.get("partial"))

    @property
    def partial_reason(self) -> str | None:
        return self.recorded.get("partial_reason")

    def describe(self) -> dict[str, Any]:
        return {"path": str(self.path), "partial": self.partial, "partial_reason": self.partial_reason,
                "requests_total": self.summary.get("requests_total"),
                "requests_completed": self.summary.get("requests_completed"),
                "requests_failed": self.summary.get("requests_failed"),
                "requests_unfinished": self.summary.get("requests_unfinished"),
                "crashed_nodes": self.recorded.get("crashed_nodes") or []}


def has_results(d: Path) -> bool:
    return (d / "requests.parquet").is_file()


def _read(d: Path, table: str, columns: list[str] | None = None) -> pd.DataFrame:
    p = d / f"{table}.parquet"
    if not p.is_file():
        raise InputError(str(p), f"missing (is {d} a run's sim/ or emu/ directory?)")
    try:
        names = pq.read_schema(p).names
    except Exception as e:  # noqa: BLE001 - any unreadable file is bad input
        raise InputError(str(p), f"not a readable parquet file ({e})") from None
    want = list(TABLES[table])
    if names != want:
        raise InputError(str(p), f"columns {names} differ from the {table} schema {want}")
    return pd.read_parquet(p, columns=columns)


def read_summary_json(d: Path) -> dict[str, Any]:
    p = d / "summary.json"
    if not p.is_file():
        return {}
    try:
        return json.loads(p.read_text())
    except ValueError:
        return {}


def load_side(d: Path, name: str, slo: dict[str, float] | None = None) -> Side:
    """Read one sim/ or emu/ directory and recompute its summary from the tables."""
    d = Path(d)
    if not d.is_dir():
        raise InputError(str(d), "not a directory")
    requests = _read(d, "requests")
    rounds = _read(d, "rounds", ROUND_COLUMNS_USED)
    batches = _read(d, "batches")
    recorded = read_summary_json(d)
    slo = slo or recorded.get("slo") or {}
    summary = summarize(requests, rounds, batches, slo_ttft_ms=float(slo.get("ttft_ms", DEFAULT_SLO_TTFT_MS)),
                        slo_tpot_ms=float(slo.get("tpot_ms", DEFAULT_SLO_TPOT_MS)))
    return Side(name, d, requests, rounds, batches, summary, recorded)


def load_run(run: Path) -> tuple[Side | None, Side | None]:
    """(sim, emu) of a run directory; a side is None when its directory has no results."""
    run = Path(run)
    if not run.is_dir():
        raise InputError(str(run), "not a directory" if run.exists() else "no such run directory")
    sim_dir, emu_dir = run / "sim", run / "emu"
    if not has_results(sim_dir) and not has_results(emu_dir):
        raise InputError(str(run), "no results: neither sim/requests.parquet nor emu/requests.parquet exists "
                                   "(is this a run directory?)")
    sim = load_side(sim_dir, "sim") if has_results(sim_dir) else None
    slo = sim.summary.get("slo") if sim else None
    emu = load_side(emu_dir, "emu", slo) if has_results(emu_dir) else None
    return sim, emu


def load_best(run: Path, name: str) -> Side:
    """For run-vs-run: the emulated results of a run when present, else the simulated; a sim/ or emu/ dir itself."""
    run = Path(run)
    if not run.is_dir():
        raise InputError(str(run), "not a directory" if run.exists() else "no such run directory")
    if has_results(run):
        return load_side(run, name)
    for sub in ("emu", "sim"):
        if has_results(run / sub):
            return load_side(run / sub, name)
    raise InputError(str(run), "no results: neither emu/requests.parquet nor sim/requests.parquet exists "
                               "(is this a run directory?)")


# ---- comparison ----------------------------------------------------------------------------------------------

def relative_error(ref: float | None, val: float | None) -> float | None:
    """(val - ref) / |ref|; None when either is missing, or ref is 0 and val is not."""
    if ref is None or val is None or math.isnan(ref) or math.isnan(val):
        return None
    if ref == 0:
        return 0.0 if val == 0 else None
    return (val - ref) / abs(ref)


def judge(ref: float | None, val: float | None, tolerance: float | None) -> tuple[float | None, bool | None, str]:
    """(relative error, pass flag, note). pass is None when not judged."""
    missing_ref = ref is None or math.isnan(ref)
    missing_val = val is None or math.isnan(val)
    if missing_ref and missing_val:
        return None, None, "no value on either side"
    if missing_ref or missing_val:
        return None, (None if tolerance is None else False), "value missing on one side"
    err = relative_error(ref, val)
    if err is None:
        return None, (None if tolerance is None else False), "reference is 0: relative error undefined"
    if tolerance is None:
        return err, None, ""
    return err, bool(abs(err) <= tolerance + 1e-12), ""


def metric_rows(a: dict[str, Any] | None, b: dict[str, Any] | None, names: tuple[str, str]) -> list[dict[str, Any]]:
    """One row per metric of METRICS: both values, abs and relative error, tolerance, pass flag, note."""
    rows = []
    for m in METRICS:
        va = m.get(a) if a is not None else None
        vb = m.get(b) if b is not None else None
        if a is None or b is None:  # one side absent altogether: show values, judge nothing
            err, ok, note = None, None, f"no {names[0] if a is None else names[1]} results"
        else:
            err, ok, note = judge(va, vb, m.tolerance)
        rows.append({"metric": m.key, "label": m.label, "unit": m.unit, "group": m.group,
                     names[0]: va, names[1]: vb,
                     "abs_error": (vb - va) if va is not None and vb is not None else None,
                     "rel_error": err, "tolerance": m.tolerance, "pass": ok, "note": note})
    return rows


def per_edge(side: Side) -> dict[str, dict[str, Any]]:
    r = side.requests
    out: dict[str, dict[str, Any]] = {}
    done = r[r["status"] == "ok"]
    lat = latencies(done)
    for edge, idx in done.groupby("edge", sort=True).groups.items():
        l = lat.loc[idx]
        out[str(edge)] = {"requests_completed": int(len(idx)),
                          "ttft_ms": dist(l["ttft_ms"]), "tpot_ms": dist(l["tpot_ms"]), "e2e_ms": dist(l["e2e_ms"])}
    for edge, g in r.groupby("edge", sort=True):
        e = out.setdefault(str(edge), {"requests_completed": 0, "ttft_ms": dist([]), "tpot_ms": dist([]), "e2e_ms": dist([])})
        e["requests_total"] = int(len(g))
        e["requests_failed"] = int((g["status"] != "ok").sum())
    return out


def per_target(side: Side) -> dict[str, dict[str, Any]]:
    out = {k: dict(v) for k, v in side.summary.get("targets", {}).items()}
    routed = side.requests[side.requests["target"] != ""].groupby("target", sort=True).size()
    for t, n in routed.items():
        out.setdefault(str(t), {"utilisation": None, "batches": 0, "mean_verify_batch": None})["requests_routed"] = int(n)
    return out


def compare_sides(a: Side | None, b: Side | None, names: tuple[str, str] = ("sim", "emu"),
                  kind: str = "sim-vs-emu") -> dict[str, Any]:
    """The comparison document (compare.json): one row per metric of the summary, b judged against a."""
    if a is None and b is None:
        raise ValueError("nothing to compare: both sides are missing")
    rows = metric_rows(a.summary if a else None, b.summary if b else None, names)
    judged = [r for r in rows if r["pass"] is not None]
    failed = [r["metric"] for r in judged if not r["pass"]]
    notes = []
    for s, n in ((a, names[0]), (b, names[1])):
        if s is None:
            notes.append(f"{n}: no results (directory missing or empty): values shown for one side only")
        elif s.partial:
            notes.append(f"{n}: partial results ({s.partial_reason or 'reason not recorded'})")
    return {
        "kind": kind,
        "columns": list(names),
        "reference": names[0],
        "sides": {n: (s.describe() if s else None) for s, n in ((a, names[0]), (b, names[1]))},
        "tolerances": {k: v for k, v in TOLERANCES.items()},
        "tolerance_table": [{"statistic": doc, "kind": k, "tolerance": TOLERANCES[k]} for doc, k in TOLERANCE_DOC],
        "metrics": rows,
        "verdict": {"judged": len(judged), "passed": len(judged) - len(failed), "failed": failed,
                    "all_within_tolerance": (not failed) if judged else None},
        "notes": notes,
        "per_node": {
            "edges": {n: (per_edge(s) if s else None) for s, n in ((a, names[0]), (b, names[1]))},
            "targets": {n: (per_target(s) if s else None) for s, n in ((a, names[0]), (b, names[1]))},
        },
        "summaries": {n: (s.summary if s else None) for s, n in ((a, names[0]), (b, names[1]))},
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def compare_run(run: Path) -> tuple[dict[str, Any], Side | None, Side | None]:
    """Simulated vs emulated results of one run directory (emu judged against sim)."""
    sim, emu = load_run(run)
    doc = compare_sides(sim, emu, ("sim", "emu"), "sim-vs-emu")
    doc["run"] = str(run)
    return doc, sim, emu


def compare_runs(a: Path, b: Path) -> tuple[dict[str, Any], Side, Side]:
    """Run A vs run B (e.g. two policies): each run's emulated results, or its simulated ones when it has none."""
    sa, sb = load_best(a, "A"), load_best(b, "B")
    doc = compare_sides(sa, sb, ("A", "B"), "run-vs-run")
    doc["runs"] = {"A": str(a), "B": str(b)}
    return doc, sa, sb
