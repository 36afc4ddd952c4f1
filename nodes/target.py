"""Target node: `python -m nodes.target --spec S --node NAME --peers P --t0 T0 --out DIR`.

Binds one ROUTER on its own address, serves many drafts: PREFILL and VERIFY jobs go into one queue, the
shared batching policy (testbed.policies.batching.Batcher) forms batches, one batch runs at a time through
the model backend, and each request gets its answer (PREFILL_DONE / VERIFY_RESULT with the target-side
timestamps and the queue depth). Per-request state is freed on RELEASE, on a draft's BYE, or when a draft
has been silent for the peer timeout. Invalid frames are counted and logged, never fatal.

Co-located modes (`run.mode` fused / autoregressive), as the simulator (testbed/sim/nodes.py): the rounds run
here (nodes/colocated.py): after PREFILL_DONE the target drafts with its own drafter and verifies through the
same queue and batches, sends DONE when the request is complete, and writes the rounds table itself.

Writes DIR/ready.json once bound, and DIR/batches.parquet (+ DIR/rounds.parquet in co-located modes) +
DIR/node.json when it stops: on SIGTERM, or by itself once every draft that can reach it has said BYE or
been declared dead.
"""

from __future__ import annotations

import heapq
import logging
import os
import sys
import time
from collections import Counter
from pathlib import Path

import zmq

from nodes import BadMessages, StartTime, StopFlag, check_endpoint, setup, write_json
from nodes import protocol as P
from nodes.backends import TargetRequest, load_backend
from nodes.colocated import ColocatedRounds, LocalRequest
from nodes.clock import Lateness, monotonic, wait_readable
from nodes.worker import ComputeWorker
from testbed.files import write_parquet
from testbed.policies.batching import PREFILL, Batcher, Job, verify_job
from testbed.tables import BATCH_COLUMNS, ROUND_COLUMNS, batch_row, frame

log = logging.getLogger("nodes.target")


class Peer:
    __slots__ = ("name", "last_seen", "reqs", "gone", "hello")

    def __init__(self, name: str, now: float):
        self.name = name
        self.last_seen = now
        self.reqs: set[int] = set()
        self.gone = False
        self.hello = False


class TargetNode:
    def __init__(self, args, scenario, peers: dict[str, str]):
        self.args = args
        self.name = args.node
        self.start = StartTime(args.t0)
        self.t0 = self.start.get()  # None until the orchestrator publishes T0 (then read in housekeeping)
        self.t_started = monotonic()
        self.out = Path(args.out)
        self.scenario = scenario
        spec = scenario.spec
        if scenario.node(self.name).role != "target":
            raise SystemExit(f"nodes.target: node {self.name!r} is a {scenario.node(self.name).role}, not a target")
        if self.name not in peers:
            raise SystemExit(f"nodes.target: {args.peers} has no address for {self.name}")
        self.endpoint = check_endpoint(peers[self.name])
        try:
            self.backend = load_backend(spec.models.backend).make_target(scenario, self.name)
        except ValueError as e:
            raise SystemExit(f"nodes.target: {e}")
        mode = spec.run.mode
        self.colocated = mode != "distributed"  # fused / autoregressive: the rounds run here (nodes.colocated)
        self.local = ColocatedRounds(self, scenario) if self.colocated else None
        self.batcher = Batcher(spec.policy.batching)
        # a backend that really computes (hf) runs its batches on a worker thread, so messages are received (and
        # stamped: the rounds table's upload leg and queue wait) while a batch computes, as the simulator's target
        # queues them; co-located modes draft in this thread on the same model state: they compute here
        self.worker = ComputeWorker(self.name) if self.backend.blocking and not self.colocated else None
        self.release_after_batch: list[int] = []  # requests freed while their batch computes on the worker
        self.queue: list[Job] = []
        self.reqs: dict[int, TargetRequest] = {}
        self.peers: dict[bytes, Peer] = {}
        self.expected = {d for d in scenario.drafts if self.name in scenario.reachable.get(d, ())}
        self.peer_timeout = args.peer_timeout_s
        self.enc = P.Encoder()
        self.bad = BadMessages()
        self.msgs_in: Counter[str] = Counter()
        self.errors_sent: Counter[str] = Counter()
        self.lateness = Lateness()
        self.batches: list[tuple] = []
        self.freed_on_timeout = 0
        self.dead_peers: list[str] = []
        self.busy = False
        self.busy_until = 0.0
        self.batch: list[Job] = []
        self.outcome = None
        self.batch_start = 0.0
        self.wake_at: float | None = None
        self.sent = 0

    # -- setup --------------------------------------------------------------------------------------------
    def bind(self) -> None:
        ctx = zmq.Context.instance()
        s = self.sock = ctx.socket(zmq.ROUTER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SNDHWM, 0)
        s.setsockopt(zmq.RCVHWM, 0)
        s.setsockopt(zmq.ROUTER_HANDOVER, 1)
        base, _, port = self.endpoint.rpartition(":")
        if port == "0":
            port_n = s.bind_to_random_port(base)
            self.endpoint = f"{base}:{port_n}"
        else:
            s.bind(self.endpoint)
        write_json(
            self.out / "ready.json",
            {
                "node": self.name,
                "endpoint": self.endpoint,
                "pid": os.getpid(),
                "ready_s": None if self.t0 is None else monotonic() - self.t0,
            },
        )
        log.info("bound %s (backend %s, %d drafts expected)", self.endpoint, self.backend.name, len(self.expected))

    # -- main loop ----------------------------------------------------------------------------------------
    def run(self, stop: StopFlag) -> None:
        sock = self.sock
        fds = [sock.getsockopt(zmq.FD)]
        worker = self.worker
        if worker is not None:
            fds.append(worker.fd)
        recv = sock.recv_multipart
        NOBLOCK = zmq.NOBLOCK
        Again = zmq.Again
        EVENTS, POLLIN = zmq.EVENTS, zmq.POLLIN
        hk_every = min(0.1, self.peer_timeout / 10)
        next_hk = monotonic() + hk_every
        local = self.local
        timers = local.timers if local is not None else []  # co-located drafting ends
        inf = float("inf")
        while True:
            while True:
                try:
                    parts = recv(NOBLOCK)
                except Again:
                    break
                self.on_frames(parts, monotonic())
            if worker is not None and worker.pending:
                for _, outcome, err in worker.done():
                    if err is not None:
                        raise RuntimeError(f"nodes.target {self.name}: the {self.backend.name} backend failed: {err!r}")
                    self.outcome = outcome
                    self.busy_until = monotonic()  # the batch's compute ended now
            now = monotonic()
            # the earliest due event first: the running batch's end or a co-located drafting end
            due_batch = self.busy_until if self.busy else inf
            due_timer = timers[0][0] if timers else inf
            if due_batch <= now or due_timer <= now:
                if due_batch <= due_timer:
                    self.finish_batch(now)
                else:
                    _, _, req = heapq.heappop(timers)
                    self.lateness.add(now - due_timer)
                    local.on_drafted(req, now)
                continue
            if not self.busy and self.queue:
                self.try_start(now)
                if self.busy:
                    continue
            if now >= next_hk:
                next_hk = now + hk_every
                if self.housekeeping(now) or stop.stop:
                    break
            deadline = next_hk
            if self.busy:
                deadline = min(deadline, self.busy_until)
            elif self.wake_at is not None and self.queue:
                deadline = min(deadline, self.wake_at)
            if timers:
                deadline = min(deadline, timers[0][0])
            if sock.getsockopt(EVENTS) & POLLIN:
                continue
            wait_readable(fds, deadline)

    # -- messages -----------------------------------------------------------------------------------------
    def on_frames(self, parts: list[bytes], now: float) -> None:
        if len(parts) != 2:
            self.bad.add("garbage", f"{len(parts) - 1} frames", repr(parts[0][:16]))
            return
        ident, data = parts
        try:
            m = P.decode(data, P.TO_TARGET)
        except P.ProtocolError as e:
            self.bad.add(e.reason, e.detail, repr(ident[:16]))
            return
        peer = self.peers.get(ident)
        if peer is None:
            peer = self.peers[ident] = Peer(ident.decode("utf-8", "replace"), now)
        elif peer.gone and m["t"] != P.HELLO:
            self.msgs_in["from_gone_peer"] += 1
            return
        peer.last_seen = now
        t = m["t"]
        self.msgs_in[P.NAMES[t]] += 1
        if t == P.VERIFY:
            self.on_verify(ident, peer, m, now)
        elif t == P.PREFILL:
            self.on_prefill(ident, peer, m, now)
        elif t == P.HEARTBEAT:
            self.send(ident, self.enc.heartbeat(self.name, len(self.queue)))
        elif t == P.RELEASE:
            req = self.reqs.get(m["r"])
            if req is not None and req.owner == ident:
                self.free(req)
        elif t == P.HELLO:
            peer.gone = False
            peer.hello = True
            if peer.name != m["n"]:
                log.warning("peer identity %r says it is %r", peer.name, m["n"])
            self.send(ident, self.enc.hello(self.name, None, len(self.queue)))
        elif t == P.BYE:
            self.drop_peer(ident, peer, "bye")

    def on_prefill(self, ident: bytes, peer: Peer, m: dict, now: float) -> None:
        if self.t0 is None:
            self.t0 = self.start.get()
            if self.t0 is None:
                self.error(ident, m["r"], "not_started", "the run's start time T0 is not known yet")
                return
        rid = m["r"]
        if rid in self.reqs:
            self.error(ident, rid, "duplicate", "request id already active")
            return
        if self.colocated:
            req = self.local.new_request(rid, ident, m["tk"], m["o"], peer.name)
        else:
            req = TargetRequest(rid, ident, m["tk"], m["o"], m.get("pd") or 0)
        req.t_recv = now
        req.queued = True
        self.reqs[rid] = req
        peer.reqs.add(rid)
        self.queue.append(Job(PREFILL, req.prompt_tokens + req.produced, 0, now, req))

    def on_verify(self, ident: bytes, peer: Peer, m: dict, now: float) -> None:
        rid = m["r"]
        req = self.reqs.get(rid)
        if req is None or req.owner != ident:
            self.error(ident, rid, "unknown_request", "no such request (released or timed out)")
            return
        if self.colocated:
            self.error(ident, rid, "bad_round", f"run.mode {self.scenario.spec.run.mode}: the rounds run at the target")
            return
        tk = m["tk"]
        g = len(tk) >> 2
        if req.queued or m["p"] != req.produced or req.produced == 0 or g > req.output_tokens - req.produced - 1:
            self.error(
                ident,
                rid,
                "bad_round",
                f"position {m['p']} gamma {g}: target has {req.produced} of {req.output_tokens}"
                f"{' and a job pending' if req.queued else ''}",
            )
            return
        req.draft = tk
        req.topk = m.get("k") or 0
        req.probs = m.get("pr")
        req.t_recv = now
        req.queued = True
        self.queue.append(verify_job(g, req.prompt_tokens + req.produced, now, req))

    def send(self, ident: bytes, data: bytes) -> None:
        try:
            self.sock.send_multipart((ident, data), zmq.NOBLOCK)
            self.sent += 1
        except zmq.Again:
            self.msgs_in["send_dropped"] += 1

    def error(self, ident: bytes, rid: int, code: str, msg: str) -> None:
        self.errors_sent[code] += 1
        if self.errors_sent[code] <= 5:
            log.warning("request %d from %r: %s (%s)", rid, ident[:16], code, msg)
        self.send(ident, self.enc.error(rid, code, msg))

    # -- batches ------------------------------------------------------------------------------------------
    def try_start(self, now: float) -> None:
        batch, wake = self.batcher.form(self.queue, now)
        self.wake_at = wake
        if batch is None:
            return
        self.batch = batch
        self.batch_start = now
        items = [j.ref for j in batch]
        fn = self.backend.prefill_batch if batch[0].kind == PREFILL else self.backend.verify_batch
        self.busy = True
        if self.worker is not None:  # ends when the worker hands the outcome back (run loop)
            self.outcome = None
            self.busy_until = float("inf")
            self.worker.submit(None, fn, items)
            return
        self.outcome = fn(items)
        # a backend that computed (hf, wait_s 0) has spent the time already: the batch ends now, not at its start
        # (else its whole compute time would count as timer lateness in node.json)
        self.busy_until = now + self.outcome.wait_s if self.outcome.wait_s > 0 else monotonic()

    def finish_batch(self, now: float) -> None:
        self.lateness.add(now - self.busy_until)
        self.busy = False
        batch, out = self.batch, self.outcome
        self.batch = []
        self.outcome = None
        depth = len(self.queue)
        t0 = self.t0
        start, end, n = self.batch_start - t0, now - t0, len(batch)
        reqs = self.reqs
        tokens = 0
        enc = self.enc
        local: list[tuple[LocalRequest, int]] = []  # co-located requests: (request, accepted), applied below
        rounds = self.local
        if batch[0].kind == PREFILL:
            for j, tok in zip(batch, out.tokens):
                req = j.ref
                tokens += j.tokens
                if reqs.get(req.rid) is not req:
                    continue  # freed while running
                req.queued = False
                req.produced += 1
                req.prompt = b""
                self.send(req.owner, enc.prefill_done(req.rid, tok, depth, req.t_recv - t0, start, end, n))
                if self.colocated:
                    req.token = tok
                    local.append((req, -1))
            self.batches.append(
                batch_row(target=self.name, kind="prefill", start_s=start, end_s=end, size=n, tokens=tokens)
            )
        else:
            for j, tok, a in zip(batch, out.tokens, out.accepted):
                req = j.ref
                tokens += j.tokens
                if reqs.get(req.rid) is not req:
                    continue
                req.queued = False
                if rounds is not None:
                    rounds.record(req, a, t0, start, end, n, depth)
                    req.produced += a + 1
                    req.token = tok
                    local.append((req, a))
                    continue
                req.produced += a + 1
                self.send(req.owner, enc.verify_result(req.rid, a, tok, depth, req.t_recv - t0, start, end, n))
            self.batches.append(
                batch_row(target=self.name, kind="verify", start_s=start, end_s=end, size=n, tokens=tokens)
            )
        if local:
            rounds.apply(local, now, depth, self.batch_start)
        for rid in self.release_after_batch:
            self.backend.release(rid)
        self.release_after_batch.clear()

    # -- state --------------------------------------------------------------------------------------------
    def free(self, req: TargetRequest) -> None:
        del self.reqs[req.rid]
        peer = self.peers.get(req.owner)
        if peer is not None:
            peer.reqs.discard(req.rid)
        running = any(j.ref is req for j in self.batch)
        if req.queued and not running:
            self.queue[:] = [j for j in self.queue if j.ref is not req]
        if running and self.worker is not None:  # the worker is computing on its state: free it after the batch
            self.release_after_batch.append(req.rid)
        else:
            self.backend.release(req.rid)
        if self.local is not None:
            self.local.release(req.rid)

    def drop_peer(self, ident: bytes, peer: Peer, why: str) -> None:
        n = len(peer.reqs)
        for rid in list(peer.reqs):
            req = self.reqs.get(rid)
            if req is not None:
                self.free(req)
        peer.reqs.clear()
        peer.gone = True
        if why == "timeout":
            self.freed_on_timeout += n
            self.dead_peers.append(peer.name)
            log.warning("draft %s silent for %.1f s: declared dead, freed %d requests", peer.name, self.peer_timeout, n)
        else:
            log.info("draft %s left (%s), freed %d requests", peer.name, why, n)

    def housekeeping(self, now: float) -> bool:
        """Drop silent peers; True when every expected draft is gone (the target's work is over)."""
        if self.t0 is None:
            self.t0 = self.start.get()
        limit = now - self.peer_timeout
        for ident, peer in self.peers.items():
            if not peer.gone and peer.last_seen < limit:
                self.drop_peer(ident, peer, "timeout")
        if not self.expected:
            return False
        gone = {p.name for p in self.peers.values() if p.gone and p.hello}
        live = {p.name for p in self.peers.values() if not p.gone}
        never_seen_dead = (
            self.t0 is not None and now > max(self.t0, self.t_started) + self.peer_timeout
        )  # restarted: from its start
        for d in self.expected:
            if d in live:
                return False
            if d not in gone and not never_seen_dead:
                return False
        return True

    # -- results ------------------------------------------------------------------------------------------
    def close(self, stop: StopFlag) -> None:
        for ident, peer in self.peers.items():
            if not peer.gone:
                self.send(ident, self.enc.bye(self.name))
        if self.t0 is None and self.batches:  # cannot happen: batches need a PREFILL, which needs T0
            self.batches = []
        if self.worker is not None:
            self.worker.close()
        write_parquet(self.out / "batches.parquet", frame(BATCH_COLUMNS, self.batches))
        if self.local is not None:
            write_parquet(self.out / "rounds.parquet", frame(ROUND_COLUMNS, self.local.rows))
        write_json(
            self.out / "node.json",
            {
                "node": self.name,
                "role": "target",
                "pid": os.getpid(),
                "endpoint": self.endpoint,
                "backend": self.backend.name,
                "stopped_by_signal": stop.signal or None,
                "batches": len(self.batches),
                "mode": self.scenario.spec.run.mode,
                "local_rounds": len(self.local.rows) if self.local is not None else 0,
                "messages_in": dict(self.msgs_in),
                "messages_sent": self.sent,
                "bad_messages": dict(self.bad.counts),
                "bad_messages_total": self.bad.total(),
                "errors_sent": dict(self.errors_sent),
                "requests_active_at_end": len(self.reqs),
                "requests_freed_on_timeout": self.freed_on_timeout,
                "dead_peers": self.dead_peers,
                "timer_lateness": self.lateness.report(),
            },
        )
        self.backend.close()
        if self.local is not None:
            self.local.close()
        self.sock.close(0)
        log.info(
            "stopped: %d batches, %d bad messages, %d requests freed on peer timeout",
            len(self.batches),
            self.bad.total(),
            self.freed_on_timeout,
        )


def main(argv: list[str] | None = None) -> int:
    args, scenario, peers = setup("nodes.target", argv)
    stop = StopFlag()
    node = TargetNode(args, scenario, peers)
    if args.start_at is not None:  # a scheduled restart: ready and waiting, up at its time (testbed/emu/schedule.py)
        while (left := args.start_at - monotonic()) > 0:
            time.sleep(min(left, 0.05) if left > 0.002 else 0)
        node.t_started = monotonic()
    node.bind()
    try:
        node.run(stop)
    finally:
        node.close(stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
