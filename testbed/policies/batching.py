"""Target batching policies (simulator and target node): which queued jobs form the next batch.

A job is a PREFILL (tokens = prompt tokens) or a VERIFY (tokens = gamma + 1). A batch holds jobs of one
kind: the kind of the oldest queued job. Within that kind,

    fifo          jobs in arrival order,
    length_aware  shortest jobs first (less padding, more jobs per token budget),

are taken while the batch stays within max_batch_reqs and max_batch_tokens (a single job larger than the
token budget still runs alone). If the batch is not full and max_wait_ms > 0, the target waits until the
oldest job has waited max_wait_ms, or until the batch fills, before starting it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from testbed.spec.schema import BatchingSpec

PREFILL = 0
VERIFY = 1


@dataclass(slots=True)
class Job:
    kind: int  # PREFILL or VERIFY
    tokens: int  # prompt tokens (prefill) or gamma + 1 (verify)
    ctx: int  # context length before this job
    arrival: float  # when the job reached the target's queue (seconds)
    ref: Any = field(default=None)  # the executor's own handle (request state, reply address...)


def verify_job(gamma: int, context: int, now: float, ref: Any) -> Job:
    """A round's VERIFY job: the gamma drafted tokens plus the position after them, over the context
    (prompt + produced) before the round; `now` is when it joins the target's queue."""
    return Job(VERIFY, gamma + 1, context, now, ref)


def verify_cost_inputs(batch: list[Job]) -> tuple[int, int, int]:
    """The inputs of a verify batch's cost (ComputeModel.verify_time): requests, tokens, context tokens."""
    tokens = ctx = 0
    for j in batch:
        tokens += j.tokens
        ctx += j.ctx
    return len(batch), tokens, ctx


class Batcher:
    """Forms batches from a queue (a list in arrival order) according to a BatchingSpec."""

    __slots__ = ("max_reqs", "max_tokens", "max_wait", "length_aware")

    def __init__(self, spec: BatchingSpec):
        self.max_reqs = spec.max_batch_reqs
        self.max_tokens = spec.max_batch_tokens
        self.max_wait = spec.max_wait_ms / 1e3
        self.length_aware = spec.kind == "length_aware"

    def form(self, queue: list[Job], now: float) -> tuple[list[Job] | None, float | None]:
        """Remove and return the next batch, or (None, t) to be asked again at time t (None: queue empty)."""
        if not queue:
            return None, None
        head = queue[0]
        kind = head.kind
        same = queue if all(j.kind == kind for j in queue) else [j for j in queue if j.kind == kind]
        if self.length_aware and len(same) > 1:
            same = sorted(same, key=_tokens)
        batch: list[Job] = []
        tokens = 0
        max_reqs, max_tokens = self.max_reqs, self.max_tokens
        full = False
        for j in same:
            if len(batch) >= max_reqs:
                full = True
                break
            if batch and tokens + j.tokens > max_tokens:
                full = True
                break
            batch.append(j)
            tokens += j.tokens
        if not full and self.max_wait > 0.0 and now < head.arrival + self.max_wait and len(batch) < max_reqs:
            return None, head.arrival + self.max_wait
        if len(batch) == len(queue):
            queue.clear()
        else:
            chosen = set(map(id, batch))
            queue[:] = [j for j in queue if id(j) not in chosen]
        return batch, None


def _tokens(j: Job) -> int:
    return j.tokens
