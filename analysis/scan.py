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
from typing import Any, Iterator

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from testbed.errors import InputError
from testbed.metrics import SUMMARY_COLUMNS, Quantiles, SummaryBuilder, in_window, latencies
from testbed.tables import READ_BATCH_ROWS, TABLES, record_batches

BATCH_ROWS = READ_BATCH_ROWS  # string columns are read as dictionaries (codes)
REQUEST_BATCH_ROWS = 1 << 16  # the request passes derive many columns per row (latencies, per-edge splits)
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

    def index(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(bin of each non-NaN time, mask of the non-NaN times or None when every time is a number)."""
        t = np.asarray(t, dtype=np.float64)
        ok = ~np.isnan(t)
        if ok.all():
            ok = None
        else:
            t = t[ok]
        idx = (t / self.width).astype(np.int64)
        return np.clip(idx, 0, self.n - 1, out=idx), ok

    def count(
        self, t: np.ndarray, w: np.ndarray | None = None, group: np.ndarray | None = None, groups: int = 1
    ) -> np.ndarray:
        """Sum of weights (or counts) per bin; with `group` (a code in [0, groups) per value), one row per group."""
        return self.counts(t, [w], group, groups)[0]

    def counts(
        self, t: np.ndarray, ws: list[np.ndarray | None], group: np.ndarray | None = None, groups: int = 1
    ) -> list[np.ndarray]:
        """`count` for several weights (None: counts) of the same times, binned once."""
        idx, ok = self.index(t)
        if group is not None:
            idx = idx + (group if ok is None else group[ok]).astype(np.int64) * self.n
        out = []
        for w in ws:
            if w is not None:
                w = np.asarray(w, dtype=np.float64)
                w = w if ok is None else w[ok]
            c = np.bincount(idx, weights=w, minlength=self.n * groups).astype(np.float64)
            out.append(c if group is None else c.reshape(groups, self.n))
        return out

    def busy(
        self, starts: np.ndarray, ends: np.ndarray, group: np.ndarray | None = None, groups: int = 1
    ) -> np.ndarray:
        """Seconds of the intervals [start, end) inside each bin (intervals cut at the last bin's end); with
        `group`, one row per group."""
        top, n = self.n * self.width, self.n
        s = np.minimum(np.asarray(starts, dtype=np.float64), top)
        e = np.minimum(np.maximum(np.asarray(ends, dtype=np.float64), s), top)
        i0 = np.minimum((s / self.width).astype(np.int64), n - 1)
        i1 = np.minimum((e / self.width).astype(np.int64), n)
        off = np.zeros(len(s), dtype=np.int64) if group is None else group.astype(np.int64) * (n + 1)
        size = (n + 1) * groups
        one = i1 <= i0  # within one bin
        if one.all():
            out = np.bincount(i0 + off, weights=e - s, minlength=size)
        else:
            out = np.bincount(i0[one] + off[one], weights=(e - s)[one], minlength=size)
            j0, j1, s2, e2, o2 = i0[~one], i1[~one], s[~one], e[~one], off[~one]
            out += np.bincount(j0 + o2, weights=(j0 + 1) * self.width - s2, minlength=size)
            out += np.bincount(j1 + o2, weights=e2 - j1 * self.width, minlength=size)
            full = np.bincount(j0 + 1 + o2, minlength=size) - np.bincount(j1 + o2, minlength=size)
            # whole bins strictly between the first and the last: a running count within each group's row
            out += np.cumsum(full.reshape(groups, n + 1), axis=1).ravel() * self.width
        out = out.reshape(groups, n + 1)[:, :n]
        return out[0] if group is None else out


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
    for rb in record_batches(f, columns, batch_rows):
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


def scan_requests(
    d: Path, scan: Scan, slo_ttft_ms: float, slo_tpot_ms: float, batch_rows: int = REQUEST_BATCH_ROWS
) -> None:
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


def scan_request_times(d: Path, binned: Binned, batch_rows: int = REQUEST_BATCH_ROWS) -> None:
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
    for rb in record_batches(open_table(d, "rounds"), cols, batch_rows):
        a = {n: rb.column(i).to_numpy() for i, n in enumerate(rb.schema.names)}
        scan.builder.add_rounds(a)
        if b is None:
            continue
        b.tokens += b.bins.count(a["recv_s"], a["gained"])
        gamma, acc = a["gamma"], a["accepted"]
        spec = gamma > 0  # speculative rounds: as weights, not a selection (no copies of the columns)
        sent_n, sent_gamma = b.bins.counts(a["send_s"], [spec, gamma])
        b.spec_n += sent_n
        b.spec_gamma += sent_gamma  # rounds without speculation add gamma 0
        # one histogram of (round index, gamma, accepted): acceptance by round index and accepted counts of the
        # speculative rounds are its gamma > 0 part
        g = int(max(gamma.max(initial=0), acc.max(initial=0))) + 1
        key = np.minimum(a["round"], SPEC_MAX_ROUNDS).astype(np.int64) * g + gamma
        joint = np.bincount(key * g + acc, minlength=(SPEC_MAX_ROUNDS + 1) * g * g).reshape(-1, g, g)[:, 1:, :]
        by_round_gamma, by_round_acc = joint.sum(axis=2), joint.sum(axis=1)
        b.round_n += by_round_gamma.sum(axis=1)
        b.round_gamma += by_round_gamma @ np.arange(1, g, dtype=np.float64)
        b.round_accepted += by_round_acc @ np.arange(g, dtype=np.float64)
        b.accepted_hist = _add(b.accepted_hist, by_round_acc.sum(axis=0).astype(np.float64))
        b.gamma_max = max(b.gamma_max, int(gamma.max(initial=0)))


def scan_batches(d: Path, scan: Scan, batch_rows: int = BATCH_ROWS) -> None:
    """Batches: the summary's per-target part; with `scan.binned`, each target's verify batches and busy time
    per bin."""
    b = scan.binned
    f = open_table(d, "batches", ("target", "kind"))
    for rb in record_batches(f, SUMMARY_COLUMNS["batches"], batch_rows):
        cols = dict(zip(rb.schema.names, rb.columns))
        a: dict[str, Any] = {
            k: pd.Categorical.from_codes(cols[k].indices.to_numpy(), cols[k].dictionary.to_pylist())
            for k in ("target", "kind")
        }
        a.update({k: cols[k].to_numpy() for k in ("start_s", "end_s", "size")})
        scan.builder.add_batches(a)
        if b is None or not rb.num_rows:
            continue
        names = list(a["target"].categories)
        codes = np.asarray(a["target"].codes)
        kinds = list(a["kind"].categories)
        verify = np.asarray(a["kind"].codes) == (kinds.index("verify") if "verify" in kinds else -2)
        start, groups = a["start_s"], len(names)
        vn, vs = b.bins.counts(start[verify], [None, a["size"][verify]], group=codes[verify], groups=groups)
        busy = b.bins.busy(start, a["end_s"], group=codes, groups=groups)
        present = np.bincount(codes, minlength=len(names))
        for i, name in enumerate(names):
            if present[i]:
                t = b.target(str(name))
                t.verify_n += vn[i]
                t.verify_size += vs[i]
                t.busy += busy[i]


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


def scan_pair(a: Path, b: Path, window: tuple[float, float], batch_rows: int = REQUEST_BATCH_ROWS) -> PairScan:
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
            inside = (df["status"] == "ok") & in_window(df["finish_s"], window)
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
