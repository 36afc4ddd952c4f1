"""How busy the host was while a run ran: sampled by the orchestrator, recorded in emu/summary.json
("emulator" -> "host_load") and judged by analysis/disturbance.py.

A node program that waits for the CPU delays its messages and computations by an amount the simulator does
not model; on a machine shared with other jobs that is the first suspect when emulation and simulation
disagree. Linux counters only (/proc/stat, /proc/loadavg); elsewhere the record says so.
"""

from __future__ import annotations

import os
import time
from typing import Any


def _cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs since boot."""
    try:
        with open("/proc/stat") as f:
            parts = f.readline().split()
    except OSError:
        return None
    vals = [int(x) for x in parts[1:]]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)  # idle + iowait
    return sum(vals[:8]) - idle, sum(vals[:8])


def _procs_running() -> int | None:
    try:
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("procs_running"):
                    return int(line.split()[1]) - 1  # not counting the sampler itself
    except OSError:
        return None
    return None


def _loadavg() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


class HostLoad:
    """Samples of the host's run queue and CPU use between start() and report()."""

    def __init__(self, every_s: float = 0.5):
        self.every_s = every_s
        self.cores = os.cpu_count() or 1
        self.running: list[int] = []
        self.cpu0: tuple[int, int] | None = None
        self.load0: float | None = None
        self.t0 = self.last = 0.0

    def start(self) -> None:
        self.cpu0, self.load0 = _cpu_times(), _loadavg()
        self.t0 = self.last = time.monotonic()

    def sample(self) -> None:
        now = time.monotonic()
        if now - self.last < self.every_s:
            return
        self.last = now
        r = _procs_running()
        if r is not None:
            self.running.append(max(0, r))

    def report(self) -> dict[str, Any]:
        cpu1 = _cpu_times()
        busy = None
        if self.cpu0 and cpu1 and cpu1[1] > self.cpu0[1]:
            busy = (cpu1[0] - self.cpu0[0]) / (cpu1[1] - self.cpu0[1])
        rs = sorted(self.running)
        return {
            "cores": self.cores,
            "seconds": round(time.monotonic() - self.t0, 2),
            "samples": len(rs),
            "cpu_busy_frac": None if busy is None else round(busy, 3),
            "runnable_mean": round(sum(rs) / len(rs), 2) if rs else None,
            "runnable_p90": rs[int(0.9 * (len(rs) - 1))] if rs else None,
            "runnable_max": rs[-1] if rs else None,
            "loadavg_1m_start": self.load0,
            "loadavg_1m_end": _loadavg(),
        }
