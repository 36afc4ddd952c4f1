"""The event loop: a heap of (time, seq, handler, arg) with a per-simulator sequence counter.

Ties at equal times run in scheduling order (seq), so a run is a pure function of its inputs. Handlers are
plain callables taking one argument; the loop is the simulator's hot path, so it is kept minimal.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Any


class EventLoop:
    __slots__ = ("now", "heap", "_seq", "events")

    def __init__(self) -> None:
        self.now = 0.0
        self.heap: list[tuple[float, int, Callable[[Any], None], Any]] = []
        self._seq = itertools.count()
        self.events = 0

    def at(self, t: float, handler: Callable[[Any], None], arg: Any = None) -> None:
        """Schedule handler(arg) at absolute time t >= now (callers guarantee it: delays are never negative)."""
        heapq.heappush(self.heap, (t, next(self._seq), handler, arg))

    def run(self, until: float = float("inf"), on_step: Callable[[], bool] | None = None, every: int = 0x10000) -> None:
        """Run events with time <= until. `on_step`, if given, is called every `every` events (a power of two,
        65,536 by default); return True to stop."""
        mask = every - 1
        heap = self.heap
        pop = heapq.heappop
        n = self.events
        while heap:
            if heap[0][0] > until:
                break
            t, _, handler, arg = pop(heap)
            self.now = t
            handler(arg)
            n += 1
            if on_step is not None and not n & mask and on_step():
                break
        self.events = n
