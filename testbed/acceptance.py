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

_GOLDEN = 0x9E3779B97F4A7C15
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB
_U64 = (1 << 64) - 1
_GOLDEN_A, _M1_A, _M2_A = np.uint64(_GOLDEN), np.uint64(_M1), np.uint64(_M2)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)


def _mix_int(x: int) -> int:
    """splitmix64 finaliser on one value (a bijection on uint64 with good avalanche), modulo 2**64."""
    x = ((x ^ (x >> 30)) * _M1) & _U64
    x = ((x ^ (x >> 27)) * _M2) & _U64
    return x ^ (x >> 31)


def _mix(x: np.ndarray) -> np.ndarray:
    """_mix_int on every element of a uint64 array (array arithmetic wraps modulo 2**64 silently)."""
    x = (x ^ (x >> _S30)) * _M1_A
    x = (x ^ (x >> _S27)) * _M2_A
    return x ^ (x >> _S31)


def uniforms(seed: int, request_id: int, n: int, stream: int = 0) -> np.ndarray:
    """n uniform floats in [0, 1) for positions 0..n-1 of one request: a pure function of its arguments. Negative
    seeds and request ids (a node's warm-up request is -1) are taken modulo 2**64. The request's key is computed on
    Python ints (one value: numpy's per-call overhead and its scalar overflow checks cost more than the arithmetic),
    the positions on an array."""
    key = _mix_int((seed & _U64) ^ _mix_int((((request_id * 4 + stream) & _U64) + _GOLDEN) & _U64))
    u = _mix(np.uint64(key) + np.arange(n, dtype=np.uint64) * _GOLDEN_A)
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


def accepted_runs(seq: np.ndarray | list[bool]) -> list[int]:
    """Run lengths of True from each position (plus a trailing 0), for sequences from any source."""
    flags = seq.tolist() if isinstance(seq, np.ndarray) else list(seq)
    n = len(flags)
    out = [0] * (n + 1)
    run = 0
    for j in range(n - 1, -1, -1):  # a loop over a list: with the int key, 47 vs 87 us per 250-token request
        run = run + 1 if flags[j] else 0
        out[j] = run
    return out


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
