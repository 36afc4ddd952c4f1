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

from testbed.acceptance import clamp_gamma
from testbed.policies.window import RoundFeedback, WindowController


class RequestProgress:
    __slots__ = ("request_id", "prompt_tokens", "output_tokens", "produced", "rounds", "drafted", "accepted",
                 "controller", "gamma_max", "speculate")

    def __init__(self, request_id: int, prompt_tokens: int, output_tokens: int, controller: WindowController,
                 gamma_max: int, speculate: bool = True):
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
        """The prefill's token arrived; True if the request is already complete."""
        self.produced = 1
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


def verify(runs: list[int], produced: int, gamma: int) -> int:
    """The verifier's rule: accepted = the run of accepted positions from `produced`, capped at gamma."""
    r = runs[produced] if produced < len(runs) else 0
    return r if r < gamma else gamma
