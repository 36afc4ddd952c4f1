"""Node faults in the simulator: crashes and restarts of drafts and targets, detection of a silent target,
re-routing, request timeouts - the rules of testbed/faults.py. Installed only when the schedule crashes a
node or takes a link down; otherwise the node models run without any of it (and without its cost).

Messages of a request carry its generation: a re-route or a failure starts a new one, and whatever of an
older generation is still in flight is dropped on arrival (a real draft ignores replies for a request it
moved elsewhere). Targets and drafts count their lives (epochs): a batch or a draft computation started
before a crash does nothing when it ends.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from testbed import wire
from testbed.faults import peer_timeout_s
from testbed.rounds import request_row
from testbed.schedule import merge_intervals
from testbed.sim.engine import EventLoop
from testbed.sim.network import Path, SimNetwork, path_outages
from testbed.sim.nodes import SimDraft, SimRequest, SimTarget
from testbed.spec import Scenario

ERROR_BYTES = wire.payload_bytes("VERIFY_RESULT", 0)  # a target's ERROR reply (unknown request) is about as big


def _guarded(arg: tuple[Callable[[SimRequest], None], SimRequest, int]) -> None:
    handler, req, gen = arg
    if req.gen == gen:
        handler(req)


class DraftFaults:
    __slots__ = ("draft", "loop", "rec", "targets", "net", "request_timeout", "dead", "down", "epoch")

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

    def reply(self, req: SimRequest, path: Path, nbytes: int, handler: Callable[[SimRequest], None]) -> None:
        path.send(self.loop, self.loop.now, nbytes, _guarded, (handler, req, req.target_gen))

    def crash(self, _: object = None) -> None:
        t = self.target
        self.down = True
        t.epoch += 1
        t.queue.clear()
        t.busy = False
        t.wake_at = -1.0

    def restart(self, _: object = None) -> None:
        self.down = False


def needs_faults(scenario: Scenario) -> bool:
    return bool(scenario.schedule.crashed or scenario.schedule.down)


def install(
    scenario: Scenario, loop: EventLoop, net: SimNetwork, drafts: list[SimDraft], targets: dict[str, SimTarget]
) -> None:
    """Attach the fault rules to the node models and schedule crashes, restarts and detections."""
    spec = scenario.spec
    sched = scenario.schedule
    if spec.run.mode != "distributed" and sched.crashed:
        from testbed.errors import InputError

        raise InputError(scenario.source, f"schedule: node crashes need run.mode distributed (not {spec.run.mode})")
    for d in drafts:
        d.faults = DraftFaults(d, loop, targets, net, spec.run.request_timeout_s)
    for t in targets.values():
        t.faults = TargetFaults(t, loop)
    by_name: dict[str, Any] = {d.name: d.faults for d in drafts} | {n: t.faults for n, t in targets.items()}
    for node, ivs in sched.crashed.items():
        f = by_name[node]
        for a, b in ivs:
            loop.at(a, f.crash)
            if b != float("inf"):
                loop.at(b, f.restart)
    # rule 2 / 3: a draft declares a target dead after peer_timeout of silence, alive when it is back
    p = peer_timeout_s(spec.run)
    for d in drafts:
        for tname in scenario.reachable[d.name]:
            ivs = list(sched.crashed.get(tname, ()))
            ivs += path_outages(sched.down, scenario.paths[(d.name, tname)] + scenario.paths[(tname, d.name)])
            for a, b in merge_intervals(ivs):
                if b - a > p:
                    loop.at(a + p, d.faults.target_dead, tname)  # type: ignore[arg-type]
                    if b != float("inf"):
                        loop.at(b, d.faults.target_alive, tname)  # type: ignore[arg-type]
