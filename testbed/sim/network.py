"""Links and paths in the simulator.

Each link direction is a FIFO server: a message of B wire bytes (testbed.wire) that reaches the link at
time t starts transmitting when the link is free, takes B*8/rate seconds, then propagates for the
one-way delay plus a jitter sample (normal, std = jitter_ms, clipped at zero). Arrivals on one link
direction never overtake each other (jitter without reordering, as the user-space delay line does).

Approximations (documented in README):
- A message crosses a whole path in one computation at its send time: messages are served on each hop
  in the order they were sent, not in the order they reach that hop.
- Loss: each TCP segment of a message is lost with the link's probability; a loss delays the message by
  one retransmission timeout (max(200 ms, 2 x the path's configured RTT)), repeated if lost again.
- Queue limit: a message that would wait longer than queue_pkts full-size packets take to serialise is
  treated as a loss (retransmitted after the timeout) - drop-tail, roughly.
"""

from __future__ import annotations

import random

import numpy as np

from testbed import wire
from testbed.spec import Scenario

MIN_RTO_S = 0.2


class LinkDir:
    """One direction of one link."""

    __slots__ = ("name", "byte_time", "delay", "jitter", "loss", "max_backlog", "free_at", "last_arrival", "rng",
                 "_noise", "_k")

    def __init__(self, name: str, bw_mbps: float | None, delay_ms: float, jitter_ms: float, loss_pct: float,
                 queue_pkts: int, rng: random.Random):
        self.name = name
        self.byte_time = 8.0 / (bw_mbps * 1e6) if bw_mbps else 0.0
        self.delay = delay_ms / 1e3
        self.jitter = jitter_ms / 1e3
        self.loss = loss_pct / 100.0
        self.max_backlog = queue_pkts * (wire.MSS + wire.HEADER_BYTES) * self.byte_time
        self.free_at = 0.0
        self.last_arrival = 0.0
        self.rng = rng
        self._noise: list[float] = []
        self._k = 0

    def jitter_sample(self) -> float:
        """Next normal(0, jitter) sample; drawn in blocks from the link's own seeded generator."""
        k = self._k
        if k >= len(self._noise):
            self._noise = np.random.default_rng(self.rng.getrandbits(64)).normal(0.0, self.jitter, 8192).tolist()
            k = 0
        self._k = k + 1
        return self._noise[k]


class Path:
    """The link directions from one node to another, with the retransmission timeout of the path."""

    __slots__ = ("hops", "rto", "lossy")

    def __init__(self, hops: list[LinkDir]):
        self.hops = hops
        rtt = 2.0 * sum(h.delay for h in hops)
        self.rto = max(MIN_RTO_S, 2.0 * rtt)
        self.lossy = any(h.loss > 0.0 for h in hops)

    def transfer(self, t: float, payload: int) -> float:
        """Send `payload` application bytes at time t; returns the arrival time at the far end."""
        nbytes = payload + -(-payload // wire.MSS) * wire.HEADER_BYTES
        for h in self.hops:
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
                arr = t + d if d > 0.0 else t
            else:
                arr = t + h.delay
            if arr < h.last_arrival:
                arr = h.last_arrival
            h.last_arrival = arr
            t = arr
        return t


class SimNetwork:
    """All link directions of a scenario and the paths between its drafts and targets."""

    def __init__(self, scenario: Scenario, seed: int):
        self.dirs: dict[tuple[int, bool], LinkDir] = {}
        for i, l in enumerate(scenario.links):
            for fwd in (True, False):
                a, b = (l.a, l.b) if fwd else (l.b, l.a)
                self.dirs[(i, fwd)] = LinkDir(f"{a}->{b}", l.bw_mbps, l.delay_ms, l.jitter_ms, l.loss_pct,
                                              l.queue_pkts, random.Random(seed * 1_000_003 + 2 * i + fwd))
        self.paths: dict[tuple[str, str], Path] = {
            key: Path([self.dirs[(h.link, h.forward)] for h in hops]) for key, hops in scenario.paths.items()
        }

    def path(self, src: str, dst: str) -> Path:
        return self.paths[(src, dst)]
