"""Co-located rounds at a target node (run.mode fused / autoregressive), as the simulator runs them
(testbed/sim/nodes.py): after a request's prefill the target drafts with its own drafter (the model backend's
draft side with this node's compute profile, `draft_step`; unlimited slots, no network; autoregressive:
gamma = 0, no drafting) and verifies through the same queue and batches; when the request is complete the
target sends DONE (the round counts) and frees it. The rounds table is written here (the simulator's schema:
send_s = drafting end = target_recv_s, recv_s = batch end).

Ordering as in the simulator: when a batch ends, the next batch is formed from the jobs already queued, and
only then are the finished batch's results applied locally (their new jobs queue after it started).
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING

from nodes.backends import DraftItem, TargetRequest, load_backend
from testbed.policies.batching import verify_job
from testbed.policies.window import RoundFeedback, parse_window_policy
from testbed.rounds import RequestProgress, round_row

if TYPE_CHECKING:
    from nodes.target import TargetNode


class LocalRequest(TargetRequest):
    """A request whose rounds run at this target (co-located modes)."""

    __slots__ = ("prog", "edge", "gamma", "draft_start", "send", "token")

    def __init__(self, rid: int, owner: bytes, prompt: bytes, output_tokens: int, prog: RequestProgress, edge: str):
        super().__init__(rid, owner, prompt, output_tokens)
        self.prog = prog
        self.edge = edge  # the draft node the request came from (rounds table)
        self.gamma = 0
        self.draft_start = 0.0  # absolute monotonic
        self.send = 0.0  # drafting ended, the VERIFY job was queued
        self.token = 0  # the last target token


class ColocatedRounds:
    """The rounds of one target node's co-located requests: window policy, drafter, drafting timers, rows."""

    def __init__(self, node: TargetNode, scenario):
        spec = scenario.spec
        self.node = node
        self.speculate = spec.run.mode != "autoregressive"
        self.policy = parse_window_policy(spec.policy.window)
        self.observes = self.policy.observes and self.speculate
        self.gamma_max = spec.policy.gamma_max
        self.drafter = None
        if self.speculate:  # the co-located drafter: this node's compute profile (draft_step)
            self.drafter = load_backend(spec.models.backend).make_draft(scenario, node.name)
        self.timers: list[tuple[float, int, LocalRequest]] = []  # drafting ends
        self.seq = 0
        self.rows: list[tuple] = []

    def new_request(self, rid: int, owner: bytes, prompt: bytes, output_tokens: int, edge: str) -> LocalRequest:
        prompt_tokens = len(prompt) >> 2
        ctl = self.policy.controller(prompt_tokens, self.gamma_max)
        prog = RequestProgress(rid, prompt_tokens, output_tokens, ctl, self.gamma_max, self.speculate)
        return LocalRequest(rid, owner, prompt, output_tokens, prog, edge)

    def record(self, req: LocalRequest, accepted: int, t0: float, start: float, end: float, n: int, depth: int) -> None:
        """The rounds-table row of a verified co-located round (times relative to T0)."""
        self.rows.append(
            round_row(
                req.prog,
                req.edge,
                self.node.name,
                req.gamma,
                accepted,
                req.draft_start - t0,
                req.send - t0,
                req.t_recv - t0,
                start,
                end,
                end,
                n,
                depth,
            )
        )

    def apply(self, local: list[tuple[LocalRequest, int]], now: float, depth: int, b_start: float) -> None:
        """Results of a finished batch for co-located requests (accepted = -1: the prefill's first token).

        As in the simulator (and a continuous-batching server): the results are applied first, in batch
        order; the decode steps (gamma = 0) they produce join the queue; then the next batch forms from
        everything queued. Drafting rounds queue when their drafting time is over."""
        node = self.node
        new_jobs: list[LocalRequest] = []
        for req, a in local:
            p = req.prog
            if a < 0:
                done = p.first_token()
            else:
                g = req.gamma
                fb = (
                    RoundFeedback.of_round(g, a, req.draft_start, req.send, b_start, now, now, depth)
                    if self.observes
                    else None
                )
                done = p.apply(g, a, fb)
            if done:
                self.finish(req, now, depth)
            else:
                self.start_round(req, now, new_jobs)
        for req in new_jobs:
            self.enqueue(req, now, start=False)
        if not node.busy and node.queue:
            node.try_start(now)

    def start_round(self, req: LocalRequest, now: float, new_jobs: list[LocalRequest]) -> None:
        p = req.prog
        g = p.next_gamma()
        req.gamma = g
        req.draft_start = now
        if g == 0:
            req.draft = b""
            req.send = now
            new_jobs.append(req)
            return
        out = self.drafter.draft([DraftItem(req.rid, p.produced, g, p.context())])
        req.draft = out.tokens[0]
        req.topk = out.topk
        req.probs = out.probs[0] if out.probs else None
        self.seq += 1
        heapq.heappush(self.timers, (now + out.wait_s, self.seq, req))

    def on_drafted(self, req: LocalRequest, now: float) -> None:
        if self.node.reqs.get(req.rid) is not req:
            return  # released while drafting
        req.send = now
        self.enqueue(req, now)

    def enqueue(self, req: LocalRequest, now: float, start: bool = True) -> None:
        node = self.node
        req.t_recv = now
        req.queued = True
        node.queue.append(verify_job(req.gamma, req.prompt_tokens + req.produced, now, req))
        if start and not node.busy:
            node.try_start(now)

    def finish(self, req: LocalRequest, now: float, depth: int) -> None:
        node = self.node
        p = req.prog
        node.send(
            req.owner,
            node.enc.done(req.rid, req.token, p.produced, p.rounds, p.drafted, p.accepted, depth, now - node.t0),
        )
        node.free(req)

    def release(self, rid: int) -> None:
        if self.drafter is not None:
            self.drafter.release(rid)

    def close(self) -> None:
        if self.drafter is not None:
            self.drafter.close()
