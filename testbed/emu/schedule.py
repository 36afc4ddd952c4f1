"""The schedule, applied live during an emulation (testbed/schedule.py, rules in testbed/faults.py).

Link changes are handed to the network backend at T0 (the userspace delay lines apply them at their times in
their own precise timer loops and acknowledge when they did; capacity traces run inside the delay line from
T0). A thread wakes at T0 + each change's time (sleep, then spin for the last milliseconds), changes tbf rates
(tc), collects the acknowledgements, and makes node events real: a crash as SIGKILL to the node's process group, a
restart as a new process of the node on the same address and port, with no state (started right after the
crash, it loads and waits, and binds at the restart's time: an interpreter start takes seconds on a busy host). Every
change is logged
with when it took effect and its lateness (emu/events.parquet).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from itertools import groupby
from typing import Any

from testbed.schedule import Change, describe_change

LINK_KINDS = ("link_params", "link_down", "link_up")
SPIN_S = 0.002


class LiveSchedule:
    def __init__(self, scenario: Any, net: Any, kill: Callable[[str], None], restart: Callable[..., None]):
        self.scenario = scenario
        self.net = net
        self.kill = kill
        self.restart = restart
        self.rows: list[tuple] = []
        self.error = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, t0: float) -> None:
        self.net.set_t0(t0)
        groups = [
            (t, [c for c in g if c.kind in LINK_KINDS])
            for t, g in groupby(self.scenario.schedule.changes, key=lambda c: c.t)
        ]
        groups = [(t, g) for t, g in groups if g]
        if groups:
            self.net.prepare_changes(groups, t0)  # the delay lines apply them at their times themselves
        if self.scenario.schedule.changes:
            self._thread = threading.Thread(target=self._run, args=(t0,), name="dsd-schedule", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _wait_until(self, due: float) -> bool:
        while True:
            left = due - time.monotonic()
            if left <= 0:
                return True
            if left > SPIN_S:
                if self._stop.wait(left - SPIN_S):
                    return False

    def _run(self, t0: float) -> None:
        links = self.scenario.links
        prepared: set[tuple[str, float]] = set()
        try:
            for t, group in groupby(self.scenario.schedule.changes, key=lambda c: c.t):
                if not self._wait_until(t0 + t):
                    return
                batch: list[Change] = list(group)
                link_changes = [c for c in batch if c.kind in LINK_KINDS]
                if link_changes:
                    applied = self.net.apply_changes(link_changes)
                    for c in link_changes:
                        self._log(c, applied - t0, links)
                for c in batch:
                    if c.kind == "crash":
                        self.kill(c.node)
                        self._log(c, time.monotonic() - t0, links)
                        nxt = next(
                            (
                                r
                                for r in self.scenario.schedule.changes
                                if r.kind == "restart" and r.node == c.node and r.t > c.t
                            ),
                            None,
                        )
                        if nxt is not None:  # the new process loads now and binds at the restart's time
                            self.restart(c.node, t0 + nxt.t)
                            prepared.add((c.node, nxt.t))
                    elif c.kind == "restart":
                        if (c.node, c.t) not in prepared:
                            self.restart(c.node)
                        self._log(c, time.monotonic() - t0, links)
        except Exception as e:  # recorded; the run goes on with what was applied
            self.error = f"{type(e).__name__}: {e}"

    def _log(self, c: Change, applied_s: float, links) -> None:
        link, node, detail = describe_change(c, links)
        self.rows.append((c.t, applied_s, (applied_s - c.t) * 1e3, c.kind, link, node, detail))
