"""Simulated drafts and targets: one handler per event kind.

Request path (distributed mode):
    arrival at edge -> route -> PREFILL up the path -> target queue -> prefill batch -> PREFILL_DONE down
    -> [round: wait for a draft slot -> draft gamma tokens -> VERIFY up -> target queue -> verify batch
        -> VERIFY_RESULT down] until the output length is reached.
In `fused` and `autoregressive` modes the rounds run at the target (a co-located drafter with the target's
compute profile and no per-round network hop); the edge receives the first token and the finished output
over the network.
"""

from __future__ import annotations

from typing import Any

from testbed import wire
from testbed.compute import ComputeModel
from testbed.policies.batching import PREFILL, Batcher, Job, verify_cost_inputs, verify_job
from testbed.policies.routing import Router
from testbed.policies.window import RoundFeedback
from testbed.rounds import DraftSlots, RequestProgress, request_row, round_row, verify
from testbed.sim.engine import EventLoop
from testbed.sim.network import Path
from testbed.tables import batch_row

PREFILL_DONE_BYTES = wire.payload_bytes("PREFILL_DONE", 1)
RESULT_BYTES = wire.payload_bytes("VERIFY_RESULT", 1)
RELEASE_BYTES = wire.payload_bytes("RELEASE")
DONE_BYTES = wire.payload_bytes("DONE")
LOCAL = Path([])  # co-located draft and target: no network between them
# The target's receive rule (README, "The simulator"): a message that finds the target idle wakes it, and the target
# takes in every message that arrives within RECV_GATHER_S of that one before it forms a batch, as the target node
# reads every message already in its socket first (nodes/target.py, run loop). Packets that reach the target back to
# back are one receive: those a cellular delivery opportunity releases together arrive 1-2 us apart (serialised on
# the 1 Gbit/s switch -> cloud link; 12 us per VERIFY at 100 Mbit/s). 50 us, not the emulated node's wake-up (0.14-0.19
# ms median on the shared 2-core host): the simulated drafts have no timer noise, so VERIFYs of different edges
# (results of one batch, drafted for the same time) arrive mostly 0.05-0.2 ms apart, and a 0.2 ms window merged them
# (flaky-wan: mean batch 7 % above the emulated one); the emulated nodes' timers spread them apart.
RECV_GATHER_S = 50e-6


class SimRequest:
    __slots__ = (
        "rid",
        "edge",
        "target",
        "drafter",
        "prog",
        "runs",
        "up",
        "down",
        "round_up",
        "round_down",
        "arrival",
        "prefill_sent",
        "first_token",
        "finish",
        "gamma",
        "accepted_now",
        "draft_start",
        "send",
        "target_recv",
        "batch_start",
        "batch_end",
        "batch_size",
        "qdepth",
        "gen",
        "round_gen",
        "draft_epoch",
        "target_epoch",
        "target_gen",
        "sends",
    )

    def __init__(
        self,
        rid: int,
        edge: "SimDraft",
        target: "SimTarget",
        arrival: float,
        prog: RequestProgress,
        runs: list[int],
        up: Path,
        down: Path,
    ):
        self.rid = rid
        self.edge = edge
        self.target = target
        self.arrival = arrival
        self.prog = prog
        self.runs = runs
        self.up = up
        self.down = down
        colocated = target.drafter
        if colocated is not None:
            self.drafter: SimDraft = colocated
            self.round_up = self.round_down = LOCAL
        else:
            self.drafter = edge
            self.round_up, self.round_down = up, down
        self.prefill_sent = self.first_token = self.finish = float("nan")
        self.gamma = self.accepted_now = self.batch_size = self.qdepth = 0
        self.draft_start = self.send = self.target_recv = self.batch_start = self.batch_end = 0.0
        # faults (testbed/sim/faults.py): messages of an older generation are stale (the request was re-routed
        # or failed since); the epochs say which life of the draft / target a round or prefill belongs to
        self.gen = self.round_gen = self.draft_epoch = self.target_epoch = self.target_gen = self.sends = 0


class Recorder:
    """Row tuples in the column order of testbed.tables."""

    __slots__ = ("requests", "rounds", "batches", "completed", "active", "events", "rerouted", "failed")

    def __init__(self) -> None:
        self.requests: list[tuple] = []
        self.rounds: list[tuple] = []
        self.batches: list[tuple] = []
        self.completed = 0
        self.active: dict[int, SimRequest] = {}  # arrived, not finished
        self.events: list[tuple] = []  # testbed.tables.EVENT_COLUMNS (scheduled runs)
        self.rerouted = 0
        self.failed = 0


class SimDraft:
    """A drafting executor: an edge device (distributed mode) or the drafter co-located with a target."""

    __slots__ = (
        "name",
        "code",
        "loop",
        "compute",
        "slots",
        "router",
        "depth",
        "own_active",
        "rec",
        "local",
        "observes",
        "topk",
        "faults",
    )

    def __init__(
        self,
        name: str,
        code: int,
        loop: EventLoop,
        compute: ComputeModel,
        slots: int,
        router: Router | None,
        rec: Recorder,
        local: bool,
        observes: bool,
    ):
        self.name = name
        self.code = code  # index into the run's node-name list (table output)
        self.loop = loop
        self.compute = compute
        self.slots = DraftSlots(slots)
        self.router = router
        self.depth: dict[str, int] = {}  # queue depth each target reported last
        self.own_active: dict[str, int] = {}
        self.rec = rec
        self.local = local  # rounds run next to the target (fused / autoregressive)
        self.observes = observes
        self.topk = 0  # draft probabilities per drafted token on the wire (sampling mode), set by the builder
        self.faults: Any = None  # testbed.sim.faults.DraftFaults when the schedule crashes nodes or cuts paths

    # -- request start (at the edge) ------------------------------------------------------------------
    def route(self) -> str:
        """Choose the target of a new request and count it as active there."""
        assert self.router is not None, "a co-located drafter does not route"
        name = self.router.choose(self.depth, self.own_active)
        assert name is not None
        self.own_active[name] = self.own_active.get(name, 0) + 1
        return name

    def send_prefill(self, req: SimRequest) -> None:
        now = self.loop.now
        if req.prefill_sent != req.prefill_sent:  # NaN: the first prefill (a re-routed request sends another)
            req.prefill_sent = now
        nbytes = wire.payload_bytes("PREFILL", req.prog.context())
        if self.faults is None:
            req.up.send(self.loop, now, nbytes, req.target.on_prefill, req)
        else:
            self.faults.send(req, req.up, nbytes, req.target.on_prefill)

    # -- rounds (at the drafter) -----------------------------------------------------------------------
    def on_first_token(self, req: SimRequest) -> None:
        if not self.local:
            if req.first_token != req.first_token:  # NaN: TTFT ends at the first prefill's token only
                req.first_token = self.loop.now
            self.depth[req.target.name] = req.qdepth
        if req.prog.first_token():
            self.finish(req)
        else:
            self.start_round(req)

    def start_round(self, req: SimRequest) -> None:
        loop = self.loop
        if self.faults is not None:
            self.faults.round_started(req)
        gamma = req.prog.next_gamma()
        req.gamma = gamma
        if gamma == 0:
            req.draft_start = loop.now
            self.send_verify(req)
        elif self.slots.acquire(req):
            self.begin_draft(req)

    def begin_draft(self, req: SimRequest) -> None:
        loop = self.loop
        req.draft_start = loop.now
        loop.at(
            loop.now + self.compute.draft_time(req.gamma, req.prog.context(), req.prog.produced), self.on_drafted, req
        )

    def on_drafted(self, req: SimRequest) -> None:
        if self.faults is not None and not self.faults.drafted(req):
            return
        nxt = self.slots.release() if self.faults is None else self.slots.release(self.faults.slot_usable)
        if nxt is not None:
            self.begin_draft(nxt)
        self.send_verify(req)

    def send_verify(self, req: SimRequest) -> None:
        now = self.loop.now
        req.send = now
        if self.local:  # co-located: the job joins the target's queue at once
            req.target.on_verify(req)
        elif self.faults is not None:
            if self.faults.round_is_stale(req):
                return
            self.faults.send(
                req, req.round_up, wire.payload_bytes("VERIFY", req.gamma, self.topk), req.target.on_verify
            )
        else:
            req.round_up.send(
                self.loop, now, wire.payload_bytes("VERIFY", req.gamma, self.topk), req.target.on_verify, req
            )

    def on_result(self, req: SimRequest) -> None:
        now = self.loop.now
        gamma, acc = req.gamma, req.accepted_now
        prog = req.prog
        self.rec.rounds.append(
            round_row(
                prog,
                req.edge.code,
                req.target.code,
                gamma,
                acc,
                req.draft_start,
                req.send,
                req.target_recv,
                req.batch_start,
                req.batch_end,
                now,
                req.batch_size,
                req.qdepth,
            )
        )
        if not self.local:
            self.depth[req.target.name] = req.qdepth
        fb = (
            RoundFeedback.of_round(
                gamma, acc, req.draft_start, req.send, req.batch_start, req.batch_end, now, req.qdepth
            )
            if self.observes
            else None
        )
        if prog.apply(gamma, acc, fb):
            self.finish(req)
        else:
            self.start_round(req)

    def finish(self, req: SimRequest) -> None:
        """The request has all its tokens: at the edge (distributed), or at the target (co-located: the DONE
        message still has to reach the edge, whose arrival is the finish time)."""
        loop = self.loop
        if self.local:
            req.down.send(loop, loop.now, DONE_BYTES, req.edge.on_done, req)
        else:
            req.up.send(loop, loop.now, RELEASE_BYTES, _noop, None)  # occupies the link; nothing waits for it
            req.edge.on_done(req)

    def on_done(self, req: SimRequest) -> None:
        req.finish = self.loop.now
        tname = req.target.name
        self.own_active[tname] -= 1
        if self.faults is not None:
            req.gen += 1  # anything still in flight for it is stale
        self.rec.requests.append(
            request_row(req.prog, self.name, tname, req.arrival, req.prefill_sent, req.first_token, req.finish, "ok")
        )
        self.rec.completed += 1
        del self.rec.active[req.rid]
        req.runs = []

    def on_first_token_at_edge(self, req: SimRequest) -> None:
        """Co-located modes: the first token reached the edge (the rounds already run at the target)."""
        req.first_token = self.loop.now
        self.depth[req.target.name] = req.qdepth


def _noop(_: object) -> None:
    pass


class SimTarget:
    """A verifier: one queue, one batch executing at a time."""

    __slots__ = (
        "name",
        "code",
        "loop",
        "compute",
        "batcher",
        "queue",
        "busy",
        "wake_at",
        "rec",
        "drafter",
        "epoch",
        "faults",
        "waking",
    )

    def __init__(
        self,
        name: str,
        code: int,
        loop: EventLoop,
        compute: ComputeModel,
        batcher: Batcher,
        rec: Recorder,
        drafter: SimDraft | None,
    ):
        self.name = name
        self.code = code
        self.loop = loop
        self.compute = compute
        self.batcher = batcher
        self.queue: list[Job] = []
        self.busy = False
        self.wake_at = -1.0
        self.rec = rec
        self.drafter = drafter  # the co-located drafter in fused / autoregressive modes
        self.epoch = 0  # lives of the process: a crash starts a new one (testbed/sim/faults.py)
        self.faults: Any = None  # testbed.sim.faults.TargetFaults when the schedule crashes nodes or cuts paths
        self.waking = False  # an idle target is taking in messages (RECV_GATHER_S) before it forms a batch

    def on_prefill(self, req: SimRequest) -> None:
        if self.faults is not None and not self.faults.accept_prefill(req):
            return
        self.queue.append(Job(PREFILL, req.prog.context(), 0, self.loop.now, req))
        if not self.busy:
            self.wake()

    def on_verify(self, req: SimRequest) -> None:
        if self.faults is not None and not self.faults.accept_verify(req):
            return
        now = self.loop.now
        req.target_recv = now
        self.queue.append(verify_job(req.gamma, req.prog.context(), now, req))
        if not self.busy:
            if req.drafter.local:  # a co-located drafter's job: no message to receive
                self.try_start()
            else:
                self.wake()

    def wake(self) -> None:
        """A message found the target idle: it forms a batch after taking in what arrives within RECV_GATHER_S."""
        if not self.waking:
            self.waking = True
            self.loop.at(self.loop.now + RECV_GATHER_S, self.on_wake, self.epoch)

    def on_wake(self, epoch: int) -> None:
        if epoch != self.epoch:  # the process that was woken crashed meanwhile
            return
        self.waking = False
        self.try_start()

    def try_start(self, _: object = None) -> None:
        if self.busy:
            return
        loop = self.loop
        batch, wake = self.batcher.form(self.queue, loop.now)
        if batch is None:
            if wake is not None and wake != self.wake_at:
                self.wake_at = wake
                loop.at(wake, self.try_start)
            return
        self.busy = True
        if batch[0].kind == PREFILL:
            dur = self.compute.prefill_time([j.tokens for j in batch])
        else:
            dur = self.compute.verify_time(*verify_cost_inputs(batch))
        loop.at(loop.now + dur, self.on_batch_done, (batch, loop.now, self.epoch))

    def on_batch_done(self, arg: tuple[list[Job], float, int]) -> None:
        """Replies go out; co-located rounds apply their results at once (their next decode steps join the
        queue, as in a continuous-batching server); then the next batch forms from everything queued."""
        batch, start, epoch = arg
        if epoch != self.epoch:  # the process that ran it crashed meanwhile
            return
        loop = self.loop
        now = loop.now
        depth = len(self.queue)
        n = len(batch)
        tokens = 0
        if batch[0].kind == PREFILL:
            for j in batch:
                req: SimRequest = j.ref
                tokens += j.tokens
                if self.faults is not None and self.faults.stale(req):
                    continue
                req.qdepth = depth
                if self.drafter is not None:
                    req.down.send(loop, now, PREFILL_DONE_BYTES, req.edge.on_first_token_at_edge, req)
                    self.drafter.on_first_token(req)
                elif self.faults is not None:
                    self.faults.reply(req, req.down, PREFILL_DONE_BYTES, req.edge.on_first_token)
                else:
                    req.down.send(loop, now, PREFILL_DONE_BYTES, req.edge.on_first_token, req)
            self.rec.batches.append(
                batch_row(target=self.code, kind=0, start_s=start, end_s=now, size=n, tokens=tokens)
            )
        else:
            for j in batch:
                req = j.ref
                tokens += j.tokens
                if self.faults is not None and self.faults.stale(req):
                    continue
                req.accepted_now = verify(req.runs, req.prog.produced, req.gamma)
                req.batch_start = start
                req.batch_end = now
                req.batch_size = n
                req.qdepth = depth
                d = req.drafter
                if d.local:
                    d.on_result(req)
                elif self.faults is not None:
                    self.faults.reply(req, req.round_down, RESULT_BYTES, d.on_result)
                else:
                    req.round_down.send(loop, now, RESULT_BYTES, d.on_result, req)
            self.rec.batches.append(
                batch_row(target=self.code, kind=1, start_s=start, end_s=now, size=n, tokens=tokens)
            )
        self.busy = False
        self.try_start()
