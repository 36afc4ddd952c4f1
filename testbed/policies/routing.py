"""Routing policies: which target a draft node sends a new request to (simulator and draft nodes).

Each draft node has its own router. Inputs are what the draft itself knows: the targets it can reach (in
spec order), the queue depth each target reported in its last reply, and how many of this draft's own
requests are active at each target.

    random       uniform choice, from a generator seeded by (seed, draft name)
    round_robin  cycle through the reachable targets
    jsq          join the shortest queue: least reported depth, then fewest own active requests,
                 then spec order
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Sequence


class Router:
    __slots__ = ("kind", "targets", "_rng", "_next")

    def __init__(self, kind: str, targets: Sequence[str], seed: int, draft_name: str):
        if kind not in ("random", "round_robin", "jsq"):
            raise ValueError(f"unknown routing policy {kind!r}; accepted: random, round_robin, jsq")
        if not targets:
            raise ValueError(f"draft {draft_name!r} has no reachable target")
        self.kind = kind
        self.targets = tuple(targets)
        self._rng = random.Random((seed << 32) ^ zlib.crc32(draft_name.encode()))
        self._next = 0

    def choose(
        self,
        reported_depth: dict[str, int],
        own_active: dict[str, int],
        exclude: frozenset[str] | set[str] = frozenset(),
    ) -> str | None:
        """The target of a new (or re-routed) request; `exclude`: targets believed dead (testbed/faults.py);
        None when every reachable target is excluded."""
        t = self.targets
        if exclude:
            t = tuple(x for x in t if x not in exclude)
            if not t:
                return None
        if len(t) == 1:
            return t[0]
        if self.kind == "random":
            return t[self._rng.randrange(len(t))]
        if self.kind == "round_robin":
            if exclude:
                for _ in range(len(self.targets)):
                    i = self._next
                    self._next = (i + 1) % len(self.targets)
                    if self.targets[i] not in exclude:
                        return self.targets[i]
            i = self._next
            self._next = (i + 1) % len(t)
            return t[i]
        best = t[0]
        best_key = (reported_depth.get(best, 0), own_active.get(best, 0))
        for name in t[1:]:
            key = (reported_depth.get(name, 0), own_active.get(name, 0))
            if key < best_key:
                best, best_key = name, key
        return best
