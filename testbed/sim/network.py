"""Links and paths in the simulator.

Each link direction is a FIFO server: a message of B wire bytes (testbed.wire) whose first packet reaches the
link at time t starts transmitting when the link is free, takes B*8/rate seconds less the credit of the link's
token bucket (wire.link_burst_bytes, refilled at the rate while the link is idle; the emulator's tbf has the same
burst), and its last byte leaves neither before t nor before it reached the link. Packets are forwarded one by
one (Path.cross): the message's first packet goes on to the next hop once it has crossed, so a path of two
equally slow links takes one packet's time longer than one of them, not twice as long. Each hop then adds the
one-way delay plus a jitter sample (normal, std = jitter_ms, clipped so the delay stays >= 0). Arrivals of one flow
(one source -> destination path) never overtake each other: jitter without reordering, as the emulator's
delay lines do per source.

FIFO order on a link is the order in which messages reach it. A message is computed hop by hop as far as
that order is known at its send time: its first hop (entered now), and every following hop that no other
path shares or that has no rate limit. At a shared, rate-limited hop further along (the switch -> cloud link
every edge's traffic crosses), the message continues in an event at the time it reaches that hop, so
messages from near and far edges are served in their true arrival order.

Scheduled links (the spec's `schedule`, testbed/schedule.py; rules in testbed/faults.py): a path with a
scheduled link is computed by `Path.cross_sched`. Delay, jitter and loss of every hop are those in force when
the message enters the path (as the emulator's delay line applies them when a packet reaches it); rate steps
and capacity traces act at the time the message reaches the hop (they are queues). A trace direction serves
bytes at its delivery opportunities (testbed.schedule.TraceServer; IP bytes, without the Ethernet header).
A message sent while a link of its path is down is retransmitted with backoff (faults.retransmit_until), and
later messages of the same connection wait behind it.

Retransmission timeouts (outages, losses, drop-tail) are those of the sending connection (faults.AckClock: Linux's
RTT estimator fed with the path's message crossings and the receiver's ACK timing) on paths with a schedule or loss;
a path with neither never loses a message and keeps no estimator.

Approximations (documented in README):
- Loss: each TCP segment of a message is lost with the link's probability; a lost one is recovered as
  faults.loss_recovery_s says (RACK, tail-loss probe, RTO), a lost retransmission after the doubling RTO.
- Queue limit: a message that would wait longer than queue_pkts full-size packets take to serialise is
  treated as a lost tail (recovered as a loss) - drop-tail, roughly.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Callable
from typing import Any

import numpy as np

from testbed import wire
from testbed.faults import RTO_MAX_S, AckClock, loss_recovery_s, probe_timeout_s, retransmit_until
from testbed.schedule import LinkState, TraceServer, merge_intervals
from testbed.sim.engine import EventLoop
from testbed.spec import Scenario

SEGMENT_BYTES = wire.MSS + wire.HEADER_BYTES  # a full packet on the wire
ETH_BYTES = 14  # of wire.HEADER_BYTES per segment: not part of the IP packet a capacity trace carries


def _rate(bw_mbps: float | None) -> tuple[float, float]:
    """(byte time s, token bucket depth s) of a link of bw_mbps (0, 0 when unshaped): wire.link_burst_bytes."""
    if not bw_mbps:
        return 0.0, 0.0
    bt = 8.0 / (bw_mbps * 1e6)
    return bt, wire.link_burst_bytes(bw_mbps) * bt


NOISE_BLOCK = 8192  # jitter draws per seed taken from a link's random stream
NOISE_CHUNK = 256  # of which this many are held at a time


class LinkDir:
    """One direction of one link."""

    __slots__ = (
        "name",
        "byte_time",
        "delay",
        "jitter",
        "loss",
        "max_backlog",
        "free_at",
        "burst",
        "rng",
        "_noise",
        "_k",
        "_gen",
        "_left",
        "users",
        "steps",
        "step_times",
        "trace",
        "queue_pkts",
    )

    def __init__(
        self,
        name: str,
        bw_mbps: float | None,
        delay_ms: float,
        jitter_ms: float,
        loss_pct: float,
        queue_pkts: int,
        rng: random.Random,
    ):
        self.name = name
        self.byte_time, self.burst = _rate(bw_mbps)  # the burst: the bucket's credit after idle, in seconds
        self.delay = delay_ms / 1e3
        self.jitter = jitter_ms / 1e3
        self.loss = loss_pct / 100.0
        self.max_backlog = queue_pkts * SEGMENT_BYTES * self.byte_time
        self.free_at = -math.inf  # idle since long before the run: its bucket is full
        self.rng = rng
        self._noise: list[float] = []
        self._k = 0
        self._gen: np.random.Generator | None = None  # the current block's generator
        self._left = 0  # draws left in the current block
        self.users = 0  # paths crossing this link direction
        self.queue_pkts = queue_pkts
        self.steps: list[LinkState] | None = None  # scheduled: the state from each of step_times on
        self.step_times: list[float] = []
        self.trace: TraceServer | None = None  # scheduled: capacity from a delivery-opportunity trace

    def _step(self, t: float) -> LinkState:
        """The scheduled state in force at t (self.steps is set)."""
        assert self.steps is not None
        k = bisect.bisect_right(self.step_times, t) - 1
        return self.steps[k if k > 0 else 0]

    def state_at(self, t: float) -> tuple[float, float, float, float]:
        """(delay s, jitter s, loss probability, byte time s) in force at t."""
        if self.steps is None:
            return self.delay, self.jitter, self.loss, self.byte_time
        st = self._step(t)
        return st.delay_ms / 1e3, st.jitter_ms / 1e3, st.loss_pct / 100.0, _rate(st.bw_mbps)[0]

    def rate_at(self, t: float) -> tuple[float, float]:
        """(byte time s, token bucket depth s) in force at t."""
        if self.steps is None:
            return self.byte_time, self.burst
        return _rate(self._step(t).bw_mbps)

    def jitter_draw(self, std: float) -> float:
        """A jitter sample scaled to `std` (the link's own stream of normal draws, as jitter_sample)."""
        if self.jitter:
            return self.jitter_sample() * (std / self.jitter)
        k = self._k
        if k >= len(self._noise):
            self._refill(1.0)
            k = 0
        self._k = k + 1
        return self._noise[k] * std

    def jitter_sample(self) -> float:
        """Next normal(0, jitter) sample; drawn in blocks from the link's own seeded generator."""
        k = self._k
        if k >= len(self._noise):
            self._refill(self.jitter)
            k = 0
        self._k = k + 1
        return self._noise[k]

    def _refill(self, std: float) -> None:
        """The next NOISE_CHUNK normal draws. A block of NOISE_BLOCK draws comes from one generator seeded from the
        link's stream; it is drawn NOISE_CHUNK at a time (the same values as at once), so 1,000 jittered edges
        hold 256 floats each, not 8,192."""
        if self._left <= 0:
            self._gen = np.random.default_rng(self.rng.getrandbits(64))
            self._left = NOISE_BLOCK
        n = min(NOISE_CHUNK, self._left)
        self._left -= n
        gen = self._gen
        assert gen is not None
        self._noise = gen.normal(0.0, std, n).tolist()


class Path:
    """The link directions from one node to another: one flow, with its retransmission timeout."""

    __slots__ = (
        "hops",
        "lossy",
        "last_arrival",
        "stops",
        "sched",
        "down",
        "stalled_until",
        "next_stop",
        "acks",
        "rev",
        "lost_wait",
        "tail",
        "watch",
    )

    def __init__(self, hops: list[LinkDir], down: tuple[tuple[float, float], ...] = ()):
        self.hops = hops
        self.last_arrival = 0.0
        self.sched = any(h.steps is not None or h.trace is not None for h in hops) or bool(down)
        self.lossy = any(h.loss > 0.0 for h in hops) or any(
            st.loss_pct > 0.0 for h in hops if h.steps is not None for st in h.steps
        )
        # the sending connection's RTT estimator (faults rule 1), on paths that can lose or stall a message
        self.acks: AckClock | None = AckClock(self.one_way) if self.sched or self.lossy else None
        self.rev: Path | None = None  # the reverse path (its sends carry this path's ACKs), set by SimNetwork
        self.lost_wait = 0.0  # the message being computed: time spent recovering losses (not an RTT sample)
        self.tail = 0.0  # the message being computed: when its last byte reaches the next stop (cross() moves it)
        self.watch: Any = None  # testbed.sim.faults Sent / Heard: a draft's view of its target (faults rule 2)
        self.down = down  # outages of the path (union over its links), sorted
        self.stalled_until = 0.0  # the connection retransmits until then (faults rule 1)
        # hops (after the first) entered in an event of their own: shared by several paths and rate-limited
        self.stops = [
            i
            for i, h in enumerate(hops)
            if i > 0 and h.users > 1 and (h.byte_time > 0.0 or h.trace is not None or h.steps is not None)
        ]
        # next_stop[i]: where a message that entered hop i stops next (the next stop, or the end of the path)
        self.next_stop = [next((s for s in self.stops if s > i), len(hops)) for i in range(len(hops) + 1)]

    def is_down(self, t: float) -> bool:
        for a, b in self.down:
            if a <= t < b:
                return True
        return False

    def send(self, loop: EventLoop, t: float, payload: int, handler: Callable[[Any], None], arg: Any) -> None:
        """Send `payload` application bytes at time t (= loop.now); handler(arg) runs when it has arrived."""
        nbytes = wire.wire_bytes(payload)
        if self.watch is not None:
            handler, arg = self.watch.wrap(t, handler, arg)
        rev = self.rev
        if rev is not None and rev.acks is not None:
            rev.acks.receiver_sends(t)  # the ACK of what came the other way rides on this message
        if self.sched:
            self.send_sched(loop, t, nbytes, handler, arg)
        elif not self.stops:
            self.lost_wait = 0.0
            a = self.arrive(self.transfer(t, nbytes))
            if self.acks is not None:
                self.acks.arrived(t + self.lost_wait, a, -(-nbytes // SEGMENT_BYTES))
            loop.at(a, handler, arg)
        else:
            Transit(self, nbytes, handler, arg).start(loop, t)

    def transfer(self, t: float, nbytes: int) -> float:
        """When the last byte of a message of nbytes wire bytes that enters the path at t reaches its end, every hop
        computed now (no stops at shared hops: exact where no other path's message comes between)."""
        self.tail = t
        self.cross(t, nbytes, 0, len(self.hops))
        return self.tail

    def one_way(self, t: float) -> float:
        """The path's propagation delay in force at t (an ACK's crossing)."""
        return sum(h.state_at(t)[0] for h in self.hops)

    def recover(self, h: LinkDir, loss: float, nbytes: int) -> float:
        """Faults rule 1, loss: the delay a message of nbytes suffers on hop h (0 when no segment is lost)."""
        segs = -(-nbytes // SEGMENT_BYTES)
        p_msg = 1.0 - (1.0 - loss) ** segs
        if h.rng.random() >= p_msg:
            return 0.0
        assert self.acks is not None
        est = self.acks.est
        tail = segs == 1 or h.rng.random() * segs >= segs - 1  # which segment was lost: the last one 1 in segs
        wait = loss_recovery_s(est, tail, segs == 1)
        rto = est.rto()
        while h.rng.random() < loss:  # the retransmission lost too: the RTO, doubling
            wait += rto
            rto = min(2.0 * rto, RTO_MAX_S)
        self.lost_wait += wait
        return wait

    def cross(self, t: float, nbytes: int, i: int, j: int) -> float:
        """A message whose first packet enters hop i at t and whose last byte is there at self.tail: the time its first
        packet reaches the node after hop j-1 (returned) and its last byte (self.tail, updated).

        Packets are forwarded one by one, as the emulated network does: at a rate-limited hop the message starts
        when its first packet is there and the link is free, less the token bucket's credit (wire.link_burst_bytes),
        its last byte leaves after all of it has crossed at the rate and never before it arrived; its first packet
        goes on as soon as it has crossed. (Summing every hop's serialisation of the whole message would charge a
        path of two 2 Mbit/s links twice the time a real one takes.)"""
        hops = self.hops
        for k in range(i, j):
            h = hops[k]
            if h.byte_time:  # drop-tail only where losses are recovered (the path has an ACK clock)
                t = self._serve(h, t, nbytes, h.byte_time, h.burst, h.max_backlog if self.lossy else math.inf)
            if h.loss:
                self.tail += self.recover(h, h.loss, nbytes)
            if h.jitter:
                k = h._k  # jitter_sample(), inlined: the hottest line of a jittered link
                if k < len(h._noise):
                    h._k = k + 1
                    d = h.delay + h._noise[k]
                else:
                    d = h.delay + h.jitter_sample()
                if d > 0.0:
                    t += d
                    self.tail += d
            else:
                t += h.delay
                self.tail += h.delay
        return t

    def _serve(self, h: LinkDir, t: float, nbytes: int, bt: float, burst: float, backlog: float) -> float:
        """A rate-limited hop (cross, cross_sched): the message's first packet is there at t, its last byte at
        self.tail. It starts when the link is free, less the bucket's credit, and all of it crosses at the rate;
        returns when the first packet has crossed, self.tail when the last byte has (never before it arrived)."""
        if h.free_at - t > backlog:  # the queue is full: the message's tail is lost and recovered
            w = self.drop_tail(nbytes)
            t += w
            self.tail += w
        e = t - burst
        if h.free_at > e:
            e = h.free_at
        done = e + nbytes * bt
        h.free_at = done
        if done > self.tail:
            self.tail = done
        e += (nbytes if nbytes < SEGMENT_BYTES else SEGMENT_BYTES) * bt
        return e if e > t else t

    def send_sched(self, loop: EventLoop, t: float, nbytes: int, handler: Callable[[Any], None], arg: Any) -> None:
        """A path with a schedule: outages first (faults rule 1), then hop by hop at the times in force."""
        if self.down:
            if t < self.stalled_until:  # the connection is retransmitting: queued behind it
                loop.at(self.stalled_until, _deferred, (self, loop, nbytes, handler, arg))
                return
            if self.is_down(t):
                assert self.acks is not None
                rto = self.acks.rto(t)
                alone = nbytes <= SEGMENT_BYTES
                through = retransmit_until(t, rto, self.is_down, probe_timeout_s(self.acks.est, alone))
                # the retransmission is one segment and the window one after an RTO: the rest of the connection's
                # data follows its ACK, a round trip later (faults rule 1)
                rtt = self.one_way(through) + (self.rev.one_way(through) if self.rev is not None else 0.0)
                self.stalled_until = through + rtt
                loop.at(through if alone else self.stalled_until, _deferred, (self, loop, nbytes, handler, arg))
                return
        Transit(self, nbytes, handler, arg).start(loop, t)

    def drop_tail(self, nbytes: int) -> float:
        """A message that finds the queue full: its tail is lost and recovered (faults rule 1, loss)."""
        assert self.acks is not None
        wait = loss_recovery_s(self.acks.est, True, nbytes <= SEGMENT_BYTES)
        self.lost_wait += wait
        return wait

    def cross_sched(self, t: float, nbytes: int, i: int, j: int, t0: float) -> float:
        """As cross(), with each hop's delay / jitter / loss in force at t0 (the message entered the path) and
        its rate or capacity trace at the time the message reaches it."""
        hops = self.hops
        for k in range(i, j):
            h = hops[k]
            delay, jitter, loss, bt = h.state_at(t0)
            if h.trace is not None:
                segs = -(-nbytes // SEGMENT_BYTES)
                done = h.trace.depart(t, nbytes - segs * ETH_BYTES)
                if done > self.tail:
                    self.tail = done
            elif bt:
                bt, burst = h.rate_at(t)
                t = self._serve(h, t, nbytes, bt, burst, h.queue_pkts * SEGMENT_BYTES * bt)
            if loss:
                self.tail += self.recover(h, loss, nbytes)
            d = delay + h.jitter_draw(jitter) if jitter else delay
            if d > 0.0:
                t += d
                self.tail += d
        return t

    def arrive(self, t: float) -> float:
        """No reordering within the flow."""
        if t < self.last_arrival:
            t = self.last_arrival
        self.last_arrival = t
        return t


def _deferred(arg: tuple[Path, EventLoop, int, Callable[[Any], None], Any]) -> None:
    """A message that waited for the connection's retransmission (faults rule 1) now enters the path."""
    path, loop, nbytes, handler, arg2 = arg
    Transit(path, nbytes, handler, arg2).start(loop, loop.now)


class Transit:
    """A message on its way along a path with shared rate-limited hops: one event per such hop."""

    __slots__ = ("path", "nbytes", "handler", "arg", "i", "loop", "t0", "lost", "tail")

    def __init__(self, path: Path, nbytes: int, handler: Callable[[Any], None], arg: Any):
        self.path = path
        self.nbytes = nbytes
        self.handler = handler
        self.arg = arg
        self.i = 0

    def start(self, loop: EventLoop, t: float) -> None:
        self.loop = loop
        self.t0 = t
        self.lost = 0.0
        self.tail = t
        self._advance(t)

    def resume(self, _: object) -> None:
        self._advance(self.loop.now)

    def _advance(self, t: float) -> None:
        path = self.path
        nxt = path.next_stop[self.i]
        path.lost_wait = 0.0
        path.tail = self.tail
        t = (
            path.cross_sched(t, self.nbytes, self.i, nxt, self.t0)
            if path.sched
            else path.cross(t, self.nbytes, self.i, nxt)
        )
        self.tail = path.tail
        self.lost += path.lost_wait
        self.i = nxt
        if nxt == len(path.hops):
            a = path.arrive(self.tail)
            if path.acks is not None:  # an RTT sample from the (re)transmission that got through
                path.acks.arrived(self.t0 + self.lost, a, -(-self.nbytes // SEGMENT_BYTES))
            self.loop.at(a, self.handler, self.arg)
        else:
            self.loop.at(t, self.resume)


def idle_transfer_s(scenario: Scenario, src: str, dst: str, nbytes: int) -> float:
    """The simulator's time for a message of nbytes wire bytes from src to dst on idle links (its last byte's
    arrival): what the emulated network is measured against (bench/bench_net.py, tests/test_net.py)."""
    return SimNetwork(scenario, scenario.spec.seed).path(src, dst).transfer(0.0, nbytes)


class SimNetwork:
    """All link directions of a scenario and the paths between its drafts and targets."""

    def __init__(self, scenario: Scenario, seed: int):
        self.dirs: dict[tuple[int, bool], LinkDir] = {}
        for i, l in enumerate(scenario.links):
            for fwd in (True, False):
                a, b = (l.a, l.b) if fwd else (l.b, l.a)
                self.dirs[(i, fwd)] = LinkDir(
                    f"{a}->{b}",
                    l.bw_mbps,
                    l.delay_ms,
                    l.jitter_ms,
                    l.loss_pct,
                    l.queue_pkts,
                    random.Random(seed * 1_000_003 + 2 * i + fwd),
                )
        for key, n in scenario.paths.hop_users().items():  # type: ignore[attr-defined]  # a PathTable
            self.dirs[key].users = n
        sched = scenario.schedule
        for (i, fwd), d in self.dirs.items():
            if i in sched.steps:
                d.step_times = [t for t, _ in sched.steps[i]]
                d.steps = [st for _, st in sched.steps[i]]
            if (i, fwd) in sched.traces:
                d.trace = TraceServer(sched.traces[(i, fwd)])
        self._hops = scenario.paths
        self._down = sched.down
        self.paths: dict[tuple[str, str], Path] = {}  # built when a pair first carries a message

    def path(self, src: str, dst: str) -> Path:
        p = self.paths.get((src, dst))
        if p is None:
            hops = self._hops[(src, dst)]
            p = self.paths[(src, dst)] = Path(
                [self.dirs[(h.link, h.forward)] for h in hops], path_outages(self._down, hops)
            )
            if p.acks is not None and (dst, src) in self._hops:  # the reverse path carries its ACKs
                p.rev = self.path(dst, src)
                p.rev.rev = p
        return p


def path_outages(down: dict[int, tuple[tuple[float, float], ...]], hops) -> tuple[tuple[float, float], ...]:
    """The intervals during which some link of the path is down, merged and sorted."""
    return merge_intervals(iv for h in hops for iv in down.get(h.link, ()))
