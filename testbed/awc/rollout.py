"""The rollout window policy used to label AWC training data (training only; simulator only).

    awc-rollout:K/G/N/R/BASE

follows BASE (any window form, e.g. static:4 or hf) for every request until the run's K-th window
decision (decisions are counted over all requests, in the order the simulator asks for them), then
returns the fixed window G for every later decision of the requests whose arrival index i (= order of
controller creation, = trace row) has i mod N in R (R: residues joined by '.', e.g. '0.1'; N = 1, R = 0:
all requests). With round-robin edge mapping, N = number of drafts and R = the drafts of one class.

Because the simulator is deterministic, a run with this policy is identical to a run of BASE up to the
K-th decision: each candidate G continues from the same state (same events, same queues, same RNG
draws). The decision counter lives in the policy instance, which the simulator creates once per run.
"""

from __future__ import annotations

from testbed.policies.window import (
    RoundFeedback,
    WindowController,
    WindowPolicy,
    parse_window_policy,
    register_window_policy,
)


class _RolloutController:
    __slots__ = ("policy", "base", "switched", "gamma")

    def __init__(self, policy: "RolloutPolicy", base: WindowController, switched: bool, gamma: int):
        self.policy = policy
        self.base = base
        self.switched = switched
        self.gamma = gamma

    def next_gamma(self) -> int:
        p = self.policy
        k = p.calls
        p.calls = k + 1
        if self.switched and k >= p.switch_at:
            return self.gamma
        return self.base.next_gamma()

    def observe(self, fb: RoundFeedback) -> None:
        self.base.observe(fb)


class RolloutPolicy:
    name = "awc-rollout"
    observes = True

    def __init__(self, switch_at: int, gamma: int, modulus: int, residues: frozenset[int], base: WindowPolicy):
        self.switch_at = switch_at
        self.gamma = gamma
        self.modulus = modulus
        self.residues = residues
        self.base = base
        self.calls = 0  # window decisions asked so far in this run
        self.created = 0  # controllers created so far (arrival index of the next request)

    def controller(self, context_tokens: int, gamma_max: int) -> WindowController:
        i = self.created
        self.created = i + 1
        return _RolloutController(
            self,
            self.base.controller(context_tokens, gamma_max),
            i % self.modulus in self.residues,
            min(self.gamma, gamma_max),
        )


def rollout_form(switch_at: int, gamma: int, modulus: int, residues: list[int] | tuple[int, ...], base: str) -> str:
    return f"awc-rollout:{switch_at}/{gamma}/{modulus}/{'.'.join(str(r) for r in residues)}/{base}"


def parse_rollout_policy(arg: str) -> RolloutPolicy:
    k, g, n, r, base = arg.split("/", 4)
    switch_at, gamma, modulus = int(k), int(g), int(n)
    residues = frozenset(int(x) for x in r.split("."))
    if switch_at < 0 or gamma < 1 or modulus < 1:
        raise ValueError(arg)
    return RolloutPolicy(switch_at, gamma, modulus, residues, parse_window_policy(base))


register_window_policy("awc-rollout", parse_rollout_policy)
