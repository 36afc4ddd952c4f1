"""Clock and precise waits of node programs.

All node processes of a host read CLOCK_MONOTONIC (Python's `time.monotonic` on Linux), so timestamps of
different nodes are comparable; tables hold seconds since the run's start T0 (an absolute CLOCK_MONOTONIC
value the orchestrator passes to every node).

Waits: a node waits for "a socket is readable or the next timer is due". `wait_readable` blocks in
select() (microsecond timeouts, unlike zmq_poll's milliseconds) until SPIN_S before the deadline, then
spins for the rest, so timers fire within a few microseconds of their deadline without burning a core
(the spin is at most SPIN_S per timer). `Lateness` records how late each timer actually fired; nodes
report it in their node.json (the measured timing error of the profiled backend).
"""

from __future__ import annotations

import select
import time

monotonic = time.monotonic
SPIN_S = 200e-6  # spin (busy-wait) the last 200 us before a deadline


def wait_readable(fds: list[int], deadline: float, spin_s: float = SPIN_S) -> bool:
    """Block until one of `fds` is readable (True) or `deadline` (absolute monotonic seconds) is reached (False)."""
    while True:
        rem = deadline - monotonic()
        if rem <= spin_s:
            while monotonic() < deadline:
                pass
            return False
        r, _, _ = select.select(fds, (), (), rem - spin_s)
        if r:
            return True


def sleep_until(deadline: float, spin_s: float = SPIN_S) -> None:
    """Sleep until `deadline`, spinning the last `spin_s` seconds."""
    rem = deadline - monotonic() - spin_s
    if rem > 0:
        time.sleep(rem)
    while monotonic() < deadline:
        pass


class Lateness:
    """How late timers fired (actual - scheduled), in microseconds: count, mean, p50, p99, max."""

    __slots__ = ("samples", "limit", "count", "total", "worst")

    def __init__(self, limit: int = 200_000):
        self.samples: list[float] = []
        self.limit = limit  # keep at most this many samples for percentiles (count / mean / max use all)
        self.count = 0
        self.total = 0.0
        self.worst = 0.0

    def add(self, late_s: float) -> None:
        self.count += 1
        self.total += late_s
        if late_s > self.worst:
            self.worst = late_s
        if len(self.samples) < self.limit:
            self.samples.append(late_s)

    def report(self) -> dict[str, float | int | None]:
        if not self.count:
            return {"count": 0, "mean_us": None, "p50_us": None, "p99_us": None, "max_us": None}
        s = sorted(self.samples)

        def q(p: float) -> float:
            return round(s[min(len(s) - 1, int(p * len(s)))] * 1e6, 1)

        return {
            "count": self.count,
            "mean_us": round(self.total / self.count * 1e6, 1),
            "p50_us": q(0.5),
            "p99_us": q(0.99),
            "max_us": round(self.worst * 1e6, 1),
        }
