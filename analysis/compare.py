"""Compare two result sets of the run-directory schema: simulated vs emulated (DIR/compare.json), or run A vs run B.

Every number is recomputed from the tables through `testbed.metrics.SummaryBuilder` (the one definition of each
metric, as behind `summarize`); nothing here defines a metric. The tables are read in streamed passes
(analysis/scan.py: batches of rows, only the columns needed), so memory does not grow with the run's length;
latency quantiles are exact up to `Quantiles.EXACT_LIMIT` values and within 0.1 % beyond. For each metric: both
values, the absolute difference, the relative error (b - a) / |a| with a (sim, or run A) as the reference, and a
pass flag against the tolerance below.

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

Which verdict means what (issue 17; compare.json):

- "verdict": the vLLM-named metrics above, over every request. What a user of vLLM's benchmark would see; one
  tail request (the last completion sets the duration) or a sub-millisecond routing race (JSQ between targets)
  can move a metric of a single run on its own.
- "robust_verdict": the same tolerances on versions such events cannot dominate: throughput over the arrival
  window (completions and output tokens finishing between the first and the last arrival, per second of that
  window: the steady state, not the drain), and TTFT / TPOT / E2E (mean, p50, p99) over the routing-matched
  subset (requests completed on both sides at the same target). A run that fails "verdict" but passes this one
  differs in its tail or its routing, not in how each request was served.
- "predictions": with an as-built correction, the configured network's prediction (sim-configured/) judged
  against the same emulation, next to the as-built one: what the correction changed.
- "compute_predictions": with real models and as-built compute (`testbed run --sim-compute as-built`), the
  (checked / recalibrated) profile's prediction (sim-profile/) next to the one with the compute times the run had:
  how much of the difference is the machine's speed at another moment.
- "spread" / "spread_verdict" (`testbed run --sim-spread K`, testbed/sim/spread.py): the simulation repeated with K
  other network seeds (jitter and loss draws differ, nothing else). If the simulator is right, the emulated value is
  one more draw of the same distribution, so it falls outside the range of the K + 1 simulated values with
  probability 2 / (K + 2) (distribution-free: a K / (K + 2) prediction interval, 91 % for K = 20). A metric passes
  this verdict when it is within tolerance or inside that range: a miss of the plain verdict that passes here is
  what the network's randomness alone produces in a run this short; one that fails here is a model error (or a
  disturbed run).
- Several seeds with confidence intervals: `seed_verdict` over several runs' compare.json (bench/validate_random.py
  --seeds): the mean relative error per metric with its 95 % Student-t interval; a metric passes when the mean is
  within tolerance.
"""

from __future__ import annotations

import json
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analysis.scan import (
    LATENCY_KEYS,
    Binned,
    Bins,
    Scan,
    open_table,
    scan_batches,
    scan_pair,
    scan_requests,
    scan_request_times,
    scan_rounds,
)
from testbed.errors import InputError
from testbed.metrics import DEFAULT_SLO_TPOT_MS, DEFAULT_SLO_TTFT_MS
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
    key: str  # "ttft_ms.p99": path into the summary, dot-separated
    label: str
    unit: str
    group: str  # latency | throughput | speculation | batching | run
    kind: str  # key into TOLERANCES

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
    out = [
        Metric("requests_completed", "requests completed", "", "run", "info"),
        Metric("duration_s", "duration", "s", "run", "info"),
    ]
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

PARALLEL_SIDES = True  # read the two sides' big tables in two threads (their aggregates are separate)

# ---- loading -------------------------------------------------------------------------------------------------


@dataclass
class Side:
    """One result set (a run's sim/ or emu/ directory): its summary recomputed from its tables and the aggregates
    of its streamed passes (analysis.scan: per-edge and per-target facts; with figures, the binned series)."""

    name: str
    path: Path
    scan: Scan
    slo: dict[str, float]
    recorded: dict[str, Any] = field(default_factory=dict)  # summary.json as the executor wrote it
    summary: dict[str, Any] = field(default_factory=dict)  # complete once every table is read (finish_sides)

    @property
    def partial(self) -> bool:
        return bool(self.recorded.get("partial"))

    @property
    def partial_reason(self) -> str | None:
        return self.recorded.get("partial_reason")

    def describe(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "partial": self.partial,
            "partial_reason": self.partial_reason,
            "requests_total": self.summary.get("requests_total"),
            "requests_completed": self.summary.get("requests_completed"),
            "requests_failed": self.summary.get("requests_failed"),
            "requests_unfinished": self.summary.get("requests_unfinished"),
            "crashed_nodes": self.recorded.get("crashed_nodes") or [],
        }


def has_results(d: Path) -> bool:
    return (d / "requests.parquet").is_file()


def read_summary_json(d: Path) -> dict[str, Any]:
    p = d / "summary.json"
    if not p.is_file():
        return {}
    try:
        return json.loads(p.read_text())
    except ValueError:
        return {}


def open_side(d: Path, name: str, slo: dict[str, float] | None = None) -> Side:
    """A side with its request table read (and every table's schema checked); `finish_sides` reads the rest."""
    d = Path(d)
    if not d.is_dir():
        raise InputError(str(d), "not a directory")
    for table in TABLES:
        open_table(d, table)
    recorded = read_summary_json(d)
    slo = slo or recorded.get("slo") or {}
    slo = {
        "ttft_ms": float(slo.get("ttft_ms", DEFAULT_SLO_TTFT_MS)),
        "tpot_ms": float(slo.get("tpot_ms", DEFAULT_SLO_TPOT_MS)),
    }
    side = Side(name, d, Scan(), slo, recorded)
    scan_requests(d, side.scan, slo["ttft_ms"], slo["tpot_ms"])
    return side


def finish_sides(sides: list[Side | None], figures: bool = False) -> None:
    """Read the rounds and batches of each side and complete its summary; with `figures`, also the binned series
    of the report's figures, in time bins common to the sides (from the longest run)."""
    live = [s for s in sides if s is not None]
    bins = None
    if figures:
        ends = [s.scan.builder.result(s.slo["ttft_ms"], s.slo["tpot_ms"])["duration_s"] for s in live]
        bins = Bins.for_duration(max(ends + [1.0]))

    def finish(s: Side) -> None:
        if bins is not None:
            s.scan.binned = Binned.empty(bins)
            scan_request_times(s.path, s.scan.binned)
        scan_rounds(s.path, s.scan)
        scan_batches(s.path, s.scan)
        s.summary = s.scan.builder.result(s.slo["ttft_ms"], s.slo["tpot_ms"])

    if len(live) < 2 or not PARALLEL_SIDES:
        for s in live:
            finish(s)
        return
    # one thread per side: parquet decoding and numpy's loops release the GIL, so two cores read two sides
    with ThreadPoolExecutor(len(live)) as ex:
        list(ex.map(finish, live))


def load_side(d: Path, name: str, slo: dict[str, float] | None = None, figures: bool = False) -> Side:
    """Read one sim/ or emu/ directory and recompute its summary from the tables (streamed)."""
    side = open_side(d, name, slo)
    finish_sides([side], figures)
    return side


def load_run(run: Path, figures: bool = False) -> tuple[Side | None, Side | None]:
    """(sim, emu) of a run directory; a side is None when its directory has no results."""
    run = Path(run)
    if not run.is_dir():
        raise InputError(str(run), "not a directory" if run.exists() else "no such run directory")
    sim_dir, emu_dir = run / "sim", run / "emu"
    if not has_results(sim_dir) and not has_results(emu_dir):
        raise InputError(
            str(run),
            "no results: neither sim/requests.parquet nor emu/requests.parquet exists (is this a run directory?)",
        )
    sim = open_side(sim_dir, "sim") if has_results(sim_dir) else None
    emu = open_side(emu_dir, "emu", sim.slo if sim else None) if has_results(emu_dir) else None
    finish_sides([sim, emu], figures)
    return sim, emu


def load_best(run: Path, name: str) -> Side:
    """For run-vs-run: the emulated results of a run when present, else the simulated; a sim/ or emu/ dir itself.
    (Opened: `finish_sides` completes it.)"""
    run = Path(run)
    if not run.is_dir():
        raise InputError(str(run), "not a directory" if run.exists() else "no such run directory")
    if has_results(run):
        return open_side(run, name)
    for sub in ("emu", "sim"):
        if has_results(run / sub):
            return open_side(run / sub, name)
    raise InputError(
        str(run), "no results: neither emu/requests.parquet nor sim/requests.parquet exists (is this a run directory?)"
    )


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
        rows.append(
            {
                "metric": m.key,
                "label": m.label,
                "unit": m.unit,
                "group": m.group,
                names[0]: va,
                names[1]: vb,
                "abs_error": (vb - va) if va is not None and vb is not None else None,
                "rel_error": err,
                "tolerance": m.tolerance,
                "pass": ok,
                "note": note,
            }
        )
    return rows


def per_edge(side: Side) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for edge in sorted(side.scan.edges):
        e = side.scan.edges[edge]
        out[edge] = {
            "requests_completed": e.completed,
            **{k: e.lat[k].result() for k in LATENCY_KEYS},
            "requests_total": e.total,
            "requests_failed": e.failed,
        }
    return out


def per_target(side: Side) -> dict[str, dict[str, Any]]:
    out = {k: dict(v) for k, v in side.summary.get("targets", {}).items()}
    for t, n in sorted(side.scan.routed.items()):
        out.setdefault(t, {"utilisation": None, "batches": 0, "mean_verify_batch": None})["requests_routed"] = n
    return out


def compare_sides(
    a: Side | None, b: Side | None, names: tuple[str, str] = ("sim", "emu"), kind: str = "sim-vs-emu"
) -> dict[str, Any]:
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
        "verdict": {
            "judged": len(judged),
            "passed": len(judged) - len(failed),
            "failed": failed,
            "all_within_tolerance": (not failed) if judged else None,
        },
        "notes": notes,
        "per_node": {
            "edges": {n: (per_edge(s) if s else None) for s, n in ((a, names[0]), (b, names[1]))},
            "targets": {n: (per_target(s) if s else None) for s, n in ((a, names[0]), (b, names[1]))},
        },
        "summaries": {n: (s.summary if s else None) for s, n in ((a, names[0]), (b, names[1]))},
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


# ---- robust versions (see "Which verdict means what") ---------------------------------------------------------

ROBUST = [("window_throughput_rps", "throughput"), ("window_output_tps", "throughput")] + [
    (f"matched.{k}.{s}", s) for k in ("ttft_ms", "tpot_ms", "e2e_ms") for s in ("mean", "p50", "p99")
]


def robust_rows(a: Side, b: Side, names: tuple[str, str]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows of the robust metrics (same shape as metric_rows') and facts about them (window, matched count).

    The window is [first, last] arrival over both sides; completions and output tokens finishing inside it are
    counted per second of it; the latencies are those of requests completed on both sides at the same target
    (one merged pass over both request tables: analysis.scan.scan_pair)."""
    w0 = min(a.scan.first_arrival, b.scan.first_arrival)
    w1 = max(a.scan.last_arrival, b.scan.last_arrival)
    if not math.isfinite(w0):
        w0 = w1 = 0.0
    pair = scan_pair(a.path, b.path, (w0, w1))
    vals = []
    for k in (0, 1):
        v: dict[str, Any] = {"window_throughput_rps": None, "window_output_tps": None}
        if w1 > w0:
            v = {
                "window_throughput_rps": pair.window_done[k] / (w1 - w0),
                "window_output_tps": float(pair.window_tokens[k]) / (w1 - w0),
            }
        v["matched"] = {key: q.result() for key, q in pair.matched[k].items()}
        vals.append(v)
    va, vb = vals
    rows = []
    for key, kind in ROBUST:
        m = Metric(key, key.replace("_", " "), "", "robust", kind)
        x, y = m.get(va), m.get(vb)
        err, ok, note = judge(x, y, m.tolerance)
        rows.append(
            {
                "metric": key,
                "label": m.label,
                "unit": "",
                "group": "robust",
                names[0]: x,
                names[1]: y,
                "abs_error": (y - x) if x is not None and y is not None else None,
                "rel_error": err,
                "tolerance": m.tolerance,
                "pass": ok,
                "note": note,
            }
        )
    done_a = int(a.summary["requests_completed"])
    return rows, {
        "window_s": [w0, w1],
        "matched_requests": pair.n_matched,
        "completed_reference": done_a,
        "matched_fraction": pair.n_matched / done_a if done_a else None,
    }


def _verdict(rows: list[dict[str, Any]]) -> dict[str, Any]:
    judged = [r for r in rows if r["pass"] is not None]
    failed = [r["metric"] for r in judged if not r["pass"]]
    return {
        "judged": len(judged),
        "passed": len(judged) - len(failed),
        "failed": failed,
        "all_within_tolerance": (not failed) if judged else None,
    }


def spread_rows(sim: dict[str, Any], emu: dict[str, Any], spread: dict[str, Any]) -> list[dict[str, Any]]:
    """Per judged metric (metric_rows' row): the range of the simulated values over the main simulation and its
    network-seed repetitions (sim-spread.json) and relative to the main one, whether the emulated value lies inside
    it, and the pass flag of the spread verdict (within tolerance, or inside the range)."""
    by_key = {m.key: m for m in METRICS}
    rows = []
    for r in metric_rows(sim, emu, ("sim", "emu")):
        if r["tolerance"] is None:
            continue
        m = by_key[r["metric"]]
        xs = [v for v in (m.get(s) for s in [sim, *spread.get("summaries", [])]) if v is not None]
        lo, hi = (min(xs), max(xs)) if xs else (None, None)
        val = r["emu"]
        inside = None if val is None or lo is None else bool(lo <= val <= hi)
        rows.append(
            {
                **r,
                "sim_lo": lo,
                "sim_hi": hi,
                "rel_lo": relative_error(r["sim"], lo),
                "rel_hi": relative_error(r["sim"], hi),
                "inside": inside,
                "pass": None if r["pass"] is None else bool(r["pass"] or inside),
            }
        )
    return rows


def read_spread(run: Path) -> dict[str, Any] | None:
    """The run's sim-spread.json (testbed/sim/spread.py), or None."""
    from testbed.rundir import SPREAD_FILE

    p = Path(run) / SPREAD_FILE
    try:
        return json.loads(p.read_text()) if p.is_file() else None
    except ValueError as e:
        raise ValueError(f"{p}: not JSON ({e})") from None


def seed_verdict(docs: list[dict[str, Any]], section: str = "metrics") -> list[dict[str, Any]]:
    """Per metric over several runs' compare.json (e.g. seeds of one spec): mean relative error, 95 % Student-t
    half-width, n, tolerance, pass (|mean| <= tolerance; None when not judged or no run has a value)."""
    from testbed.awc.stats import ci95

    by: dict[str, list[float]] = {}
    tol: dict[str, float | None] = {}
    for d in docs:
        for r in d.get(section) or []:
            tol[r["metric"]] = r.get("tolerance")
            if r.get("rel_error") is not None:
                by.setdefault(r["metric"], []).append(float(r["rel_error"]))
    out = []
    for k, t in tol.items():
        xs = by.get(k, [])
        mean = sum(xs) / len(xs) if xs else None
        half = ci95(xs) if len(xs) >= 2 else None
        out.append(
            {
                "metric": k,
                "mean_rel_error": mean,
                "ci95": half,
                "n": len(xs),
                "tolerance": t,
                "pass": None if t is None or mean is None else bool(abs(mean) <= t + 1e-12),
            }
        )
    return out


def compare_run(run: Path, figures: bool = False) -> tuple[dict[str, Any], Side | None, Side | None]:
    """Simulated vs emulated results of one run directory (emu judged against sim), with the robust verdict and,
    when the run has one, the configured network's prediction next to the as-built one. With `figures`, the sides
    also hold the binned series of the report's figures."""
    sim, emu = load_run(run, figures)
    doc = compare_sides(sim, emu, ("sim", "emu"), "sim-vs-emu")
    doc["run"] = str(run)
    if emu is not None:
        from analysis.disturbance import assess

        doc["disturbance"] = assess(Path(run))
    if sim is not None and emu is not None:
        rows, facts = robust_rows(sim, emu, ("sim", "emu"))
        doc["robust"] = rows
        doc["robust_facts"] = facts
        doc["robust_verdict"] = _verdict(rows)
        spread = read_spread(Path(run))
        if spread is not None and spread.get("skipped"):
            doc["spread"] = {"skipped": spread["skipped"]}
        elif spread is not None:
            k = len(spread.get("summaries", []))
            srows = spread_rows(sim.summary, emu.summary, spread)
            doc["spread"] = {"net_seeds": k, "coverage": k / (k + 2), "rows": srows}
            doc["spread_verdict"] = _verdict(srows)
        built = {"verdict": doc["verdict"], "rel_error": {r["metric"]: r["rel_error"] for r in doc["metrics"]}}
        for key, alt_dir, label in (
            ("predictions", "sim-configured", "configured"),
            ("compute_predictions", "sim-profile", "profile"),
        ):
            if has_results(Path(run) / alt_dir):
                alt = load_side(Path(run) / alt_dir, alt_dir, sim.slo)
                alt_rows = metric_rows(alt.summary, emu.summary, ("sim", "emu"))
                doc[key] = {
                    "as-built": built,
                    label: {
                        "verdict": _verdict(alt_rows),
                        "rel_error": {r["metric"]: r["rel_error"] for r in alt_rows},
                        "sim": {r["metric"]: r["sim"] for r in alt_rows},
                    },
                }
    return doc, sim, emu


def compare_runs(a: Path, b: Path) -> tuple[dict[str, Any], Side, Side]:
    """Run A vs run B (e.g. two policies): each run's emulated results, or its simulated ones when it has none."""
    sa, sb = load_best(a, "A"), load_best(b, "B")
    finish_sides([sa, sb])
    doc = compare_sides(sa, sb, ("A", "B"), "run-vs-run")
    doc["runs"] = {"A": str(a), "B": str(b)}
    return doc, sa, sb
