"""Draft node: `python -m nodes.draft --spec S --node NAME --peers P --t0 T0 --out DIR`.

Replays its share of the workload (testbed.workload.build_workload of the same spec) in real time:
open-loop arrivals at T0 + arrival_s, many requests in flight. Per request: route (shared Router), PREFILL,
then rounds: gamma from the shared window policy (testbed.rounds.RequestProgress), wait for a draft slot
(node.draft_slots, 0 = unlimited; gamma = 0 needs none), draft for the backend's time, VERIFY, apply the
VERIFY_RESULT, until output_tokens are produced; then RELEASE. A backend that really computes (hf) drafts on
a worker thread (nodes.worker), so arrivals and results are served while a draft is computed.
Co-located modes (run.mode fused / autoregressive, as the simulator): the rounds run at the target; the
draft sends PREFILL, records the first token (PREFILL_DONE) and the finish (DONE, which carries the round
counts); the target writes the rounds table and frees the request itself.

Failures (the rules of testbed/faults.py): a request whose target has not answered for run.request_timeout_s
fails. A target silent beyond the peer timeout (heartbeats keep an idle connection alive) is declared dead and
its requests are re-routed to another live target (a new PREFILL of the prompt plus the tokens produced so far),
or fail when there is none; heartbeats go on, and a dead target that answers is alive again. A target that
answers 'unknown_request' (it restarted) gets the request re-routed at once; other ERRORs fail it. After the
last arrival + run.drain_timeout_s, or on SIGTERM, what is left is 'unfinished'.

Writes DIR/ready.json (after every target answered HELLO), DIR/progress.json (a few times a second), and
at the end DIR/requests.parquet, DIR/rounds.parquet (the simulator's schema) and DIR/node.json.
"""

from __future__ import annotations

import heapq
import json
import logging
import os
import sys
import time
from collections import Counter
from pathlib import Path

import zmq

from nodes import BadMessages, StartTime, StopFlag, setup, write_json
from nodes import protocol as P
from nodes.backends import DraftItem, load_backend
from nodes.clock import Lateness, monotonic, wait_readable
from nodes.worker import ComputeWorker
from testbed.policies.routing import Router
from testbed.policies.window import RoundFeedback, parse_window_policy
from testbed.faults import housekeeping_s
from testbed.files import write_parquet
from testbed.rounds import DraftSlots, RequestProgress, request_row, round_row
from testbed.tables import REQUEST_COLUMNS, ROUND_COLUMNS, frame, unstarted_request_row
from testbed.workload import build_workload

log = logging.getLogger("nodes.draft")

NAN = float("nan")
WAIT_SLOT, DRAFTING, WAIT_PREFILL, WAIT_VERIFY, WAIT_DONE = 1, 2, 3, 4, 5
WAITING = (WAIT_PREFILL, WAIT_VERIFY, WAIT_DONE)  # a message from the target is due


class Req:
    __slots__ = (
        "rid",
        "arrival",
        "prog",
        "target",
        "prefill_sent",
        "first_token",
        "status",
        "state",
        "gamma",
        "tokens",
        "topk",
        "probs",
        "draft_start",
        "send",
        "waiting_since",
        "finish",
    )

    def __init__(self, rid: int, arrival: float, prog: RequestProgress):
        self.rid = rid
        self.arrival = arrival  # seconds since T0 (the trace's arrival time)
        self.prog = prog
        self.target = ""
        self.prefill_sent = NAN
        self.first_token = NAN
        self.status = ""  # '' while active; ok | failed
        self.state = 0
        self.gamma = 0
        self.tokens = b""
        self.topk = 0
        self.probs: bytes | None = None  # sampling mode: gamma * topk (int32 id, float16 prob) entries
        self.draft_start = 0.0  # absolute monotonic
        self.send = 0.0  # absolute monotonic
        self.waiting_since = 0.0  # when the last message to the target was sent (timeout base)
        self.finish = NAN  # seconds since T0


def _active(req: Req) -> bool:
    return (
        not req.status and req.state == WAIT_SLOT
    )  # a request that failed while it waited for a draft slot gives its turn away


class TargetLink:
    __slots__ = ("name", "sock", "fd", "last_heard", "last_sent", "alive", "hello", "depth")

    def __init__(self, name: str, sock: zmq.Socket, now: float):
        self.name = name
        self.sock = sock
        self.fd = sock.getsockopt(zmq.FD)
        self.last_heard = now
        self.last_sent = now
        self.alive = True
        self.hello = False


class DraftNode:
    def __init__(self, args, scenario, peers: dict[str, str]):
        self.args = args
        self.name = args.node
        self.start = StartTime(args.t0)
        self.t0 = self.start.get()  # None until the orchestrator publishes T0
        self.out = Path(args.out)
        spec = scenario.spec
        node = scenario.node(self.name)
        if node.role != "draft":
            raise SystemExit(f"nodes.draft: node {self.name!r} is a {node.role}, not a draft")
        self.targets = tuple(scenario.reachable.get(self.name, ()))
        missing = [t for t in self.targets if t not in peers]
        if missing:
            raise SystemExit(f"nodes.draft: {args.peers} has no address for {', '.join(missing)}")
        self.peers = peers
        try:
            self.backend = load_backend(spec.models.backend).make_draft(scenario, self.name)
        except ValueError as e:
            raise SystemExit(f"nodes.draft: {e}")
        self.worker = ComputeWorker(self.name) if self.backend.blocking else None
        self.router = Router(spec.policy.routing, self.targets, spec.seed, self.name)
        self.policy = parse_window_policy(spec.policy.window)
        self.speculate = spec.run.mode != "autoregressive"
        self.colocated = spec.run.mode != "distributed"  # fused / autoregressive: rounds run at the target
        self.observes = self.policy.observes and self.speculate
        self.gamma_max = spec.policy.gamma_max
        self.slots = DraftSlots(node.draft_slots)
        self.request_timeout = spec.run.request_timeout_s
        self.peer_timeout = args.peer_timeout_s
        self.heartbeat = args.heartbeat_s

        wl = build_workload(scenario)
        idx = wl.for_edge(scenario.drafts.index(self.name))
        tr = wl.trace
        self.rids = tr.request_id[idx].tolist()
        self.arrivals = tr.arrival_s[idx].tolist()
        self.prompts = tr.prompt_tokens[idx].tolist()
        self.outputs = wl.output_tokens[idx].tolist()
        self.n = len(self.rids)
        self.last_arrival = float(tr.arrival_s.max()) if len(tr) else 0.0
        self.drain_timeout = spec.run.drain_timeout_s
        self.drain_deadline = float("inf") if self.t0 is None else self.t0 + self.last_arrival + self.drain_timeout
        self.next_i = 0
        # finished rows as they happen: what survives a SIGKILL (the schedule's draft crash, faults rule 6)
        self.journal = open(self.out / "journal.jsonl", "a", buffering=1)

        self.active: dict[int, Req] = {}
        self.finished: list[Req] = []
        self.depth: dict[str, int] = {}
        self.own_active: dict[str, int] = {t: 0 for t in self.targets}
        self.timers: list[tuple[float, int, Req]] = []
        self.seq = 0
        self.enc = P.Encoder()
        self.bad = BadMessages()
        self.msgs_in: Counter[str] = Counter()
        self.stale = 0
        self.fail_reasons: Counter[str] = Counter()
        self.lateness = Lateness()  # timers: arrivals and drafting ends
        self.rounds_rows: list[tuple] = []
        self.n_ok = self.n_failed = self.n_rerouted = 0
        self.events: list[tuple[float, str, str]] = []  # (s since T0, kind, detail): emu/events.parquet
        self.ready_at: float | None = None
        self.sent = 0
        self.send_dropped = 0

    # -- setup --------------------------------------------------------------------------------------------
    def connect(self) -> None:
        ctx = zmq.Context.instance()
        now = monotonic()
        self.links: dict[str, TargetLink] = {}
        for t in self.targets:
            s = ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.SNDHWM, 0)
            s.setsockopt(zmq.RCVHWM, 0)
            s.setsockopt(zmq.IDENTITY, self.name.encode())
            s.connect(self.peers[t])
            link = self.links[t] = TargetLink(t, s, now)
            self.send(link, self.enc.hello(self.name, self.heartbeat))
        self.by_fd = {link.fd: link for link in self.links.values()}
        log.info(
            "connecting to %s; %d requests, first at T0+%.3f s",
            ", ".join(self.targets) or "(none)",
            self.n,
            self.arrivals[0] if self.n else 0.0,
        )

    def send(self, link: TargetLink, data: bytes) -> bool:
        try:
            link.sock.send(data, zmq.NOBLOCK)
        except zmq.Again:
            self.send_dropped += 1
            return False
        link.last_sent = monotonic()
        self.sent += 1
        return True

    # -- main loop ----------------------------------------------------------------------------------------
    def run(self, stop: StopFlag) -> str:
        links = list(self.links.values())
        fds = [l.fd for l in links]
        EVENTS, POLLIN = zmq.EVENTS, zmq.POLLIN
        hk_every = housekeeping_s(self.heartbeat)
        next_hk = monotonic()
        while self.t0 is None:  # serve the targets' answers until the orchestrator publishes T0
            self.read_all(links)
            now = monotonic()
            if now >= next_hk:
                next_hk = now + hk_every
                self.housekeeping(now)
                if stop.stop:
                    return "signal"
                t0 = self.start.get()
                if t0 is not None:
                    self.t0 = t0
                    self.drain_deadline = t0 + self.last_arrival + self.drain_timeout
                    if self.ready_at is not None:
                        write_json(
                            self.out / "ready.json",
                            {"node": self.name, "pid": os.getpid(), "ready_s": self.ready_at - t0},
                        )
                    break
            if any(l.sock.getsockopt(EVENTS) & POLLIN for l in links):
                continue
            wait_readable(fds, next_hk)
        t0 = self.t0
        arrivals = self.arrivals
        timers = self.timers
        worker = self.worker
        if worker is not None:
            fds = fds + [worker.fd]
        while True:
            self.read_all(links)
            if worker is not None and worker.pending:
                self.collect_drafts()
            now = monotonic()
            while self.next_i < self.n and now >= t0 + arrivals[self.next_i]:
                self.lateness.add(now - (t0 + arrivals[self.next_i]))
                self.on_arrival(self.next_i, now)
                self.next_i += 1
                now = monotonic()
            while timers and timers[0][0] <= now:
                due, _, req = heapq.heappop(timers)
                self.lateness.add(now - due)
                self.on_drafted(req, now)
                now = monotonic()
            if now >= next_hk:
                next_hk = now + hk_every
                self.housekeeping(now)
                if stop.stop:
                    return "signal"
            if self.next_i >= self.n and not self.active:
                return "done"
            if now >= self.drain_deadline:
                return "drain_timeout"
            deadline = min(next_hk, self.drain_deadline)
            if self.next_i < self.n:
                deadline = min(deadline, t0 + arrivals[self.next_i])
            if timers:
                deadline = min(deadline, timers[0][0])
            if any(l.sock.getsockopt(EVENTS) & POLLIN for l in links):
                continue
            wait_readable(fds, deadline)

    # -- request life -------------------------------------------------------------------------------------
    def on_arrival(self, i: int, now: float) -> None:
        rid, prompt, out = self.rids[i], self.prompts[i], self.outputs[i]
        ctl = self.policy.controller(prompt, self.gamma_max)
        req = Req(rid, self.arrivals[i], RequestProgress(rid, prompt, out, ctl, self.gamma_max, self.speculate))
        self.active[rid] = req
        target = self.route()
        if target is None:
            self.fail(req, "no_live_target")
            return
        req.target = target
        self.own_active[target] += 1
        self.backend.start(rid, b"", out)
        data = self.enc.prefill(rid, out, self.backend.prompt(rid, prompt))
        req.state = WAIT_PREFILL
        now = monotonic()
        req.prefill_sent = now - self.t0
        req.waiting_since = now
        if not self.send(self.links[target], data):
            self.fail(req, "send_blocked")

    def route(self) -> str | None:
        links = self.links
        if all(links[t].alive for t in self.targets):
            return self.router.choose(self.depth, self.own_active) if self.targets else None
        alive = [t for t in self.targets if links[t].alive]
        if not alive:
            return None
        if self.router.kind == "jsq":
            depth = {t: (self.depth.get(t, 0) if links[t].alive else 1 << 40) for t in self.targets}
            return self.router.choose(depth, self.own_active)
        for _ in range(len(self.targets)):
            t = self.router.choose(self.depth, self.own_active)
            if links[t].alive:
                return t
        return alive[0]

    def start_round(self, req: Req, now: float) -> None:
        gamma = req.prog.next_gamma()
        req.gamma = gamma
        if gamma == 0:
            req.draft_start = now
            req.tokens = b""
            self.send_verify(req)
        elif self.slots.acquire(req):
            self.begin_draft(req, now)
        else:
            req.state = WAIT_SLOT

    def begin_draft(self, req: Req, now: float) -> None:
        p = req.prog
        req.state = DRAFTING
        req.draft_start = now
        item = DraftItem(req.rid, p.produced, req.gamma, p.context())
        if self.worker is not None:  # real compute: on the worker thread; collect_drafts() picks it up
            self.worker.submit(req, self.backend.draft, [item])
            return
        out = self.backend.draft([item])
        self.take_draft(req, out)
        self.seq += 1
        heapq.heappush(self.timers, (now + out.wait_s, self.seq, req))  # the backend's compute time

    def collect_drafts(self) -> None:
        """Drafts the worker finished: their compute already took its time, so they go out now."""
        for req, out, err in self.worker.done():
            if err is not None:
                raise RuntimeError(
                    f"nodes.draft {self.name}: the {self.backend.name} backend failed drafting "
                    f"request {req.rid}: {err!r}"
                ) from err
            self.take_draft(req, out)
            self.on_drafted(req, monotonic())

    @staticmethod
    def take_draft(req: Req, out) -> None:
        req.tokens = out.tokens[0]
        req.topk = out.topk
        req.probs = out.probs[0] if out.probs else None

    def on_drafted(self, req: Req, now: float) -> None:
        if not req.status and req.state == DRAFTING:  # the finished draft goes out first, then the slot passes on
            self.send_verify(req)  # (a request re-routed while drafting already sent its new PREFILL)
        nxt = self.slots.release(_active)
        if nxt is not None:
            self.begin_draft(nxt, monotonic())

    def send_verify(self, req: Req) -> None:
        data = self.enc.verify(req.rid, req.prog.produced, req.tokens, req.topk, req.probs or None)
        req.state = WAIT_VERIFY
        now = monotonic()
        req.send = now
        req.waiting_since = now
        if not self.send(self.links[req.target], data):
            self.fail(req, "send_blocked")

    def on_frame(self, link: TargetLink, data: bytes, now: float) -> None:
        try:
            m = P.decode(data, P.TO_DRAFT)
        except P.ProtocolError as e:
            self.bad.add(e.reason, e.detail, link.name)
            return
        link.last_heard = now
        t = m["t"]
        if not link.alive and t != P.BYE:  # heard again: the link is back or the target restarted (rule 3)
            link.alive = True
            self.event(now, "target_alive", link.name)
        self.msgs_in[P.NAMES[t]] += 1
        if t == P.VERIFY_RESULT:
            self.on_result(link, m, now)
        elif t == P.PREFILL_DONE:
            req = self.active.get(m["r"])
            if req is None or req.state != WAIT_PREFILL or req.target != link.name:
                self.stale += 1
                return
            if req.first_token != req.first_token:  # NaN: TTFT ends at the first prefill's token only
                req.first_token = now - self.t0
            self.backend.observe(req.rid, 0, m["tok"])
            self.depth[link.name] = m["qd"]
            if self.colocated:  # the target runs the rounds; DONE follows
                req.prog.first_token()
                req.state = WAIT_DONE
                req.waiting_since = now
                return
            if req.prog.first_token():
                self.finish(req, now)
            else:
                self.start_round(req, now)
        elif t == P.DONE:
            self.on_done(link, m, now)
        elif t == P.HEARTBEAT:
            pass  # liveness only: routing uses the depths reported with results, as the simulator does
        elif t == P.HELLO:
            if not link.hello:
                link.hello = True
                if all(l.hello for l in self.links.values()):
                    self.ready_at = now
                    write_json(
                        self.out / "ready.json",
                        {"node": self.name, "pid": os.getpid(), "ready_s": None if self.t0 is None else now - self.t0},
                    )
        elif t == P.ERROR:
            req = self.active.get(m["r"])
            if req is not None and req.target == link.name:
                log.warning("request %d: target %s answered %s: %s", req.rid, link.name, m["c"], m.get("m", ""))
                if m["c"] == "unknown_request" and req.state in (WAIT_PREFILL, WAIT_VERIFY):
                    self.reroute(req, f"{link.name} does not know it")  # it restarted (faults rule 4)
                else:
                    self.fail(req, f"error_{m['c']}")
        elif t == P.BYE:
            self.target_dead(link, "bye")

    def on_result(self, link: TargetLink, m: dict, now: float) -> None:
        req = self.active.get(m["r"])
        if req is None or req.state != WAIT_VERIFY or req.target != link.name:
            self.stale += 1
            return
        gamma, a, qd = req.gamma, m["a"], m["qd"]
        if a > gamma:
            self.bad.add("bad_field", f"VERIFY_RESULT.a = {a} > gamma {gamma}", link.name)
            self.fail(req, "bad_result")
            return
        self.depth[link.name] = qd
        p = req.prog
        t0 = self.t0
        bs, be = m["bs"], m["be"]
        self.rounds_rows.append(
            round_row(
                p,
                self.name,
                link.name,
                gamma,
                a,
                req.draft_start - t0,
                req.send - t0,
                m["tr"],
                bs,
                be,
                now - t0,
                m["bn"],
                qd,
            )
        )
        fb = RoundFeedback.of_round(gamma, a, req.draft_start, req.send, bs, be, now, qd) if self.observes else None
        self.backend.observe(req.rid, a, m["tok"])
        if p.apply(gamma, a, fb):
            self.finish(req, now)
        else:
            self.start_round(req, now)

    def on_done(self, link: TargetLink, m: dict, now: float) -> None:
        """Co-located modes: the target finished the request (and already freed it)."""
        req = self.active.get(m["r"])
        if req is None or req.state != WAIT_DONE or req.target != link.name:
            self.stale += 1
            return
        p = req.prog
        if m["n"] != p.output_tokens:
            self.bad.add("bad_field", f"DONE: {m['n']} tokens produced, {p.output_tokens} expected", link.name)
            req.state = 0  # the target no longer holds it: no RELEASE
            self.fail(req, "bad_result")
            return
        p.produced, p.rounds, p.drafted, p.accepted = m["n"], m["rd"], m["dr"], m["ac"]
        self.backend.observe(req.rid, 0, m["tok"])
        self.finish(req, now)

    def finish(self, req: Req, now: float) -> None:
        req.status = "ok"
        req.state = 0
        req.finish = now - self.t0
        self.n_ok += 1
        self.close_req(req)
        if not self.colocated:  # co-located: the target freed it when it sent DONE
            self.send(self.links[req.target], self.enc.release(req.rid))

    def fail(self, req: Req, reason: str) -> None:
        if req.status:
            return
        req.status = "failed"
        self.n_failed += 1
        self.fail_reasons[reason] += 1
        self.event(monotonic(), "fail", f"request {req.rid}: {reason}")
        if req.target and req.state in WAITING and self.links[req.target].alive:
            self.send(self.links[req.target], self.enc.release(req.rid))
        req.state = 0
        self.close_req(req)

    def close_req(self, req: Req) -> None:
        del self.active[req.rid]
        if req.target:
            self.own_active[req.target] -= 1
        self.backend.release(req.rid)
        self.finished.append(req)
        self.journal.write(json.dumps(self.row(req)) + "\n")

    def row(self, r: Req) -> tuple:
        status = r.status or "unfinished"
        return request_row(
            r.prog,
            self.name,
            r.target,
            r.arrival,
            r.prefill_sent,
            r.first_token,
            r.finish if status == "ok" else NAN,
            status,
        )

    def restarted_at(self, start_at: float) -> None:
        """A new life after a crash (faults rule 6): arrivals before it were the old life's or failed while it
        was down; this one takes the later ones."""
        assert self.t0 is not None
        while self.next_i < self.n and self.t0 + self.arrivals[self.next_i] < start_at:
            self.next_i += 1

    def target_dead(self, link: TargetLink, why: str) -> None:
        if not link.alive:
            return
        link.alive = False
        self.event(monotonic(), "target_dead", link.name)
        victims = [r for r in self.active.values() if r.target == link.name]
        log.warning(
            "target %s %s: %d requests re-routed",
            link.name,
            "left (BYE)" if why == "bye" else f"silent for {self.peer_timeout:.1f} s, declared dead",
            len(victims),
        )
        for r in victims:
            if self.colocated or r.state == WAIT_DONE:
                self.fail(r, f"target_{why}")
            else:
                self.reroute(r, f"{link.name} declared dead")

    def reroute(self, req: Req, why: str) -> None:
        """Faults rule 2: the request starts again at another live target with a PREFILL of its prompt plus the
        tokens produced so far; with none alive it fails."""
        old = req.target
        self.own_active[old] -= 1
        req.target = ""
        target = self.route()
        if target is None:
            req.target = old
            self.own_active[old] += 1
            self.fail(req, "no_live_target")
            return
        req.target = target
        self.own_active[target] += 1
        self.n_rerouted += 1
        self.event(
            monotonic(), "reroute", f"request {req.rid}: {old} -> {target} ({why}) at {req.prog.produced} tokens"
        )
        p = req.prog
        data = self.enc.prefill(req.rid, p.output_tokens, self.backend.prompt(req.rid, p.context()), p.produced)
        req.state = WAIT_PREFILL
        now = monotonic()
        req.waiting_since = now
        if not self.send(self.links[target], data):
            self.fail(req, "send_blocked")

    def event(self, now: float, kind: str, detail: str) -> None:
        if self.t0 is not None:
            self.events.append((now - self.t0, kind, detail))

    def read_all(self, links: list[TargetLink]) -> None:
        """Handle every message waiting on the target links (non-blocking)."""
        for link in links:
            recv = link.sock.recv
            while True:
                try:
                    data = recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                self.on_frame(link, data, monotonic())

    def housekeeping(self, now: float) -> None:
        for link in self.links.values():
            if link.alive and now - link.last_heard > self.peer_timeout:
                self.target_dead(link, "dead")
            if now - link.last_sent >= self.heartbeat:  # dead ones too: an answer brings them back
                self.send(link, self.enc.heartbeat(self.name))
        # (co-located modes: a request waiting for DONE progresses at the target, unseen; it fails when the target
        # is declared dead, or at the drain timeout)
        limit = now - self.request_timeout
        late = [r for r in self.active.values() if r.state in (WAIT_PREFILL, WAIT_VERIFY) and r.waiting_since < limit]
        for r in late:
            self.fail(r, "request_timeout")
        self.progress(now)

    def progress(self, now: float) -> None:
        if getattr(self, "_last_progress", -1.0) + 0.25 > now:
            return
        self._last_progress = now
        write_json(
            self.out / "progress.json",
            {"ok": self.n_ok, "failed": self.n_failed, "total": self.n, "arrived": self.next_i},
        )

    # -- results ------------------------------------------------------------------------------------------
    def close(self, why: str, stop: StopFlag) -> None:
        for link in self.links.values():
            if link.alive:
                self.send(link, self.enc.bye(self.name))
        rows = [self.row(r) for r in self.finished + list(self.active.values())]
        for i in range(self.next_i, self.n):
            rows.append(
                unstarted_request_row(
                    self.rids[i], self.name, self.arrivals[i], self.prompts[i], self.outputs[i], "unfinished"
                )
            )
        rows.sort()
        write_parquet(self.out / "requests.parquet", frame(REQUEST_COLUMNS, rows))
        write_parquet(self.out / "rounds.parquet", frame(ROUND_COLUMNS, self.rounds_rows))
        self._last_progress = -1.0
        self.progress(monotonic())
        write_json(
            self.out / "node.json",
            {
                "node": self.name,
                "role": "draft",
                "pid": os.getpid(),
                "backend": self.backend.name,
                "end": why,
                "stopped_by_signal": stop.signal or None,
                "requests": self.n,
                "ok": self.n_ok,
                "failed": self.n_failed,
                "unfinished": len(rows) - self.n_ok - self.n_failed,
                "fail_reasons": dict(self.fail_reasons),
                "rounds": len(self.rounds_rows),
                "ready_s": None if self.ready_at is None or self.t0 is None else self.ready_at - self.t0,
                "messages_in": dict(self.msgs_in),
                "messages_sent": self.sent,
                "send_dropped": self.send_dropped,
                "stale_messages": self.stale,
                "bad_messages": dict(self.bad.counts),
                "dead_targets": [l.name for l in self.links.values() if not l.alive],
                "rerouted": self.n_rerouted,
                "events": self.events,
                "timer_lateness": self.lateness.report(),
            },
        )
        for link in self.links.values():
            link.sock.close(0)
        if self.worker is not None:
            self.worker.close()
        log.info(
            "stopped (%s): %d ok, %d failed, %d unfinished of %d",
            why,
            self.n_ok,
            self.n_failed,
            len(rows) - self.n_ok - self.n_failed,
            self.n,
        )


def main(argv: list[str] | None = None) -> int:
    args, scenario, peers = setup("nodes.draft", argv)
    stop = StopFlag()
    node = DraftNode(args, scenario, peers)
    if args.start_at is not None:  # a scheduled restart: ready and waiting, up at its time (testbed/emu/schedule.py)
        while (left := args.start_at - monotonic()) > 0:
            time.sleep(min(left, 0.05) if left > 0.002 else 0)
        node.restarted_at(args.start_at)
    node.connect()
    why = "error"
    try:
        why = node.run(stop)
    finally:
        node.close(why, stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
