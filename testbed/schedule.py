"""What changes during a run, resolved: per-link parameter steps, link outages, capacity traces per link
direction, node crashes. Built once by `testbed.spec.schedule` from the spec's `schedule` section; read by the
simulator's link and node models and by the emulator, which applies the same changes live.

Times are seconds from the run's start (the workload's time 0). Intervals are half-open [start, end); an
end of `inf` means "to the end of the run".
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from traces.nettrace import OPPORTUNITY_BYTES

INF = float("inf")


class LinkState(NamedTuple):
    """A link's parameters from some time on (both directions)."""

    delay_ms: float
    jitter_ms: float
    loss_pct: float
    bw_mbps: float | None


@dataclass(frozen=True)
class Change:
    """One scheduled change, as both executors apply it and log it in their events table."""

    t: float
    kind: str  # link_params | link_down | link_up | crash | restart
    link: int = -1  # link index (link kinds), else -1
    node: str = ""  # node name (crash / restart), else ""
    state: LinkState | None = None  # link_params: the link's parameters from t on
    cause: str = ""  # e.g. 'step', 'partition nodes=e0,e1', 'event'


@dataclass(frozen=True, eq=False)
class LinkTrace:
    """A Mahimahi capacity trace on one link direction: delivery opportunities of OPPORTUNITY_BYTES each."""

    path: str
    times_ms: np.ndarray  # non-decreasing int64, last = the loop period
    offset_ms: int  # run time 0 is this far into the loop

    @property
    def period_ms(self) -> int:
        return int(self.times_ms[-1])

    def opportunities(self, t0_ms: int, t1_ms: int) -> np.ndarray:
        """Run-time milliseconds (sorted, repeated for several opportunities) of the opportunities in [t0, t1)."""
        period = self.period_ms
        out = []
        k = (t0_ms + self.offset_ms) // period
        while True:
            base = k * period - self.offset_ms  # run time of the loop start number k
            if base >= t1_ms:
                break
            ts = self.times_ms + base
            lo = np.searchsorted(ts, t0_ms, "left")
            hi = np.searchsorted(ts, t1_ms, "left")
            out.append(ts[lo:hi])
            k += 1
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


class TraceServer:
    """Mahimahi's link queue on one direction, byte-exact (as mahimahi's LinkQueue): packets wait in FIFO
    order; each opportunity carries up to OPPORTUNITY_BYTES, a packet may span opportunities and several small
    packets may share one; bytes of an opportunity nobody uses are lost. Time is in whole milliseconds: the
    opportunity of millisecond m serves packets that arrived before m + 1 and releases them at max(m, arrival).
    `depart(t, nbytes)` is called in arrival order (FIFO). The emulator's delay line implements the same rule
    (delayline.c, `trace_depart`); tests/test_schedule.py checks the two agree packet by packet."""

    __slots__ = ("trace", "chunk", "next_chunk_ms", "i", "left", "cur_ms")

    CHUNK_MS = 10_000

    def __init__(self, trace: LinkTrace):
        self.trace = trace
        self.chunk = np.zeros(0, dtype=np.int64)
        self.next_chunk_ms = 0
        self.i = 0  # next unused opportunity in chunk
        self.left = 0  # bytes left in the opportunity in use (at millisecond cur_ms)
        self.cur_ms = -1

    def _take(self, m: int) -> int:
        """The first unused opportunity at millisecond >= m (earlier ones are skipped: lost)."""
        while True:
            chunk = self.chunk
            if self.i < len(chunk):
                if chunk[self.i] >= m:
                    self.i += 1
                    return int(chunk[self.i - 1])
                if chunk[-1] >= m:
                    self.i = int(np.searchsorted(chunk, m, "left"))
                    continue
            start = max(self.next_chunk_ms, m)
            self.chunk = self.trace.opportunities(start, start + self.CHUNK_MS)
            self.next_chunk_ms = start + self.CHUNK_MS
            self.i = 0

    def depart(self, t: float, nbytes: int) -> float:
        """Time (s) at which a packet of nbytes that reached the queue at t (s) has crossed the link."""
        m = int(t * 1e3)  # the millisecond the packet arrived in
        need = nbytes
        if self.left and self.cur_ms >= m:
            use = need if need < self.left else self.left
            self.left -= use
            need -= use
        while need > 0:
            self.cur_ms = self._take(m)
            use = need if need < OPPORTUNITY_BYTES else OPPORTUNITY_BYTES
            need -= use
            self.left = OPPORTUNITY_BYTES - use
        out = self.cur_ms / 1e3
        return out if out > t else t


@dataclass(frozen=True)
class Schedule:
    changes: tuple[Change, ...] = ()  # sorted by time (stable: spec order at equal times)
    traces: dict[tuple[int, bool], LinkTrace] = field(default_factory=dict)  # (link, forward) -> trace
    steps: dict[int, tuple[tuple[float, LinkState], ...]] = field(default_factory=dict)  # link -> (from t, state)
    down: dict[int, tuple[tuple[float, float], ...]] = field(default_factory=dict)  # link -> outages
    crashed: dict[str, tuple[tuple[float, float], ...]] = field(default_factory=dict)  # node -> down intervals

    @property
    def active(self) -> bool:
        return bool(self.changes or self.traces)

    def link_scheduled(self, link: int) -> bool:
        return link in self.steps or link in self.down or (link, True) in self.traces or (link, False) in self.traces

    def state_at(self, link: int, t: float) -> LinkState | None:
        """The link's parameters at t (None = never changes: use the spec's)."""
        st = self.steps.get(link)
        if not st:
            return None
        k = bisect.bisect_right([s[0] for s in st], t) - 1
        return st[max(k, 0)][1]

    def link_down_at(self, link: int, t: float) -> bool:
        return _inside(self.down.get(link, ()), t)

    def node_down_at(self, node: str, t: float) -> bool:
        return _inside(self.crashed.get(node, ()), t)


def _inside(intervals, t: float) -> bool:
    for a, b in intervals:
        if a <= t < b:
            return True
    return False


def merge_intervals(ivs) -> tuple[tuple[float, float], ...]:
    """Overlapping or touching [start, end) intervals merged, sorted."""
    out: list[list[float]] = []
    for a, b in sorted(ivs):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return tuple((a, b) for a, b in out)


def describe_change(c: Change, links) -> tuple[str, str, str]:
    """(link 'a-b', node, detail) of a change, for the events table."""
    link = f"{links[c.link].a}-{links[c.link].b}" if c.link >= 0 else ""
    detail = c.cause
    if c.state is not None:
        st = c.state
        detail = (
            f"delay_ms={st.delay_ms:g} jitter_ms={st.jitter_ms:g} loss_pct={st.loss_pct:g} "
            f"bw_mbps={'-' if st.bw_mbps is None else f'{st.bw_mbps:g}'} ({c.cause})"
        )
    return link, c.node, detail


def schedule_rows(scenario) -> list[tuple]:
    """Events-table rows (testbed.tables.EVENT_COLUMNS) of the schedule applied exactly on time (simulator)."""
    rows = []
    for c in scenario.schedule.changes:
        link, node, detail = describe_change(c, scenario.links)
        rows.append((c.t, c.t, 0.0, c.kind, link, node, detail))
    return rows
