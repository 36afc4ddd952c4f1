"""Acceptance model shared by the simulator and the profiled node backend (DESIGN.md, "shared semantics").

Under greedy speculative decoding, whether the draft agrees with the target at output position j (given
the correct prefix) is a property of the position, not of the window or of timing. A request's acceptance
is therefore a sequence of booleans over its output positions, drawn from a counter-based generator keyed
by (seed, request id, position): any process can recompute it, in any order, and gets the same values.

Position 0 is the token of the prefill (always the target's). A round that starts when k tokens exist and
drafts gamma tokens proposes positions k .. k+gamma-1 and accepts the run of True from k, capped at gamma;
it gains accepted + 1 tokens (the target's correction, or the bonus token when all were accepted).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from testbed.spec.schema import AcceptanceSpec

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)


_U64 = (1 << 64) - 1


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser (a bijection on uint64 with good avalanche); wraps modulo 2**64."""
    x = (x ^ (x >> _S30)) * _M1
    x = (x ^ (x >> _S27)) * _M2
    return x ^ (x >> _S31)


def uniforms(seed: int, request_id: int, n: int, stream: int = 0) -> np.ndarray:
    """n uniform floats in [0, 1) for positions 0..n-1 of one request: a pure function of its arguments. Negative
    seeds and request ids (a node's warm-up request is -1) are taken modulo 2**64."""
    with np.errstate(over="ignore"):
        rid = np.array([(request_id * 4 + stream) & _U64], dtype=np.uint64)
        key = _mix(np.array([seed & _U64], dtype=np.uint64) ^ _mix(rid + _GOLDEN))
        ctr = np.arange(n, dtype=np.uint64)
        u = _mix(key + ctr * _GOLDEN)
    return (u >> _S11).astype(np.float64) * (1.0 / 9007199254740992.0)


@dataclass(frozen=True)
class AcceptanceModel:
    """Per-position acceptance probabilities; `sequence` draws a request's booleans."""

    spec: AcceptanceSpec

    def probabilities(self, n: int) -> np.ndarray:
        s = self.spec
        j = np.arange(n, dtype=np.float64)
        if s.kind == "recorded":
            return np.full(n, self._recorded().rate)
        if s.kind == "iid":
            return np.full(n, s.alpha)
        if s.kind == "position_decay":
            return s.alpha_end + (s.alpha - s.alpha_end) * np.exp(-j / s.decay_tokens)
        table = np.asarray(s.table or [s.alpha], dtype=np.float64)
        idx = np.minimum(np.arange(n), len(table) - 1)
        return table[idx]

    def sequence(self, seed: int, request_id: int, n: int) -> np.ndarray:
        """Booleans over output positions 0..n-1 (position 0, the prefill token, is never used)."""
        if self.spec.kind == "recorded":
            return self._recorded().sequence(seed, request_id, n)
        return uniforms(seed, request_id, n) < self.probabilities(n)

    def _recorded(self):
        from testbed.acceptance_recorded import load_recorded  # sequences recorded from real models

        return load_recorded(str(self.spec.path))

    def runs(self, seed: int, request_id: int, n: int) -> list[int]:
        """runs[k] = number of consecutive accepted positions starting at k (k = 0..n; runs[n] = 0).

        A round starting at k with window gamma accepts min(runs[k], gamma) tokens: O(1) per round.
        """
        return accepted_runs(self.sequence(seed, request_id, n))


def accepted_runs(seq: np.ndarray) -> list[int]:
    """Run lengths of True from each position (plus a trailing 0), for sequences from any source."""
    n = len(seq)
    idx = np.arange(n + 1)
    false_at = np.where(np.append(~np.asarray(seq, dtype=bool), True), idx, n)
    next_false = np.minimum.accumulate(false_at[::-1])[::-1]
    return (next_false - idx).tolist()


def clamp_gamma(gamma: int, produced: int, output_tokens: int, gamma_max: int) -> int:
    """The window actually drafted: the policy's gamma, bounded by gamma_max and by what is left.

    With `produced` tokens out of `output_tokens`, at most output_tokens - produced - 1 are drafted, since
    the target adds one token per round; a round with gamma = 0 is a plain target decode step.
    """
    return max(0, min(gamma, gamma_max, output_tokens - produced - 1))


def expected_tokens_per_round(alpha: float, gamma: int) -> float:
    """Leviathan et al.: E[tokens per round] = (1 - alpha^(gamma+1)) / (1 - alpha) for iid acceptance."""
    if alpha >= 1.0:
        return float(gamma + 1)
    return (1.0 - alpha ** (gamma + 1)) / (1.0 - alpha)
