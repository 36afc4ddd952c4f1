"""Window (gamma) policies: one interface, called per round by the simulator's drafts and by draft nodes.

A `WindowPolicy` is a factory; each request gets its own `WindowController`, which proposes the next
gamma and observes each round's outcome. Forms accepted in specs and on the command line:

    static:G          always G
    hf[:G0]           HuggingFace assisted-generation heuristic: start at G0 (5), +2 when all drafted
                      tokens were accepted, -1 otherwise, at least 1
    specdec[:H]       acceptance-threshold rule in the spirit of SpecDec++: the largest gamma whose
                      probability of at least one rejection, 1 - a^gamma, stays <= H (0.7), with `a` an
                      exponentially weighted estimate of the per-token acceptance
    awc[:WEIGHTS]     learned Adaptive Window Control (needs the awc module; see testbed/policies/awc.py)
    py:MODULE:FACTORY[:ARG]
                      your own policy: FACTORY(ARG or None) of an importable module (examples/custom_window.py)
    awc-rollout:...   training only, registered by testbed/awc/rollout.py (register_window_policy): BASE until
                      the run's K-th decision, then a fixed window
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


@dataclass(slots=True)
class RoundFeedback:
    """What a draft learns from one round (all times in seconds)."""

    gamma: int
    accepted: int
    rtt_s: float  # VERIFY sent -> VERIFY_RESULT received
    verify_s: float  # the target's batch execution time for this round
    queue_depth: int  # the target's queue depth reported with the result
    draft_s: float  # time spent drafting this round's tokens

    @staticmethod
    def of_round(
        gamma: int,
        accepted: int,
        draft_start: float,
        send: float,
        batch_start: float,
        batch_end: float,
        recv: float,
        queue_depth: int,
    ) -> "RoundFeedback":
        """The feedback of one round from its timestamps (the rounds table's columns, any one clock): the only
        place where the simulator's drafts, draft nodes, co-located rounds at a target node and AWC data
        generation turn a round's times into feedback."""
        return RoundFeedback(gamma, accepted, recv - send, batch_end - batch_start, queue_depth, send - draft_start)


class DecayedAcceptance:
    """Per-token acceptance estimate of one request: exponentially decayed pseudo-counts of accepted tokens and
    of rejections (a round with accepted < gamma); alpha = acc / (acc + rej), the censored-geometric estimate.

    The prior (alpha 0.7 worth PRIOR_WEIGHT tokens) is what a request starts from; each round decays the
    counts by `decay`. Used by the specdec policy and by AWC's features (testbed/policies/features.py)."""

    PRIOR_ALPHA = 0.7
    # 2 pseudo-tokens: less than one typical round (gamma 4 gives up to 4 accepted + 1 rejection), so the first
    # observed round outweighs the prior. AWC's shipped weights were trained on features with this prior.
    PRIOR_WEIGHT = 2.0
    DECAY = 0.8

    __slots__ = ("acc", "rej", "decay")

    def __init__(self, prior_alpha: float = PRIOR_ALPHA, prior_weight: float = PRIOR_WEIGHT, decay: float = DECAY):
        self.acc = prior_alpha * prior_weight
        self.rej = (1.0 - prior_alpha) * prior_weight
        self.decay = decay

    @property
    def alpha(self) -> float:
        return self.acc / (self.acc + self.rej)

    def update(self, gamma: int, accepted: int) -> None:
        """One round with gamma > 0 (a truncated final round, gamma 0, says nothing about the draft)."""
        d = self.decay
        self.acc = self.acc * d + accepted
        self.rej = self.rej * d + (1.0 if accepted < gamma else 0.0)


class WindowController(Protocol):
    def next_gamma(self) -> int: ...

    def observe(self, fb: RoundFeedback) -> None: ...


class WindowPolicy(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def observes(self) -> bool:
        """False: the controller ignores feedback (callers may skip building it)."""
        ...

    def controller(self, context_tokens: int, gamma_max: int) -> WindowController: ...


class _Fixed:
    __slots__ = ("gamma",)

    def __init__(self, gamma: int):
        self.gamma = gamma

    def next_gamma(self) -> int:
        return self.gamma

    def observe(self, fb: RoundFeedback) -> None:
        pass


@dataclass(frozen=True)
class StaticWindow:
    gamma: int
    name: str = "static"
    observes: bool = False

    def controller(self, context_tokens: int, gamma_max: int) -> WindowController:
        return _Fixed(min(self.gamma, gamma_max))


class _HFController:
    __slots__ = ("gamma", "gamma_max")

    def __init__(self, gamma0: int, gamma_max: int):
        self.gamma = min(gamma0, gamma_max)
        self.gamma_max = gamma_max

    def next_gamma(self) -> int:
        return self.gamma

    def observe(self, fb: RoundFeedback) -> None:
        if fb.gamma <= 0:
            return  # a truncated final round says nothing about the draft
        if fb.accepted == fb.gamma:
            self.gamma = min(self.gamma + 2, self.gamma_max)
        else:
            self.gamma = max(1, self.gamma - 1)


@dataclass(frozen=True)
class HFHeuristic:
    gamma0: int = 5
    name: str = "hf"
    observes: bool = True

    def controller(self, context_tokens: int, gamma_max: int) -> WindowController:
        return _HFController(self.gamma0, gamma_max)


class _SpecDecController:
    __slots__ = ("h_log", "gamma_max", "est")

    def __init__(self, threshold: float, gamma_max: int):
        self.h_log = math.log(1.0 - threshold)
        self.gamma_max = gamma_max
        self.est = DecayedAcceptance()

    def next_gamma(self) -> int:
        a = self.est.alpha
        if a >= 0.999:
            return self.gamma_max
        if a <= 1e-6:
            return 1
        return max(1, min(self.gamma_max, int(self.h_log / math.log(a))))

    def observe(self, fb: RoundFeedback) -> None:
        if fb.gamma > 0:
            self.est.update(fb.gamma, fb.accepted)


@dataclass(frozen=True)
class SpecDecThreshold:
    threshold: float = 0.7
    name: str = "specdec"
    observes: bool = True

    def controller(self, context_tokens: int, gamma_max: int) -> WindowController:
        return _SpecDecController(self.threshold, gamma_max)


FORMS = "static:G (G >= 1), hf[:G0], specdec[:H] (0 < H < 1), awc[:WEIGHTS], py:MODULE:FACTORY[:ARG]"

# Forms registered by other packages (kind -> parser of the text after "kind:"), e.g. awc-rollout by testbed/awc.
_REGISTERED: dict[str, Callable[[str], WindowPolicy]] = {}


def register_window_policy(kind: str, parse: Callable[[str], WindowPolicy]) -> None:
    """Accept the form KIND:ARG in parse_window_policy from now on, in this process (`parse` gets ARG and raises
    ValueError when it is bad). Node programs run in their own processes: a policy they must know too is given
    as py:MODULE:FACTORY instead, which every process imports by itself."""
    _REGISTERED[kind] = parse


def _plugin(arg: str) -> WindowPolicy:
    """py:MODULE:FACTORY[:ARG]: FACTORY(ARG or None) from an importable module returns the policy."""
    module, _, rest = arg.partition(":")
    name, _, farg = rest.partition(":")
    if not module or not name:
        raise ValueError("window policy py:MODULE:FACTORY[:ARG]: module and factory are required")
    try:
        factory = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"window policy py:{module}:{name}: {e}") from None
    policy = factory(farg or None)
    if not callable(getattr(policy, "controller", None)):
        raise ValueError(f"window policy py:{module}:{name}: the factory returned {policy!r}, not a window policy")
    return policy


def parse_window_policy(text: str) -> WindowPolicy:
    """Parse 'static:4', 'hf', 'hf:3', 'specdec:0.6', 'awc', ...; ValueError naming the accepted forms."""
    kind, _, arg = text.strip().partition(":")
    try:
        if kind == "static":
            g = int(arg)
            if g < 1:
                raise ValueError
            return StaticWindow(g)
        if kind == "hf":
            g0 = int(arg) if arg else 5
            if g0 < 1:
                raise ValueError
            return HFHeuristic(g0)
        if kind == "specdec":
            h = float(arg) if arg else 0.7
            if not 0.0 < h < 1.0:
                raise ValueError
            return SpecDecThreshold(h)
        if kind == "awc":
            try:
                from testbed.policies.awc import load_awc_policy  # type: ignore[import-not-found,import-untyped,unused-ignore]
            except ImportError as e:
                raise ValueError(f"window policy 'awc' is not available: {e}") from None
            return load_awc_policy(arg or None)
        if kind == "py":
            return _plugin(arg)
        if kind in _REGISTERED:
            return _REGISTERED[kind](arg)
    except (ValueError, TypeError) as e:
        if str(e).startswith("window policy"):
            raise

    raise ValueError(f"unknown window policy {text!r}; accepted forms: {FORMS}")
