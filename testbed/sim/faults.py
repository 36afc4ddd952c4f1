"""Node faults in the simulator: crashes and restarts of drafts and targets, detection of a silent target,
re-routing, request timeouts - the rules of testbed/faults.py. Installed only when the schedule crashes a
node or takes a link down; otherwise the node models run without any of it (and without its cost).

Detection (rule 2) is the draft node's: per target, when the draft last sent to it and last heard from it (every
message arriving from it, heartbeat answers included, hooked on the paths: Path.watch); every housekeeping_s a tick
declares a target silent beyond peer_timeout dead and sends heartbeats to targets idle for heartbeat_s, which a live
target answers.

Messages of a request carry its generation: a re-route or a failure starts a new one, and whatever of an
older generation is still in flight is dropped on arrival (a real draft ignores replies for a request it
moved elsewhere). Targets and drafts count their lives (epochs): a batch or a draft computation started
before a crash does nothing when it ends.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from testbed import wire
from testbed.faults import heartbeat_s, housekeeping_s, peer_timeout_s
from testbed.rounds import request_row
from testbed.sim.engine import EventLoop
from testbed.sim.network import Path, SimNetwork
from testbed.sim.nodes import SimDraft, SimRequest, SimTarget
from testbed.spec import Scenario

ERROR_BYTES = wire.payload_bytes("VERIFY_RESULT", 0)  # a target's ERROR reply (unknown request) is about as big
HEARTBEAT_BYTES = wire.payload_bytes("HEARTBEAT")


def _noop(_: object) -> None:
    pass


class Peer:
    """A draft's view of one target (nodes/draft.py TargetLink): when it last sent to it, last heard from it."""

    __slots__ = ("faults", "name", "up", "down", "target", "last_sent", "last_heard")

    def __init__(self, faults: DraftFaults, name: str, up: Path, down: Path, target: TargetFaults):
        self.faults = faults
        self.name = name
        self.up = up
        self.down = down
        self.target = target
        self.last_sent = 0.0
        self.last_heard = 0.0


class Sent:
    """Path.watch of a draft -> target path: every message sent counts as sent to the target."""

    __slots__ = ("peer",)

    def __init__(self, peer: Peer):
        self.peer = peer

    def wrap(self, t: float, handler: Callable[[Any], None], arg: Any) -> tuple[Callable[[Any], None], Any]:
        self.peer.last_sent = t
        return handler, arg


class Heard:
    """Path.watch of a target -> draft path: the draft hears from the target when a message arrives."""

    __slots__ = ("peer",)

    def __init__(self, peer: Peer):
        self.peer = peer

    def wrap(self, t: float, handler: Callable[[Any], None], arg: Any) -> tuple[Callable[[Any], None], Any]:
        return _heard, (self.peer, handler, arg)


def _heard(arg: tuple[Peer, Callable[[Any], None], Any]) -> None:
    peer, handler, arg2 = arg
    f = peer.faults
    if not f.down:
        peer.last_heard = f.loop.now
        f.target_alive(peer.name)
    handler(arg2)


def _guarded(arg: tuple[Callable[[SimRequest], None], SimRequest, int]) -> None:
    handler, req, gen = arg
    if req.gen == gen:
        handler(req)


class DraftFaults:
    __slots__ = (
        "draft",
        "loop",
        "rec",
        "targets",
        "net",
        "request_timeout",
        "dead",
        "down",
        "epoch",
        "peers",
        "peer_timeout",
        "heartbeat",
        "every",
        "last_arrival",
    )

    def __init__(
        self, draft: SimDraft, loop: EventLoop, targets: dict[str, SimTarget], net: SimNetwork, request_timeout: float
    ):
        self.draft = draft
        self.loop = loop
        self.rec = draft.rec
        self.targets = targets
        self.net = net
        self.request_timeout = request_timeout
        self.dead: set[str] = set()  # targets this draft believes dead
        self.down = False
        self.epoch = 0
        self.peers: list[Peer] = []
        self.peer_timeout = self.heartbeat = self.every = 0.0
        self.last_arrival = 0.0  # of this draft's requests: it stops its housekeeping after that, once idle

    def tick(self, _: object = None) -> None:
        """Rule 2, as the draft node's housekeeping: silent targets are dead, idle ones get a heartbeat."""
        now = self.loop.now
        if not self.down:
            for p in self.peers:
                if now - p.last_heard > self.peer_timeout:
                    self.target_dead(p.name)
                if now - p.last_sent >= self.heartbeat:
                    p.up.send(self.loop, now, HEARTBEAT_BYTES, p.target.on_heartbeat, p)
        d = self.draft
        if now < self.last_arrival or any(r.edge is d for r in self.rec.active.values()):
            self.loop.at(now + self.every, self.tick)

    def event(self, kind: str, detail: str, t: float | None = None) -> None:
        now = self.loop.now
        self.rec.events.append((now if t is None else t, now, 0.0, kind, "", self.draft.name, detail))

    # -- messages --------------------------------------------------------------------------------------
    def send(self, req: SimRequest, path: Path, nbytes: int, handler: Callable[[SimRequest], None]) -> None:
        loop = self.loop
        req.sends += 1
        path.send(loop, loop.now, nbytes, _guarded, (handler, req, req.gen))
        loop.at(loop.now + self.request_timeout, self._timeout, (req, req.gen, req.sends))

    def _timeout(self, arg: tuple[SimRequest, int, int]) -> None:
        """Rule 5: no reply from the target for request_timeout_s since the last message."""
        req, gen, sends = arg
        if req.gen == gen and req.sends == sends and req.rid in self.rec.active:
            self.fail(req, "request_timeout")

    def round_started(self, req: SimRequest) -> None:
        req.round_gen = req.gen
        req.draft_epoch = self.epoch

    def drafted(self, req: SimRequest) -> bool:
        """False: the computation belongs to a life of the draft that crashed (its slots were reset)."""
        return req.draft_epoch == self.epoch

    def slot_usable(self, req: SimRequest) -> bool:
        """A round waiting for a draft slot that was not re-routed or failed meanwhile (as the draft node)."""
        return req.round_gen == req.gen

    def round_is_stale(self, req: SimRequest) -> bool:
        return req.round_gen != req.gen

    # -- rule 2 / 3: silence, re-routing ------------------------------------------------------------------
    def target_dead(self, tname: str) -> None:
        if self.down or tname in self.dead:
            return
        self.dead.add(tname)
        self.event("target_dead", tname)
        for req in [r for r in self.rec.active.values() if r.edge is self.draft and r.target.name == tname]:
            self.reroute(req, f"{tname} declared dead")

    def target_alive(self, tname: str) -> None:
        if tname in self.dead:
            self.dead.discard(tname)
            self.event("target_alive", tname)

    def route(self) -> str | None:
        d = self.draft
        assert d.router is not None
        name = d.router.choose(d.depth, d.own_active, self.dead)
        if name is not None:
            d.own_active[name] = d.own_active.get(name, 0) + 1
        return name

    def reroute(self, req: SimRequest, why: str) -> None:
        d = self.draft
        old = req.target.name
        d.own_active[old] -= 1
        name = self.route()
        if name is None:
            d.own_active[old] += 1
            self.fail(req, f"{why}; no reachable target alive")
            return
        req.gen += 1
        req.target = self.targets[name]
        req.up = req.round_up = self.net.path(d.name, name)
        req.down = req.round_down = self.net.path(name, d.name)
        self.rec.rerouted += 1
        self.event("reroute", f"request {req.rid}: {old} -> {name} ({why}) at {req.prog.produced} tokens")
        d.send_prefill(req)

    def on_error(self, req: SimRequest) -> None:
        """Rule 4: the target does not know the request (it restarted): prefill it again, anywhere alive."""
        self.reroute(req, f"{req.target.name} does not know it")

    def fail(self, req: SimRequest, why: str) -> None:
        d = self.draft
        req.gen += 1
        d.own_active[req.target.name] -= 1
        self.rec.requests.append(
            request_row(
                req.prog,
                d.name,
                req.target.name,
                req.arrival,
                req.prefill_sent,
                req.first_token,
                float("nan"),
                "failed",
            )
        )
        self.rec.failed += 1
        del self.rec.active[req.rid]
        req.runs = []
        self.event("fail", f"request {req.rid}: {why}")

    # -- rule 6: the draft itself ------------------------------------------------------------------------
    def crash(self, _: object = None) -> None:
        d = self.draft
        self.down = True
        self.epoch += 1
        d.slots.busy = 0
        d.slots.waiting.clear()
        for req in [r for r in self.rec.active.values() if r.edge is d]:
            self.fail(req, f"{d.name} crashed")
        self.dead.clear()
        d.depth.clear()

    def restart(self, _: object = None) -> None:
        self.down = False
        now = self.loop.now
        for p in self.peers:  # a new process: it greets its targets (HELLO) before taking requests
            p.last_heard = p.last_sent = now
        self.loop.at(now + self.every, self.tick)


class TargetFaults:
    __slots__ = ("target", "loop", "down")

    def __init__(self, target: SimTarget, loop: EventLoop):
        self.target = target
        self.loop = loop
        self.down = False

    def accept_prefill(self, req: SimRequest) -> bool:
        if self.down:
            return False
        req.target_epoch = self.target.epoch
        req.target_gen = req.gen  # the reply answers this generation (the request may fail meanwhile)
        return True

    def accept_verify(self, req: SimRequest) -> bool:
        if self.down:
            return False
        if req.target_epoch != self.target.epoch:  # prefilled in an earlier life: unknown now (rule 4)
            f = req.edge.faults
            req.round_down.send(self.loop, self.loop.now, ERROR_BYTES, _guarded, (f.on_error, req, req.gen))
            return False
        req.target_gen = req.gen
        return True

    def stale(self, req: SimRequest) -> bool:
        """A job of a request that failed or moved to another target since it was queued here."""
        return req.target is not self.target or req.target_gen != req.gen

    def on_heartbeat(self, peer: Peer) -> None:
        if not self.down:
            peer.down.send(self.loop, self.loop.now, HEARTBEAT_BYTES, _noop, None)

    def reply(self, req: SimRequest, path: Path, nbytes: int, handler: Callable[[SimRequest], None]) -> None:
        path.send(self.loop, self.loop.now, nbytes, _guarded, (handler, req, req.target_gen))

    def crash(self, _: object = None) -> None:
        t = self.target
        self.down = True
        t.epoch += 1
        t.queue.clear()
        t.busy = False
        t.wake_at = -1.0
        t.waking = False

    def restart(self, _: object = None) -> None:
        self.down = False


def needs_faults(scenario: Scenario) -> bool:
    return bool(scenario.schedule.crashed or scenario.schedule.down)


def install(
    scenario: Scenario,
    loop: EventLoop,
    net: SimNetwork,
    drafts: list[SimDraft],
    targets: dict[str, SimTarget],
    last_arrival: dict[str, float],
) -> None:
    """Attach the fault rules to the node models, schedule crashes and restarts, start each draft's housekeeping
    (rule 2; it runs until the draft's last arrival and then while it has requests)."""
    spec = scenario.spec
    sched = scenario.schedule
    if spec.run.mode != "distributed" and sched.crashed:
        from testbed.errors import InputError

        raise InputError(scenario.source, f"schedule: node crashes need run.mode distributed (not {spec.run.mode})")
    p = peer_timeout_s(spec.run)
    hb = heartbeat_s(p)
    for d in drafts:
        d.faults = DraftFaults(d, loop, targets, net, spec.run.request_timeout_s)
    for t in targets.values():
        t.faults = TargetFaults(t, loop)
    for d in drafts:
        f = d.faults
        f.peer_timeout, f.heartbeat, f.every = p, hb, housekeeping_s(hb)
        f.last_arrival = last_arrival.get(d.name, 0.0)
        for tname in scenario.reachable[d.name]:
            up, down = net.path(d.name, tname), net.path(tname, d.name)
            peer = Peer(f, tname, up, down, targets[tname].faults)
            up.watch, down.watch = Sent(peer), Heard(peer)
            f.peers.append(peer)
        # the node's housekeeping starts when its process does, not in step with the run's start: a phase per draft
        loop.at(f.every * random.Random(spec.seed * 7919 + d.code).random(), f.tick)
    by_name: dict[str, Any] = {d.name: d.faults for d in drafts} | {n: t.faults for n, t in targets.items()}
    for node, ivs in sched.crashed.items():
        f = by_name[node]
        for a, b in ivs:
            loop.at(a, f.crash)
            if b != float("inf"):
                loop.at(b, f.restart)
