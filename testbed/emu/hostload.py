"""How busy the host was while a run ran: sampled by the orchestrator, recorded in emu/summary.json
("emulator" -> "host_load") and judged by analysis/disturbance.py.

A node program that waits for the CPU delays its messages and computations by an amount the simulator does
not model; on a machine shared with other jobs that is the first suspect when emulation and simulation
disagree. Linux counters only (/proc/stat, /proc/loadavg, /proc/PID/task/*/stat); elsewhere the record says so.

The run's own processes (its node programs, delay lines, probes: the orchestrator's descendants, plus the pids
`own_pids` names, e.g. containers') are load too, but expected load: a real-model run keeps both cores busy
by itself. Each sample therefore also counts the runnable threads of the run's own processes and their CPU
time, so the record separates the run's own load from the rest of the machine ("foreign": runnable tasks and
CPU share that are not the run's), and analysis/disturbance.py warns only when foreign load made the run wait.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from testbed.emu.net.runstate import stat_fields

PROC = Path("/proc")


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


def own_processes(roots: Iterable[int]) -> set[int]:
    """The processes under `roots` (descendants, the roots included), from every /proc/PID/stat's parent pid."""
    children: dict[int, list[int]] = {}
    for d in PROC.iterdir():
        if d.name.isdigit():
            f = stat_fields(d / "stat")
            if f and len(f) > 1:
                children.setdefault(int(f[1]), []).append(int(d.name))
    out, todo = set(), [r for r in roots if r]
    while todo:
        p = todo.pop()
        if p not in out:
            out.add(p)
            todo.extend(children.get(p, ()))
    return out


def _own_usage(pids: Iterable[int], exclude_tid: int | None) -> tuple[int, dict[int, int]]:
    """(runnable threads, {pid: utime + stime jiffies}) of these processes; thread `exclude_tid` (the sampler
    itself) not counted."""
    running, cpu = 0, {}
    for pid in pids:
        f = stat_fields(PROC / str(pid) / "stat")
        if not f or len(f) < 13:
            continue
        cpu[pid] = int(f[11]) + int(f[12])
        try:
            tasks = list((PROC / str(pid) / "task").iterdir())
        except OSError:
            continue
        for t in tasks:
            if t.name != str(exclude_tid):
                tf = stat_fields(t / "stat")
                running += bool(tf) and tf[0] == "R"
    return running, cpu


def _loadavg() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


class HostLoad:
    """Samples of the host's run queue and CPU use between start() and report(), the run's own share apart.

    own_pids: extra roots of the run's own processes (the orchestrator's descendants always count), called at
    each sample (processes come and go)."""

    def __init__(self, every_s: float = 0.5, own_pids: Callable[[], Iterable[int]] | None = None):
        self.every_s = every_s
        self.cores = os.cpu_count() or 1
        self.own_pids = own_pids
        self.running: list[int] = []
        self.own_running: list[int] = []
        self.own_cpu0: dict[int, int] = {}  # pid -> CPU jiffies when first seen
        self.own_cpu1: dict[int, int] = {}  # pid -> CPU jiffies when last seen
        self.cpu0: tuple[int, int] | None = None
        self.load0: float | None = None
        self.t0 = self.last = 0.0

    def start(self) -> None:
        self.cpu0, self.load0 = _cpu_times(), _loadavg()
        self.t0 = self.last = time.monotonic()
        self._sample_own()

    def _sample_own(self) -> int | None:
        if not PROC.is_dir():
            return None
        me = os.getpid()
        roots = [me, *(self.own_pids() if self.own_pids else ())]
        pids = own_processes(roots)
        running, cpu = _own_usage(pids, exclude_tid=me)
        for pid, j in cpu.items():
            self.own_cpu0.setdefault(pid, j)
            self.own_cpu1[pid] = j
        return running

    def sample(self) -> None:
        now = time.monotonic()
        if now - self.last < self.every_s:
            return
        self.last = now
        r = _procs_running()
        own = self._sample_own()
        if r is not None:
            self.running.append(max(0, r))
            if own is not None:
                self.own_running.append(min(own, max(0, r)))

    def report(self) -> dict[str, Any]:
        cpu1 = _cpu_times()
        busy = None
        if self.cpu0 and cpu1 and cpu1[1] > self.cpu0[1]:
            busy = (cpu1[0] - self.cpu0[0]) / (cpu1[1] - self.cpu0[1])
        rs = sorted(self.running)
        own = self.own_running
        own_cpu = sum(self.own_cpu1[p] - self.own_cpu0[p] for p in self.own_cpu1)
        total_j = (cpu1[1] - self.cpu0[1]) if (self.cpu0 and cpu1) else 0
        own_frac = own_cpu / total_j if total_j > 0 else None
        foreign = [r - o for r, o in zip(self.running, own)] if len(own) == len(rs) else []
        return {
            "cores": self.cores,
            "seconds": round(time.monotonic() - self.t0, 2),
            "samples": len(rs),
            "cpu_busy_frac": None if busy is None else round(busy, 3),
            "runnable_mean": round(sum(rs) / len(rs), 2) if rs else None,
            "runnable_p90": rs[int(0.9 * (len(rs) - 1))] if rs else None,
            "runnable_max": rs[-1] if rs else None,
            "own_runnable_mean": round(sum(own) / len(own), 2) if own else None,
            "foreign_runnable_mean": round(sum(foreign) / len(foreign), 2) if foreign else None,
            "own_cpu_frac": None if own_frac is None else round(own_frac, 3),
            "foreign_cpu_busy_frac": None if busy is None or own_frac is None else round(max(0.0, busy - own_frac), 3),
            "loadavg_1m_start": self.load0,
            "loadavg_1m_end": _loadavg(),
        }
