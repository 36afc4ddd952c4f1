"""bench/awc_bound.py's causal bound: the backward pass over output positions against closed forms, brute force
and sampling."""

import importlib.util
import itertools
import sys
from pathlib import Path

import numpy as np
import pytest

from testbed.acceptance import AcceptanceModel, expected_tokens_per_round
from testbed.spec.schema import AcceptanceSpec

_path = Path(__file__).resolve().parent.parent / "bench" / "awc_bound.py"
_spec = importlib.util.spec_from_file_location("awc_bound", _path)
awc_bound = importlib.util.module_from_spec(_spec)
sys.modules["awc_bound"] = awc_bound
_spec.loader.exec_module(awc_bound)


def linear_costs(out: int, gmax: int, c0: float, c1: float) -> np.ndarray:
    """costs[p, g] = c0 + c1 g where the window is allowed (g <= out - p - 1), inf elsewhere (as Round.costs)."""
    c = np.full((out + 1, gmax + 1), np.inf)
    for p in range(1, out):
        for g in range(min(gmax, out - p - 1) + 1):
            c[p, g] = c0 + c1 * g
    return c


def test_long_request_optimum_is_the_best_static_window_in_closed_form():
    # constant costs, iid alpha: far from the end every state looks the same, so the best policy is a static window,
    # the one with the least cost per expected token (Leviathan et al.'s E[tokens per round])
    out, gmax, alpha, c0, c1 = 2001, 8, 0.8, 0.040, 0.004
    costs, probs = linear_costs(out, gmax, c0, c1), np.full(out, alpha)
    per_token = [(c0 + c1 * g) / expected_tokens_per_round(alpha, g) for g in range(gmax + 1)]
    g_best = int(np.argmin(per_token))
    assert 0 < g_best < gmax  # an interior optimum: the test can tell windows apart
    v, pol = awc_bound.causal_optimum(costs, probs)
    statics = [awc_bound.policy_value(costs, probs, lambda p, g=g: g)[1] for g in range(gmax + 1)]
    assert all(v[1] <= s + 1e-9 for s in statics)  # no static window does better in expectation
    assert int(np.argmin(statics)) == g_best
    # the renewal-reward rate, up to the end of the request (a few rounds)
    assert statics[g_best] == pytest.approx((out - 1) * per_token[g_best], abs=3 * (c0 + c1 * gmax))
    assert v[1] == pytest.approx(statics[g_best], abs=2 * (c0 + c1 * gmax))
    assert np.all(pol[1 : out - 3 * gmax] == g_best)  # the optimal policy is that window until the last rounds


def test_optimum_equals_brute_force_over_every_markov_policy():
    # a short request with position-dependent acceptance and costs: the minimum over all (gmax+1)^(out-1) policies
    # of their exact expected time, and those policies' values are what the backward pass finds for them
    out, gmax = 8, 3
    rng = np.random.default_rng(3)
    probs = rng.uniform(0.3, 0.95, out)
    costs = linear_costs(out, gmax, 0.05, 0.01) * rng.uniform(0.8, 1.2, (out + 1, gmax + 1))
    v, pol = awc_bound.causal_optimum(costs, probs)
    best = np.inf
    for choice in itertools.product(range(gmax + 1), repeat=out - 1):
        val = awc_bound.policy_value(costs, probs, lambda p: choice[p - 1])[1]
        assert val >= v[1] - 1e-12
        best = min(best, val)
    assert v[1] == pytest.approx(best, rel=1e-12)
    assert awc_bound.policy_value(costs, probs, lambda p: pol[p])[1] == pytest.approx(v[1], rel=1e-12)


def test_sampled_times_average_to_the_expected_value_with_the_projects_draws():
    out, gmax = 300, 6
    acc = AcceptanceModel(AcceptanceSpec(kind="iid", alpha=0.7))
    costs, probs = linear_costs(out, gmax, 0.03, 0.005), acc.probabilities(out)
    v, pol = awc_bound.causal_optimum(costs, probs)
    runs = np.array([acc.runs(seed, 17, out) for seed in range(4000)])
    for policy, value in (
        (pol, v[1]),
        (awc_bound.static_policy(out, 2), awc_bound.policy_value(costs, probs, lambda p: 2)[1]),
    ):
        t = awc_bound.sample_times(costs, policy, runs)
        assert abs(t.mean() - value) < 4 * t.std() / np.sqrt(len(t))


class _Compute:
    """Constant draft step and verify time (stand-ins for testbed.compute.Cost)."""

    def __init__(self, step: float, verify: float):
        self.step, self.verify = step, verify

    def draft_time(self, gamma: int, ctx_tokens: int, position: int) -> float:
        return gamma * self.step

    def verify_time(self, n_req: int, n_tokens: int, ctx_tokens: int) -> float:
        return self.verify + 0.001 * n_tokens


def _path(delay: float, opps=None):
    """A LowerPath of one hop: fixed delay, and a capacity trace's delivery opportunities (ms) if given."""
    p = awc_bound.LowerPath([])
    p.hops = [(delay, 0.0, opps)]
    return p


def _round(up_opps=None):
    return awc_bound.Round(_Compute(0.01, 0.015), _path(0.02, up_opps), _path(0.02), _Compute(0.01, 0.015), 100, 1)


def test_timed_pass_on_a_steady_link_is_the_ideal_pass_less_the_grid():
    out, gmax, t0 = 120, 6, 3.0
    rnd = _round()
    probs = np.full(out, 0.75)
    v, _ = awc_bound.causal_optimum(rnd.costs(out, gmax), probs)
    tr = awc_bound.TimedRounds(rnd, out, gmax, t0, 30.0)
    tv, _ = awc_bound.timed_optimum(tr, probs, tr.t0 + tr.step * np.arange(tr.k_max + 1))
    rounds = out - 1  # at most one round per token, each at most 3 grid steps early
    assert t0 + v[1] - 3 * tr.step * rounds <= tv[0] <= t0 + v[1] + 1e-9


def test_timed_pass_knows_an_outage_and_bounds_every_policy():
    # the uplink offers a delivery opportunity every millisecond except during a 1.5 s outage from 4.0 s
    ms = np.arange(0, 100_000)
    opps = ms[(ms < 4000) | (ms >= 5500)]
    out, gmax, t0 = 150, 8, 3.0
    rnd = _round(opps)
    acc = AcceptanceModel(AcceptanceSpec(kind="iid", alpha=0.7))
    probs = acc.probabilities(out)
    tr = awc_bound.TimedRounds(rnd, out, gmax, t0, 30.0)
    grid = tr.t0 + tr.step * np.arange(tr.k_max + 1)
    tv, pol = awc_bound.timed_optimum(tr, probs, grid)
    runs = np.array([acc.runs(seed, 9, out) for seed in range(2000)])
    opt = awc_bound.sample_timed(tr, pol, runs)
    assert abs(opt.mean() - tv[0]) < 4 * opt.std() / np.sqrt(len(opt))
    statics = [awc_bound.sample_timed(tr, awc_bound.static_policy(out, g), runs) for g in range(gmax + 1)]
    assert all(opt.mean() <= s.mean() for s in statics)  # same draws: the optimum is at least as good on average
    # a round sent into the outage waits anyway: the optimum drafts the largest window at some state in it
    k_out = int(round((4.05 - tr.t0) / tr.step))
    assert (pol[1:out, k_out] == np.minimum(gmax, out - 1 - np.arange(1, out))).any()
    deadline = float(np.percentile(statics[2], 50))
    p_in, _ = awc_bound.timed_optimum(tr, probs, (grid <= deadline) * 1.0, maximise=True)
    for t in statics + [opt]:
        frac = (t <= deadline).mean()
        assert frac <= p_in[0] + 3 * np.sqrt(max(p_in[0] * (1 - p_in[0]), 1e-4) / len(t))


def test_stall_rules_know_only_the_past():
    ms = np.arange(0, 100_000)
    opps = ms[(ms < 4000) | (ms >= 5500)]
    rnd = _round(opps)
    tr = awc_bound.TimedRounds(rnd, 40, 8, 3.0, 5.0)
    rules, stalled = awc_bound.stall_rules(tr, rnd, (3,))
    r = rules[(3, 0.05, 8)]
    k = lambda t: int(round((t - tr.t0) / tr.step))  # noqa: E731
    assert r[1, k(4.04)] == 3 and r[1, k(4.06)] == 8 and r[1, k(5.6)] == 3  # 50 ms into the outage, then over
    assert r[38, k(4.5)] == 1  # clamped at the end
    assert stalled[0.05] == pytest.approx((1.5 - 0.05) / 5.0, abs=2e-3)  # of the grid's 5 s, the outage less 50 ms


def test_lookahead_rules_see_the_outage_one_round_ahead():
    ms = np.arange(0, 100_000)
    rnd = _round(ms[(ms < 4000) | (ms >= 5500)])
    tr = awc_bound.TimedRounds(rnd, 40, 8, 3.0, 5.0)
    r = awc_bound.lookahead_rules(tr, (3,))[(3, 0.3, 8)]
    k = lambda t: int(round((t - tr.t0) / tr.step))  # noqa: E731
    # a window-3 round drafts 30 ms: started at 3.9 s its VERIFY goes out at 3.93 s (through); at 3.99 s into the
    # outage (back after 5.5 s: over 300 ms); at 5.3 s it waits 0.2 s only
    assert r[1, k(3.9)] == 3 and r[1, k(3.99)] == 8 and r[1, k(5.3)] == 3 and r[1, k(5.6)] == 3


def test_rounds_on_a_draw_follow_each_other_and_one_waits_for_the_outage():
    ms = np.arange(0, 100_000)
    rnd = _round(ms[(ms < 4000) | (ms >= 5500)])
    tr = awc_bound.TimedRounds(rnd, 200, 4, 3.0, 20.0)
    runs = AcceptanceModel(AcceptanceSpec(kind="iid", alpha=0.7)).runs(1, 2, 200)
    rounds = awc_bound.rounds_on(tr, awc_bound.static_policy(200, 4), runs)
    ((start, g, dur),) = [r for r in rounds if r[2] > 0.3]
    assert g == 4 and start < 4.0 and start + dur >= 5.5  # sent into the outage, back after it
    assert rounds[0][0] == 3.0
    assert all(b[0] == pytest.approx(a[0] + a[2]) for a, b in zip(rounds, rounds[1:]))  # back to back
