"""Metric definitions (named as in vLLM's benchmark), one implementation for simulator and emulator.

From the requests / rounds / batches tables:
- TTFT  = first_token_s - arrival_s                      (ms)
- TPOT  = (finish_s - first_token_s) / (output_tokens - 1) (ms; requests with one output token excluded)
- E2E   = finish_s - arrival_s                           (ms)
- duration = last finish (or last arrival, if later) - 0 (the run's start, first arrival)
- request throughput = completed / duration; output token throughput = tokens of completed / duration
- goodput = completed requests meeting both SLOs (TTFT <= slo_ttft_ms, TPOT <= slo_tpot_ms) / duration
- over the arrival window [first, last arrival] (issue 17's robust versions, where one tail request or the drain
  cannot dominate): completions finishing inside it per second of it; window_goodput counts the SLO-meeting ones
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


def meets_slo(lat: pd.DataFrame, slo_ttft_ms: float, slo_tpot_ms: float) -> pd.Series:
    """Per request (rows of `latencies`): TTFT and TPOT within the SLOs (no TPOT, one output token: met)."""
    return (lat["ttft_ms"] <= slo_ttft_ms) & (lat["tpot_ms"].fillna(0.0) <= slo_tpot_ms)


def in_window(finish_s, window: tuple[float, float]):
    """Finishing inside the arrival window [first arrival, last arrival] (issue 17's robust throughput: the
    steady state, not the drain after the last arrival)."""
    return (finish_s >= window[0]) & (finish_s <= window[1])


def window_goodput(requests: pd.DataFrame, slo_ttft_ms: float, slo_tpot_ms: float) -> float | None:
    """Goodput over the arrival window: completed requests meeting both SLOs and finishing inside it, per second
    of it (None when every request arrives at once)."""
    w0, w1 = float(requests["arrival_s"].min()), float(requests["arrival_s"].max())
    if not w1 > w0:
        return None
    done = requests[requests["status"] == "ok"]
    good = meets_slo(latencies(done), slo_ttft_ms, slo_tpot_ms) & in_window(done["finish_s"], (w0, w1))
    return float(good.sum()) / (w1 - w0)


def dist(x: pd.Series | np.ndarray) -> dict[str, float | None]:
    q = Quantiles()
    q.add(x)
    return q.result()


class Quantiles:
    """Mean and p50 / p90 / p99 of a stream of values (NaN ignored).

    Exact (numpy's percentile over every value) up to EXACT_LIMIT values. Beyond that the values go into a
    histogram of logarithmic bins, RELATIVE_ERROR wide: each quantile is then within RELATIVE_ERROR of the
    exact one (relative to its value; values <= 0 are counted in one bin at 0), so memory stays flat however
    long the run. The mean stays exact (a running sum, to rounding).
    """

    EXACT_LIMIT = 1_000_000
    RELATIVE_ERROR = 0.001
    _LOG_STEP = math.log1p(2 * RELATIVE_ERROR)  # bin i holds (e^(i*step), e^((i+1)*step)]; its middle is within 0.1 %

    def __init__(self, exact_limit: int | None = None) -> None:
        self.exact_limit = self.EXACT_LIMIT if exact_limit is None else exact_limit  # lower for many small ones
        self.chunks: list[np.ndarray] = []
        self.n = 0
        self.total = 0.0
        self.bins: dict[int, int] | None = None  # histogram mode
        self.zeros = 0

    def add(self, x: pd.Series | np.ndarray) -> None:
        a = np.asarray(x, dtype=np.float64)
        a = a[~np.isnan(a)]
        if a.size == 0:
            return
        self.n += a.size
        self.total += float(a.sum())
        if self.bins is None:
            self.chunks.append(a)
            if self.n > self.exact_limit:
                self.bins = {}
                for c in self.chunks:
                    self._bin(c)
                self.chunks = []
        else:
            self._bin(a)

    def _bin(self, a: np.ndarray) -> None:
        pos = a[a > 0]
        self.zeros += int(a.size - pos.size)
        idx, counts = np.unique(np.floor(np.log(pos) / self._LOG_STEP).astype(np.int64), return_counts=True)
        bins = self.bins
        for i, c in zip(idx.tolist(), counts.tolist()):
            bins[i] = bins.get(i, 0) + c

    def result(self) -> dict[str, float | None]:
        if self.n == 0:
            return {"mean": None, "p50": None, "p90": None, "p99": None}
        if self.bins is None:
            a = self._values()
            p50, p90, p99 = np.percentile(a, [50, 90, 99])
            return {"mean": float(a.mean()), "p50": float(p50), "p90": float(p90), "p99": float(p99)}
        p50, p90, p99 = self.quantiles([0.50, 0.90, 0.99]).tolist()
        return {"mean": self.total / self.n, "p50": p50, "p90": p90, "p99": p99}

    def _values(self) -> np.ndarray:
        return self.chunks[0] if len(self.chunks) == 1 else np.concatenate(self.chunks)

    def quantiles(self, qs) -> np.ndarray:
        """The quantiles qs (fractions in [0, 1]) with the same definition and error as `result` (empty: NaN)."""
        qs = np.asarray(qs, dtype=np.float64)
        if self.n == 0:
            return np.full(qs.shape, np.nan)
        if self.bins is None:
            return np.quantile(self._values(), qs)
        keys = sorted(self.bins)
        cum = np.cumsum([self.zeros] + [self.bins[k] for k in keys])
        mids = np.array([0.0] + [math.exp((k + 0.5) * self._LOG_STEP) for k in keys])
        ranks = qs * (self.n - 1)  # numpy's linear definition, to the bin holding that rank
        return mids[np.minimum(np.searchsorted(cum, ranks, side="right"), len(mids) - 1)]

    def cdf(self, points: int) -> tuple[np.ndarray, np.ndarray]:
        """(x, fraction of values <= x) to draw: every value when there are at most `points` (exact mode), else
        the quantiles at `points` evenly spaced fractions (within RELATIVE_ERROR in histogram mode)."""
        if self.bins is None and 0 < self.n <= points:
            x = np.sort(self._values())
            return x, np.arange(1, x.size + 1) / x.size
        if self.n == 0:
            return np.empty(0), np.empty(0)
        y = np.linspace(0.0, 1.0, points)
        return self.quantiles(y), y


def _f(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


class SummaryBuilder:
    """The summary of a run, from its tables given in any number of chunks (rows in table order): the one
    implementation behind `summarize` (whole DataFrames) and `summarize_dir` (parquet files read in row
    groups, memory independent of the run's length)."""

    def __init__(self) -> None:
        self.total = self.ok = self.failed = self.unfinished = self.good = self.tokens_out = 0
        self.last_finish = self.last_arrival = float("nan")
        self.lat = {k: Quantiles() for k in ("ttft_ms", "tpot_ms", "e2e_ms")}
        self.good_by_slo: tuple[float, float] | None = None
        self.rounds = self.gained = self.spec_rounds = self.drafted = self.accepted = 0
        self.verify_batches = self.verify_reqs = 0
        self.targets: dict[str, list] = {}  # name -> [busy_s, batches, verify batches, verify requests]

    def add_requests(self, requests: pd.DataFrame, slo_ttft_ms: float, slo_tpot_ms: float) -> None:
        status = requests["status"]
        ok = status == "ok"
        done = requests[ok]
        lat = latencies(done)
        self.total += len(requests)
        self.ok += int(ok.sum())
        self.failed += int((status == "failed").sum())
        self.unfinished += int((status == "unfinished").sum())
        if len(done):
            self.last_finish = _nanmax(self.last_finish, done["finish_s"].max())
        if len(requests):
            self.last_arrival = _nanmax(self.last_arrival, requests["arrival_s"].max())
        self.good += int(meets_slo(lat, slo_ttft_ms, slo_tpot_ms).sum())
        self.tokens_out += int(done["output_tokens"].sum())
        for k, q in self.lat.items():
            q.add(lat[k])

    def add_rounds(self, rounds: pd.DataFrame | dict[str, np.ndarray]) -> None:
        """Rounds (a DataFrame, or columns gamma / accepted / gained as arrays)."""
        gamma = np.asarray(rounds["gamma"])
        spec = gamma > 0
        self.rounds += len(gamma)
        self.gained += int(np.asarray(rounds["gained"]).sum(dtype=np.int64))
        self.spec_rounds += int(spec.sum())
        self.drafted += int(gamma[spec].sum(dtype=np.int64))
        self.accepted += int(np.asarray(rounds["accepted"])[spec].sum(dtype=np.int64))

    def add_batches(self, batches: pd.DataFrame | dict[str, Any]) -> None:
        """Batches (a DataFrame, or columns as arrays; target and kind may be categoricals)."""
        codes, names = _codes(batches["target"])
        verify_codes, verify_names = _codes(batches["kind"])
        verify = verify_codes == (verify_names.index("verify") if "verify" in verify_names else -2)
        size = np.asarray(batches["size"])
        busy_s = np.asarray(batches["end_s"], dtype=np.float64) - np.asarray(batches["start_s"], dtype=np.float64)
        k = len(names)
        # busy time continues each target's running sum in row order (bincount adds sequentially), so any split of
        # the table into chunks gives the same float as the whole table
        prior = np.array([self.targets.get(str(t), (0.0,))[0] for t in names], dtype=np.float64)
        busy = np.bincount(np.concatenate([np.arange(k), codes]), weights=np.concatenate([prior, busy_s]), minlength=k)
        n = np.bincount(codes, minlength=k)
        nv = np.bincount(codes[verify], minlength=k)
        vreqs = np.bincount(codes[verify], weights=size[verify].astype(np.float64), minlength=k)
        for i, t in enumerate(names):
            if n[i] == 0:
                continue
            acc = self.targets.setdefault(str(t), [0.0, 0, 0, 0])
            acc[0] = float(busy[i])
            acc[1] += int(n[i])
            acc[2] += int(nv[i])
            acc[3] += int(vreqs[i])
        self.verify_batches += int(nv.sum())
        self.verify_reqs += int(vreqs.sum())

    def add(self, table: str, rows: pd.DataFrame, slo_ttft_ms: float, slo_tpot_ms: float) -> None:
        """Rows of the named table (requests / rounds / batches)."""
        if table == "requests":
            self.add_requests(rows, slo_ttft_ms, slo_tpot_ms)
        elif table == "rounds":
            self.add_rounds(rows)
        else:
            self.add_batches(rows)

    def result(self, slo_ttft_ms: float, slo_tpot_ms: float) -> dict[str, Any]:
        ends = [0.0 if self.ok == 0 else self.last_finish, 0.0 if self.total == 0 else self.last_arrival]
        duration = float(max(e for e in ends if not math.isnan(e)) if any(not math.isnan(e) for e in ends) else 0.0)
        dur = duration if duration > 0 else float("nan")
        per_target = {
            t: {"utilisation": _f(busy / dur), "batches": int(n), "mean_verify_batch": _f(vreqs / nv) if nv else None}
            for t, (busy, n, nv, vreqs) in sorted(self.targets.items())
        }
        return {
            "requests_total": int(self.total),
            "requests_completed": int(self.ok),
            "requests_failed": int(self.failed),
            "requests_unfinished": int(self.unfinished),
            "duration_s": duration,
            "request_throughput_rps": _f(self.ok / dur),
            "output_token_throughput_tps": _f(float(self.tokens_out) / dur),
            "goodput_rps": _f(self.good / dur),
            "slo": {"ttft_ms": slo_ttft_ms, "tpot_ms": slo_tpot_ms},
            "ttft_ms": self.lat["ttft_ms"].result(),
            "tpot_ms": self.lat["tpot_ms"].result(),
            "e2e_ms": self.lat["e2e_ms"].result(),
            "acceptance_rate": _f(self.accepted / self.drafted) if self.drafted else None,
            "tokens_per_round": _f(self.gained / self.rounds) if self.rounds else None,
            "mean_gamma": _f(self.drafted / self.spec_rounds) if self.spec_rounds else None,
            "rounds": int(self.rounds),
            "target_batch_size": _f(self.verify_reqs / self.verify_batches) if self.verify_batches else None,
            "targets": per_target,
        }


def _codes(column: Any) -> tuple[np.ndarray, list]:
    """(integer code per row, names) of a string column: a categorical's own codes, else factorized."""
    if isinstance(column, pd.Categorical):
        return np.asarray(column.codes), list(column.categories)
    if isinstance(column, pd.Series) and isinstance(column.dtype, pd.CategoricalDtype):
        return column.cat.codes.to_numpy(), list(column.cat.categories)
    codes, names = pd.factorize(np.asarray(column, dtype=object))
    return codes, list(names)


def _nanmax(a: float, b: float) -> float:
    b = float(b)
    if math.isnan(a):
        return b
    return a if math.isnan(b) or a >= b else b


def summarize(
    requests: pd.DataFrame,
    rounds: pd.DataFrame,
    batches: pd.DataFrame,
    slo_ttft_ms: float = DEFAULT_SLO_TTFT_MS,
    slo_tpot_ms: float = DEFAULT_SLO_TPOT_MS,
) -> dict[str, Any]:
    b = SummaryBuilder()
    b.add_requests(requests, slo_ttft_ms, slo_tpot_ms)
    b.add_rounds(rounds)
    b.add_batches(batches)
    return b.result(slo_ttft_ms, slo_tpot_ms)


SUMMARY_COLUMNS = {
    "requests": ["status", "arrival_s", "first_token_s", "finish_s", "output_tokens"],
    "rounds": ["gamma", "accepted", "gained"],
    "batches": ["target", "kind", "start_s", "end_s", "size"],
}


def summarize_dir(
    d, slo_ttft_ms: float = DEFAULT_SLO_TTFT_MS, slo_tpot_ms: float = DEFAULT_SLO_TPOT_MS, batch_rows: int = 1 << 18
) -> dict[str, Any]:
    """`summarize` over a run directory's parquet tables, read in batches of rows: memory independent of the
    number of rows (beyond Quantiles.EXACT_LIMIT requests the latency quantiles are within 0.1 %)."""
    import pyarrow.parquet as pq
    from pathlib import Path

    from testbed.tables import record_batches

    b = SummaryBuilder()
    for name, cols in SUMMARY_COLUMNS.items():
        f = pq.ParquetFile(Path(d) / f"{name}.parquet")
        for rb in record_batches(f, cols, batch_rows):
            b.add(name, rb.to_pandas(), slo_ttft_ms, slo_tpot_ms)
    return b.result(slo_ttft_ms, slo_tpot_ms)
