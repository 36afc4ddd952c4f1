"""One request's progress through speculation rounds (DESIGN.md "shared semantics"), used by the
simulator's drafts and by draft nodes, plus the verifier's acceptance rule used by the simulator's targets
and by target nodes.

    first token (prefill)  -> produced = 1
    each round             -> gamma = policy's choice clamped to what is left (acceptance.clamp_gamma);
                              accepted = min(run of accepted positions from `produced`, gamma);
                              produced += accepted + 1
    done                   when produced == output_tokens (the last round is truncated by the clamp)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from testbed import tables
from testbed.acceptance import clamp_gamma
from testbed.policies.window import RoundFeedback, WindowController


class RequestProgress:
    __slots__ = (
        "request_id",
        "prompt_tokens",
        "output_tokens",
        "produced",
        "rounds",
        "drafted",
        "accepted",
        "controller",
        "gamma_max",
        "speculate",
    )

    def __init__(
        self,
        request_id: int,
        prompt_tokens: int,
        output_tokens: int,
        controller: WindowController,
        gamma_max: int,
        speculate: bool = True,
    ):
        self.request_id = request_id
        self.prompt_tokens = prompt_tokens
        self.output_tokens = output_tokens
        self.produced = 0
        self.rounds = 0
        self.drafted = 0
        self.accepted = 0
        self.controller = controller
        self.gamma_max = gamma_max
        self.speculate = speculate  # False: autoregressive mode, every round is a gamma = 0 decode step

    def first_token(self) -> bool:
        """The prefill's token arrived; True if the request is already complete. (A request re-routed to
        another target is prefilled again with its prompt and the tokens produced so far: that prefill's token
        is one more; testbed/faults.py rule 2.)"""
        self.produced += 1
        return self.produced >= self.output_tokens

    def next_gamma(self) -> int:
        if not self.speculate:
            return 0
        return clamp_gamma(self.controller.next_gamma(), self.produced, self.output_tokens, self.gamma_max)

    def context(self) -> int:
        """Tokens of context before the next round: prompt plus produced output."""
        return self.prompt_tokens + self.produced

    def apply(self, gamma: int, accepted: int, fb: RoundFeedback | None) -> bool:
        """Apply a round's result; True when the request is complete."""
        self.rounds += 1
        self.drafted += gamma
        self.accepted += accepted
        self.produced += accepted + 1
        if fb is not None:
            self.controller.observe(fb)
        return self.produced >= self.output_tokens


def request_row(
    p: RequestProgress,
    edge: str | int,
    target: str | int,
    arrival_s: float,
    prefill_sent_s: float,
    first_token_s: float,
    finish_s: float,
    status: str,
) -> tuple:
    """The requests-table row of a request that started (simulator and draft nodes)."""
    return tables.request_row(
        request_id=p.request_id,
        edge=edge,
        target=target,
        arrival_s=arrival_s,
        prefill_sent_s=prefill_sent_s,
        first_token_s=first_token_s,
        finish_s=finish_s,
        prompt_tokens=p.prompt_tokens,
        output_tokens=p.output_tokens,
        tokens_out=p.produced,
        rounds=p.rounds,
        drafted_tokens=p.drafted,
        accepted_tokens=p.accepted,
        status=status,
    )


def round_row(
    p: RequestProgress,
    edge: str | int,
    target: str | int,
    gamma: int,
    accepted: int,
    draft_start_s: float,
    send_s: float,
    target_recv_s: float,
    batch_start_s: float,
    batch_end_s: float,
    recv_s: float,
    batch_size: int,
    queue_depth: int,
) -> tuple:
    """The rounds-table row of the round whose result is about to be applied (`p` still holds the state before
    it): simulator, draft nodes and co-located rounds at target nodes."""
    return tables.round_row(
        request_id=p.request_id,
        round=p.rounds,
        edge=edge,
        target=target,
        produced=p.produced,
        gamma=gamma,
        accepted=accepted,
        draft_start_s=draft_start_s,
        send_s=send_s,
        target_recv_s=target_recv_s,
        batch_start_s=batch_start_s,
        batch_end_s=batch_end_s,
        recv_s=recv_s,
        batch_size=batch_size,
        queue_depth=queue_depth,
    )


def verify(runs: list[int], produced: int, gamma: int) -> int:
    """The verifier's rule: accepted = the run of accepted positions from `produced`, capped at gamma."""
    r = runs[produced] if produced < len(runs) else 0
    return r if r < gamma else gamma


class DraftSlots:
    """A drafter's draft slots (node.draft_slots; 0 = unlimited): a round drafts at once when a slot is free,
    otherwise it waits in FIFO order; a finished draft hands its slot to the next waiting round."""

    __slots__ = ("slots", "busy", "waiting")

    def __init__(self, slots: int):
        self.slots = slots
        self.busy = 0
        self.waiting: deque[Any] = deque()

    def acquire(self, req: Any) -> bool:
        """True: `req` holds a slot now and drafts; False: it waits for one (handed over by `release`)."""
        if self.slots == 0 or self.busy < self.slots:
            self.busy += 1
            return True
        self.waiting.append(req)
        return False

    def release(self, usable: Callable[[Any], bool] | None = None) -> Any:
        """A draft finished: the next waiting request (skipping those `usable` rejects) takes over its slot and
        is returned, or the slot becomes free and None is returned."""
        q = self.waiting
        while q:
            nxt = q.popleft()
            if usable is None or usable(nxt):
                return nxt
        self.busy -= 1
        return None
