"""Streamed passes over a result set's tables (requests / rounds / batches parquet files) for compare and report.

Each table is read in batches of rows (BATCH_ROWS) and only in the columns a pass needs, and folded into
aggregates whose size does not grow with the number of rows:

- the run's summary: `testbed.metrics.SummaryBuilder`, the one definition of every metric;
- per-edge counts and latency distributions, routed requests per target;
- for the report's figures (`Binned`): sums per time bin (`Bins`: at most MAX_BINS bins over the run),
  per round index and per accepted count; the latency CDFs are drawn from the summary's own `Quantiles`.

Distributions are `testbed.metrics.Quantiles` (exact up to its limit of values, beyond it within its stated
0.1 %); every count and sum is exact. A million-request run is one pass per table and side (requests twice: the
common time bins need every side's duration first), plus one pass over both request tables (in request_id order,
merged) for the robust verdict's routing-matched latencies and window throughput.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from testbed.errors import InputError
from testbed.metrics import SUMMARY_COLUMNS, Quantiles, SummaryBuilder, latencies
from testbed.tables import TABLES

BATCH_ROWS = 1 << 19  # numeric columns: ~4 MB each; string columns are read as dictionaries (codes)
MAX_BINS = 300
NICE_BINS = [1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 900, 1800, 3600]
SPEC_MAX_ROUNDS = 60  # acceptance by round index: rounds at or beyond this index share the last slot
LATENCY_KEYS = ("ttft_ms", "tpot_ms", "e2e_ms")


def bin_width(duration_s: float) -> float:
    """1 s bins up to MAX_BINS seconds; wider 'nice' bins beyond."""
    for w in NICE_BINS:
        if duration_s / w <= MAX_BINS:
            return float(w)
    return float(np.ceil(duration_s / MAX_BINS))


@dataclass(frozen=True)
class Bins:
    """Time bins [k * width, (k + 1) * width) from the run's start; times beyond the last bin count in it."""

    width: float
    n: int

    @classmethod
    def for_duration(cls, duration_s: float, width: float | None = None) -> "Bins":
        duration_s = max(float(duration_s), 1.0)
        w = bin_width(duration_s) if width is None else float(width)
        return cls(w, max(1, int(np.ceil(duration_s / w))))

    @property
    def edges(self) -> np.ndarray:
        return np.arange(self.n + 1) * self.width

    @property
    def centres(self) -> np.ndarray:
        return (np.arange(self.n) + 0.5) * self.width

    def index(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(bin of each non-NaN time, mask of the non-NaN times)."""
        t = np.asarray(t, dtype=np.float64)
        ok = ~np.isnan(t)
        return np.clip((t[ok] / self.width).astype(np.int64), 0, self.n - 1), ok

    def count(self, t: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
        """Sum of weights (or counts) per bin."""
        idx, ok = self.index(t)
        weights = None if w is None else np.asarray(w, dtype=np.float64)[ok]
        return np.bincount(idx, weights=weights, minlength=self.n).astype(np.float64)

    def busy(self, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """Seconds of the intervals [start, end) inside each bin (intervals cut at the last bin's end)."""
        top = self.n * self.width
        s = np.minimum(np.asarray(starts, dtype=np.float64), top)
        e = np.minimum(np.maximum(np.asarray(ends, dtype=np.float64), s), top)
        out = np.zeros(self.n + 1)
        i0 = np.minimum((s / self.width).astype(np.int64), self.n - 1)
        i1 = np.minimum((e / self.width).astype(np.int64), self.n)
        one = i1 <= i0  # within one bin
        out += np.bincount(i0[one], weights=(e - s)[one], minlength=self.n + 1)
        j0, j1, s2, e2 = i0[~one], i1[~one], s[~one], e[~one]
        out += np.bincount(j0, weights=(j0 + 1) * self.width - s2, minlength=self.n + 1)
        out += np.bincount(j1, weights=e2 - j1 * self.width, minlength=self.n + 1)
        full = np.bincount(j0 + 1, minlength=self.n + 1) - np.bincount(j1, minlength=self.n + 1)
        out += np.cumsum(full) * self.width  # whole bins strictly between the first and the last
        return out[: self.n]


# ---- reading -------------------------------------------------------------------------------------------------


def open_table(d: Path, table: str, dictionary: tuple[str, ...] = ()) -> pq.ParquetFile:
    """A result table's parquet file, checked against its schema; string columns in `dictionary` are read as
    dictionary codes (pandas categoricals)."""
    p = Path(d) / f"{table}.parquet"
    if not p.is_file():
        raise InputError(str(p), f"missing (is {d} a run's sim/ or emu/ directory?)")
    try:
        f = pq.ParquetFile(p, read_dictionary=list(dictionary) or None)
        names = f.schema_arrow.names
    except Exception as e:  # noqa: BLE001 - any unreadable file is bad input
        raise InputError(str(p), f"not a readable parquet file ({e})") from None
    want = list(TABLES[table])
    if names != want:
        raise InputError(str(p), f"columns {names} differ from the {table} schema {want}")
    return f


def frames(
    d: Path, table: str, columns: list[str], dictionary: tuple[str, ...] = (), batch_rows: int = BATCH_ROWS
) -> Iterator[pd.DataFrame]:
    f = open_table(d, table, tuple(c for c in dictionary if c in columns))
    for rb in f.iter_batches(batch_size=batch_rows, columns=columns):
        yield rb.to_pandas()


# ---- aggregates ----------------------------------------------------------------------------------------------


@dataclass
class EdgeStats:
    total: int = 0
    failed: int = 0  # status other than ok (failed or unfinished)
    lat: dict[str, Quantiles] = field(default_factory=lambda: {k: Quantiles() for k in LATENCY_KEYS})

    @property
    def completed(self) -> int:
        return self.total - self.failed


@dataclass
class TargetBins:
    verify_n: np.ndarray  # verify batches by start
    verify_size: np.ndarray  # their requests
    busy: np.ndarray  # busy seconds (prefill + verify)


@dataclass
class Binned:
    """What the report's figures draw, summed per time bin / round index / accepted count."""

    bins: Bins
    tokens: np.ndarray  # output tokens reaching the edge (first tokens + each round's gained, by recv_s)
    completed: np.ndarray  # completed requests by finish
    spec_n: np.ndarray  # rounds with gamma > 0, by send_s
    spec_gamma: np.ndarray  # their drafted tokens
    round_n: np.ndarray = field(default_factory=lambda: np.zeros(SPEC_MAX_ROUNDS + 1))
    round_accepted: np.ndarray = field(default_factory=lambda: np.zeros(SPEC_MAX_ROUNDS + 1))
    round_gamma: np.ndarray = field(default_factory=lambda: np.zeros(SPEC_MAX_ROUNDS + 1))
    accepted_hist: np.ndarray = field(default_factory=lambda: np.zeros(1))  # rounds with gamma > 0 by accepted
    gamma_max: int = 0
    targets: dict[str, TargetBins] = field(default_factory=dict)

    @classmethod
    def empty(cls, bins: Bins) -> "Binned":
        z = lambda: np.zeros(bins.n)  # noqa: E731
        return cls(bins, z(), z(), z(), z())

    def target(self, name: str) -> TargetBins:
        t = self.targets.get(name)
        if t is None:
            z = lambda: np.zeros(self.bins.n)  # noqa: E731
            t = self.targets[name] = TargetBins(z(), z(), z())
        return t


def _add(acc: np.ndarray, x: np.ndarray) -> np.ndarray:
    """acc + x, the shorter padded with zeros."""
    if x.size > acc.size:
        acc = np.concatenate([acc, np.zeros(x.size - acc.size)])
    acc[: x.size] += x
    return acc


@dataclass
class Scan:
    """One result set's aggregates: the summary builder (its latency Quantiles are the CDFs' data), per-edge and
    per-target facts, the arrival span, and (for figures) the binned series."""

    builder: SummaryBuilder = field(default_factory=SummaryBuilder)
    edges: dict[str, EdgeStats] = field(default_factory=dict)
    routed: dict[str, int] = field(default_factory=dict)
    first_arrival: float = math.inf
    last_arrival: float = -math.inf
    binned: Binned | None = None


REQUEST_COLUMNS_USED = ["edge", "target", "status", "arrival_s", "first_token_s", "finish_s", "output_tokens"]


def scan_requests(d: Path, scan: Scan, slo_ttft_ms: float, slo_tpot_ms: float, batch_rows: int = BATCH_ROWS) -> None:
    """Requests: the summary's request part, per-edge counts and latencies, routed requests per target."""
    for df in frames(d, "requests", REQUEST_COLUMNS_USED, ("edge", "target", "status"), batch_rows):
        scan.builder.add_requests(df[SUMMARY_COLUMNS["requests"]], slo_ttft_ms, slo_tpot_ms)
        if len(df):
            scan.first_arrival = min(scan.first_arrival, float(df["arrival_s"].min()))
            scan.last_arrival = max(scan.last_arrival, float(df["arrival_s"].max()))
        ok = (df["status"] == "ok").to_numpy()
        edge = df["edge"].astype(str).to_numpy() if not isinstance(df["edge"].dtype, pd.CategoricalDtype) else None
        codes, names = (
            (df["edge"].cat.codes.to_numpy(), [str(c) for c in df["edge"].cat.categories])
            if edge is None
            else pd.factorize(edge)
        )
        totals = np.bincount(codes, minlength=len(names))
        fails = np.bincount(codes[~ok], minlength=len(names))
        lat = latencies(df[ok])
        done_codes = codes[ok]
        order = np.argsort(done_codes, kind="stable")
        bounds = np.searchsorted(done_codes[order], np.arange(len(names) + 1))
        for i, name in enumerate(names):
            if totals[i] == 0:
                continue
            e = scan.edges.setdefault(str(name), EdgeStats())
            e.total += int(totals[i])
            e.failed += int(fails[i])
            rows = order[bounds[i] : bounds[i + 1]]
            if rows.size:
                for k in LATENCY_KEYS:
                    e.lat[k].add(lat[k].to_numpy()[rows])
        routed = df["target"][df["target"] != ""].value_counts()
        for t, n in routed.items():
            if n:
                scan.routed[str(t)] = scan.routed.get(str(t), 0) + int(n)


def scan_request_times(d: Path, binned: Binned, batch_rows: int = BATCH_ROWS) -> None:
    """Requests again, for the figures (needs the bins): first tokens and completions per bin."""
    for df in frames(d, "requests", ["status", "first_token_s", "finish_s"], ("status",), batch_rows):
        binned.tokens += binned.bins.count(df["first_token_s"].to_numpy())
        ok = (df["status"] == "ok").to_numpy()
        binned.completed += binned.bins.count(df["finish_s"].to_numpy()[ok])


def scan_rounds(d: Path, scan: Scan, batch_rows: int = BATCH_ROWS) -> None:
    """Rounds: the summary's speculation part; with `scan.binned`, tokens and γ per bin, acceptance by round
    index, the accepted-count histogram."""
    b = scan.binned
    cols = SUMMARY_COLUMNS["rounds"] + (["round", "send_s", "recv_s"] if b is not None else [])
    f = open_table(d, "rounds")
    for rb in f.iter_batches(batch_size=batch_rows, columns=cols):
        a = {n: rb.column(i).to_numpy() for i, n in enumerate(rb.schema.names)}
        scan.builder.add_rounds(pd.DataFrame({k: a[k] for k in SUMMARY_COLUMNS["rounds"]}, copy=False))
        if b is None:
            continue
        b.tokens += b.bins.count(a["recv_s"], a["gained"])
        spec = a["gamma"] > 0
        if not spec.any():
            continue
        gamma, acc = a["gamma"][spec], a["accepted"][spec]
        b.spec_n += b.bins.count(a["send_s"][spec])
        b.spec_gamma += b.bins.count(a["send_s"][spec], gamma)
        idx = np.minimum(a["round"][spec], SPEC_MAX_ROUNDS)
        b.round_n += np.bincount(idx, minlength=SPEC_MAX_ROUNDS + 1)
        b.round_accepted += np.bincount(idx, weights=acc.astype(np.float64), minlength=SPEC_MAX_ROUNDS + 1)
        b.round_gamma += np.bincount(idx, weights=gamma.astype(np.float64), minlength=SPEC_MAX_ROUNDS + 1)
        b.accepted_hist = _add(b.accepted_hist, np.bincount(acc).astype(np.float64))
        b.gamma_max = max(b.gamma_max, int(gamma.max()))


def scan_batches(d: Path, scan: Scan, batch_rows: int = BATCH_ROWS) -> None:
    """Batches: the summary's per-target part; with `scan.binned`, each target's verify batches and busy time
    per bin."""
    b = scan.binned
    for df in frames(d, "batches", SUMMARY_COLUMNS["batches"], ("target", "kind"), batch_rows):
        scan.builder.add_batches(df)
        if b is None or not len(df):
            continue
        verify = (df["kind"] == "verify").to_numpy()
        start, end, size = (df[c].to_numpy(np.float64) for c in ("start_s", "end_s", "size"))
        codes = df["target"].cat.codes.to_numpy()
        for i, name in enumerate(df["target"].cat.categories):
            rows = codes == i
            if not rows.any():
                continue
            t = b.target(str(name))
            v = rows & verify
            t.verify_n += b.bins.count(start[v])
            t.verify_size += b.bins.count(start[v], size[v])
            t.busy += b.bins.busy(start[rows], end[rows])


# ---- both sides: the robust verdict's inputs -----------------------------------------------------------------

PAIR_COLUMNS = ["request_id", "target", "status", "arrival_s", "first_token_s", "finish_s", "output_tokens"]


def _sorted_frames(d: Path, batch_rows: int) -> Iterator[pd.DataFrame]:
    """The request table in request_id order: streamed as stored when it is (both executors write it so), else
    read whole and sorted."""
    last, ordered = -math.inf, True
    for df in frames(d, "requests", ["request_id"], (), batch_rows):
        ids = df["request_id"].to_numpy()
        if ids.size and (ids[0] < last or (np.diff(ids) < 0).any()):
            ordered = False
            break
        last = ids[-1] if ids.size else last
    if ordered:
        yield from frames(d, "requests", PAIR_COLUMNS, (), batch_rows)
    else:
        yield pd.read_parquet(Path(d) / "requests.parquet", columns=PAIR_COLUMNS).sort_values(
            "request_id", kind="stable"
        )


@dataclass
class PairScan:
    window: tuple[float, float]
    window_done: list[int] = field(default_factory=lambda: [0, 0])  # completions finishing inside, per side
    window_tokens: list[int] = field(default_factory=lambda: [0, 0])
    matched: list[dict[str, Quantiles]] = field(
        default_factory=lambda: [{k: Quantiles() for k in LATENCY_KEYS} for _ in range(2)]
    )
    n_matched: int = 0


def scan_pair(a: Path, b: Path, window: tuple[float, float], batch_rows: int = BATCH_ROWS) -> PairScan:
    """Both request tables merged on request_id (each in id order): per side the completions and output tokens
    finishing inside `window`, and the latencies of the requests completed on both sides at the same target."""
    out = PairScan(window)
    w0, w1 = window
    its = [_sorted_frames(a, batch_rows), _sorted_frames(b, batch_rows)]
    bufs: list[pd.DataFrame | None] = [None, None]
    done = [False, False]

    def pull(k: int) -> None:
        df = next(its[k], None)
        if df is None:
            done[k] = True
            return
        if w1 > w0:
            fin = df["finish_s"]
            inside = (df["status"] == "ok") & (fin >= w0) & (fin <= w1)
            out.window_done[k] += int(inside.sum())
            out.window_tokens[k] += int(df["output_tokens"][inside].sum())
        bufs[k] = df if bufs[k] is None else pd.concat([bufs[k], df], ignore_index=True)

    while True:
        for k in (0, 1):  # a side whose file lasts keeps a non-empty buffer
            while not done[k] and (bufs[k] is None or not len(bufs[k])):
                pull(k)
        live = [bufs[k]["request_id"].iloc[-1] for k in (0, 1) if not done[k]]
        # every id up to the smallest last id of a side still reading is in both buffers already (or never will be)
        _join(out, bufs, min(live) if live else math.inf)
        if done[0] and done[1]:
            break
    return out


def _join(out: PairScan, bufs: list[pd.DataFrame | None], limit: float) -> None:
    parts = []
    for k in (0, 1):
        df = bufs[k]
        if df is None or not len(df):
            parts.append(None)
            continue
        cut = int(np.searchsorted(df["request_id"].to_numpy(), limit, side="right"))
        parts.append(df.iloc[:cut])
        bufs[k] = df.iloc[cut:].reset_index(drop=True)
    if parts[0] is None or parts[1] is None or not len(parts[0]) or not len(parts[1]):
        return
    j = parts[0].merge(parts[1], on="request_id", suffixes=("_a", "_b"))
    j = j[(j["status_a"] == "ok") & (j["status_b"] == "ok") & (j["target_a"] == j["target_b"])]
    out.n_matched += len(j)
    for k, sfx in enumerate(("_a", "_b")):
        part = j[[c + sfx for c in PAIR_COLUMNS[1:]]].rename(columns=lambda c: c[:-2])
        lat = latencies(part)
        for key in LATENCY_KEYS:
            out.matched[k][key].add(lat[key])
