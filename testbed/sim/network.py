"""Links and paths in the simulator.

Each link direction is a FIFO server: a message of B wire bytes (testbed.wire) that reaches the link at
time t starts transmitting when the link is free, takes B*8/rate seconds, then propagates for the one-way
delay plus a jitter sample (normal, std = jitter_ms, clipped so the delay stays >= 0). Arrivals of one flow
(one source -> destination path) never overtake each other: jitter without reordering, as the emulator's
delay lines do per source.

FIFO order on a link is the order in which messages reach it. A message is computed hop by hop as far as
that order is known at its send time: its first hop (entered now), and every following hop that no other
path shares or that has no rate limit. At a shared, rate-limited hop further along (the switch -> cloud link
every edge's traffic crosses), the message continues in an event at the time it reaches that hop, so
messages from near and far edges are served in their true arrival order.

Approximations (documented in README):
- Loss: each TCP segment of a message is lost with the link's probability; a loss delays the message by one
  retransmission timeout (max(200 ms, 2 x the path's configured RTT)), repeated if lost again.
- Queue limit: a message that would wait longer than queue_pkts full-size packets take to serialise is
  treated as a loss (retransmitted after the timeout) - drop-tail, roughly.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import numpy as np

from testbed import wire
from testbed.sim.engine import EventLoop
from testbed.spec import Scenario

MIN_RTO_S = 0.2


class LinkDir:
    """One direction of one link."""

    __slots__ = ("name", "byte_time", "delay", "jitter", "loss", "max_backlog", "free_at", "rng", "_noise", "_k",
                 "users")

    def __init__(self, name: str, bw_mbps: float | None, delay_ms: float, jitter_ms: float, loss_pct: float,
                 queue_pkts: int, rng: random.Random):
        self.name = name
        self.byte_time = 8.0 / (bw_mbps * 1e6) if bw_mbps else 0.0
        self.delay = delay_ms / 1e3
        self.jitter = jitter_ms / 1e3
        self.loss = loss_pct / 100.0
        self.max_backlog = queue_pkts * (wire.MSS + wire.HEADER_BYTES) * self.byte_time
        self.free_at = 0.0
        self.rng = rng
        self._noise: list[float] = []
        self._k = 0
        self.users = 0  # paths crossing this link direction

    def jitter_sample(self) -> float:
        """Next normal(0, jitter) sample; drawn in blocks from the link's own seeded generator."""
        k = self._k
        if k >= len(self._noise):
            self._noise = np.random.default_rng(self.rng.getrandbits(64)).normal(0.0, self.jitter, 8192).tolist()
            k = 0
        self._k = k + 1
        return self._noise[k]


class Path:
    """The link directions from one node to another: one flow, with its retransmission timeout."""

    __slots__ = ("hops", "rto", "lossy", "last_arrival", "stops")

    def __init__(self, hops: list[LinkDir]):
        self.hops = hops
        rtt = 2.0 * sum(h.delay for h in hops)
        self.rto = max(MIN_RTO_S, 2.0 * rtt)
        self.lossy = any(h.loss > 0.0 for h in hops)
        self.last_arrival = 0.0
        # hops (after the first) entered in an event of their own: shared by several paths and rate-limited
        self.stops = [i for i, h in enumerate(hops) if i > 0 and h.users > 1 and h.byte_time > 0.0]

    def send(self, loop: EventLoop, t: float, payload: int, handler: Callable[[Any], None], arg: Any) -> None:
        """Send `payload` application bytes at time t (= loop.now); handler(arg) runs when it has arrived."""
        nbytes = payload + -(-payload // wire.MSS) * wire.HEADER_BYTES
        if not self.stops:
            loop.at(self.arrive(self.cross(t, nbytes, 0, len(self.hops))), handler, arg)
        else:
            Transit(self, nbytes, handler, arg).start(loop, t)

    def cross(self, t: float, nbytes: int, i: int, j: int) -> float:
        """Time at which a message entering hop i at t leaves hop j-1 (reaches the next node)."""
        hops = self.hops
        for k in range(i, j):
            h = hops[k]
            bt = h.byte_time
            if bt:
                start = h.free_at if h.free_at > t else t
                if self.lossy and start - t > h.max_backlog:
                    t += self.rto  # drop-tail: retransmitted after a timeout
                    start = h.free_at if h.free_at > t else t
                t = start + nbytes * bt
                h.free_at = t
            if h.loss:
                segs = -(-nbytes // (wire.MSS + wire.HEADER_BYTES))
                p_msg = 1.0 - (1.0 - h.loss) ** segs
                while h.rng.random() < p_msg:
                    t += self.rto
            if h.jitter:
                d = h.delay + h.jitter_sample()
                t = t + d if d > 0.0 else t
            else:
                t += h.delay
        return t

    def arrive(self, t: float) -> float:
        """No reordering within the flow."""
        if t < self.last_arrival:
            t = self.last_arrival
        self.last_arrival = t
        return t


class Transit:
    """A message on its way along a path with shared rate-limited hops: one event per such hop."""

    __slots__ = ("path", "nbytes", "handler", "arg", "i", "loop")

    def __init__(self, path: Path, nbytes: int, handler: Callable[[Any], None], arg: Any):
        self.path = path
        self.nbytes = nbytes
        self.handler = handler
        self.arg = arg
        self.i = 0

    def start(self, loop: EventLoop, t: float) -> None:
        self.loop = loop
        self._advance(t)

    def resume(self, _: object) -> None:
        self._advance(self.loop.now)

    def _advance(self, t: float) -> None:
        path = self.path
        nxt = next((s for s in path.stops if s > self.i), len(path.hops))
        t = path.cross(t, self.nbytes, self.i, nxt)
        self.i = nxt
        if nxt == len(path.hops):
            self.loop.at(path.arrive(t), self.handler, self.arg)
        else:
            self.loop.at(t, self.resume)


class SimNetwork:
    """All link directions of a scenario and the paths between its drafts and targets."""

    def __init__(self, scenario: Scenario, seed: int):
        self.dirs: dict[tuple[int, bool], LinkDir] = {}
        for i, l in enumerate(scenario.links):
            for fwd in (True, False):
                a, b = (l.a, l.b) if fwd else (l.b, l.a)
                self.dirs[(i, fwd)] = LinkDir(f"{a}->{b}", l.bw_mbps, l.delay_ms, l.jitter_ms, l.loss_pct,
                                              l.queue_pkts, random.Random(seed * 1_000_003 + 2 * i + fwd))
        for hops in scenario.paths.values():
            for h in hops:
                self.dirs[(h.link, h.forward)].users += 1
        self.paths: dict[tuple[str, str], Path] = {
            key: Path([self.dirs[(h.link, h.forward)] for h in hops]) for key, hops in scenario.paths.items()
        }

    def path(self, src: str, dst: str) -> Path:
        return self.paths[(src, dst)]
