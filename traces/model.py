"""The :class:`Trace` dataclass, the rows a format parser produces, and the windowing between the two."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import TraceError


@dataclass(frozen=True)
class Trace:
    """A request trace, windowed and scaled, ready to replay. All arrays have one entry per request."""

    source: str  # path of the file, or "synthetic:..." with the generator's parameters
    request_id: np.ndarray  # int64, 0..n-1 in arrival order after windowing
    arrival_s: np.ndarray  # float64, seconds from the first kept request (0.0), nondecreasing, scaled
    prompt_tokens: np.ndarray  # int32 >= 1
    output_tokens: np.ndarray  # int32 >= 1
    field: np.ndarray | None  # object array of str (e.g. BurstGPT Model), None when the format has none
    skipped_rows: int  # malformed rows skipped with skip_bad_rows=True (whole file)
    excluded_rows: int = 0  # well-formed rows excluded by the format's rule, e.g. failed BurstGPT requests

    def __len__(self) -> int:
        return int(self.arrival_s.shape[0])


@dataclass(frozen=True)
class ParsedRows:
    """What a format parser returns: the good rows of a whole file, in file order, before windowing."""

    t_s: np.ndarray  # float64 seconds, any origin
    t0_s: float  # origin of the windows: earliest timestamp of all well-formed rows (incl. excluded ones)
    prompt_tokens: np.ndarray  # int64 >= 1
    output_tokens: np.ndarray  # int64 >= 1
    field: np.ndarray | None
    skipped_rows: int
    excluded_rows: int


@dataclass(frozen=True)
class Window:
    """Which requests of a trace to keep and how to scale their arrival times (see FORMATS.md)."""

    start_s: float = 0.0
    duration_s: float | None = None
    max_requests: int | None = None
    time_scale: float = 1.0
    rate_scale: float = 1.0

    def check(self, source: str) -> None:
        """Raise TraceError (prefixed with ``source``) for an argument out of range."""
        problems = []
        if not (math.isfinite(self.start_s) and self.start_s >= 0):
            problems.append(f"start_s must be >= 0, got {self.start_s!r}")
        if self.duration_s is not None and not (math.isfinite(self.duration_s) and self.duration_s > 0):
            problems.append(f"duration_s must be > 0, got {self.duration_s!r}")
        if self.max_requests is not None and (
            isinstance(self.max_requests, bool)
            or not isinstance(self.max_requests, (int, np.integer))
            or self.max_requests < 1
        ):
            problems.append(f"max_requests must be an integer >= 1, got {self.max_requests!r}")
        for name in ("time_scale", "rate_scale"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                problems.append(f"{name} must be > 0, got {value!r}")
        if problems:
            raise TraceError(f"{source}: " + "; ".join(problems))

    def describe(self) -> str:
        end = "end" if self.duration_s is None else f"{self.start_s + self.duration_s:g} s"
        cap = "" if self.max_requests is None else f", max_requests={self.max_requests}"
        return f"window [{self.start_s:g} s, {end}) of trace time{cap}"


def build_trace(rows: ParsedRows, source: str, window: Window) -> Trace:
    """Sort stably by time, keep the window (on original trace time), re-base to 0, then scale."""
    window.check(source)
    n_rows = rows.t_s.shape[0]
    if n_rows == 0:
        raise TraceError(
            f"{source}: no usable requests in the file "
            f"({rows.skipped_rows} malformed rows skipped, {rows.excluded_rows} rows excluded)"
        )
    order = np.argsort(rows.t_s, kind="stable")
    rel = rows.t_s[order] - rows.t0_s
    lo = np.searchsorted(rel, window.start_s, side="left")
    hi = n_rows if window.duration_s is None else np.searchsorted(rel, window.start_s + window.duration_s, side="left")
    if window.max_requests is not None:
        hi = min(hi, lo + int(window.max_requests))
    if hi <= lo:
        raise TraceError(
            f"{source}: no requests in {window.describe()}; the trace spans {float(rel[-1]):g} s with {n_rows} requests"
        )
    idx = order[lo:hi]
    kept = rel[lo:hi]
    arrival = (kept - kept[0]) * (window.time_scale / window.rate_scale)
    field = None if rows.field is None else rows.field[idx]
    return Trace(
        source=source,
        request_id=np.arange(hi - lo, dtype=np.int64),
        arrival_s=arrival.astype(np.float64, copy=False),
        prompt_tokens=rows.prompt_tokens[idx].astype(np.int32),
        output_tokens=rows.output_tokens[idx].astype(np.int32),
        field=field,
        skipped_rows=int(rows.skipped_rows),
        excluded_rows=int(rows.excluded_rows),
    )


def tile_trace(trace: Trace, period_s: float, span_s: float) -> Trace:
    """Time-tiling: copies of the (windowed, scaled) trace placed back to back, copy k shifted by k x period_s,
    keeping the requests that arrive before span_s; request ids renumbered 0.. in arrival order.

    Builds a day from an hour-long trace (with rate_scale for more load). Limits: every copy repeats the same
    requests (lengths, order, inter-arrival pattern), so the result has the source window's burstiness and
    mix but no diurnal cycle and no new lengths; a period shorter than the window's last arrival would
    interleave copies (callers pass the window's length).
    """
    if not (math.isfinite(period_s) and period_s > 0):
        raise TraceError(f"{trace.source}: tiling needs a period > 0 s, got {period_s!r}")
    n = len(trace)
    copies = max(1, math.ceil(span_s / period_s))
    arrival = (trace.arrival_s[None, :] + period_s * np.arange(copies)[:, None]).ravel()
    keep = int(np.searchsorted(arrival, span_s, side="left"))
    if keep == 0:
        raise TraceError(f"{trace.source}: no request arrives in the first {span_s:g} s of the tiled trace")
    reps = -(-keep // n)

    def rep(a: np.ndarray) -> np.ndarray:
        return np.tile(a, reps)[:keep]

    return Trace(
        source=f"{trace.source} (tiled every {period_s:g} s to {span_s:g} s)",
        request_id=np.arange(keep, dtype=np.int64),
        arrival_s=arrival[:keep],
        prompt_tokens=rep(trace.prompt_tokens),
        output_tokens=rep(trace.output_tokens),
        field=None if trace.field is None else rep(trace.field),
        skipped_rows=trace.skipped_rows,
        excluded_rows=trace.excluded_rows,
    )
