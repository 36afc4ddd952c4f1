"""`python bench/bench_awc.py --changing-links TOPOLOGY`: the window policies on one topology and an upper bound on
what any window policy could get there (the AWC goal of issue 12: >= 10 % more goodput than the best static window).

The bound. goodput = requests meeting both SLOs / duration, duration >= every request's finish and the last arrival
(testbed/metrics.py). For each request alone in the system (no other request's traffic, batches or draft work),
with an oracle that knows its acceptance sequence (the same per-position draws every policy faces,
AcceptanceModel.runs) and may choose any window each round:
- first token >= arrival + PREFILL up + prefill of the prompt alone + PREFILL_DONE down;
- finish >= the earliest time the oracle reaches the last token from that first token: a shortest-path over output
  positions (a round at position p with window g <= the accepted run there yields g + 1 tokens; a larger window
  only costs more) with each round's draft time, VERIFY up, verify of the request alone, VERIFY_RESULT down;
- TPOT >= the same shortest path with every link at its smallest propagation delay and no waiting for capacity
  (time-independent: TPOT's start, the first token, may come later under load).
Links: a capacity-trace hop is crossed at its earliest delivery opportunities for the message's bytes with an empty
queue, a rate-limited hop at its highest rate, then the smallest delay any step gives it (0 with jitter).
Each is a lower bound because the compute costs are linear with non-negative terms (a batch costs a request at
least what it costs alone), queues only add waiting, and FIFO crossings make a later start never finish earlier.
So no window policy can do better than (requests whose lower-bound TTFT and TPOT meet the SLOs) / max(last arrival,
largest lower-bound finish). Over the arrival window (testbed.metrics.window_goodput: SLO-meeting requests finishing
between the first and the last arrival, per second of it) the bound counts the requests that also can finish inside.

That oracle knows every acceptance draw. For the request that sets the duration, `tail_request` bounds what a CAUSAL
window policy (one that knows the acceptance model, not the draws to come) can expect: the least expected finish
by a backward pass over output positions (causal_optimum: links ideal; timed_optimum: with the links' capacity
waits, the link schedule known in advance), the optimal policy's finish over independent acceptance draws, and an
upper bound on the probability of finishing early enough for the goal (+10 % needs the duration <= the most
SLO-meeting requests / (1.1 x the best static goodput)). goodput = good / duration is a ratio of random
quantities: what is bounded is that request's finish (its expectation and that probability), not E[goodput].
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from testbed import wire
from testbed.acceptance import AcceptanceModel
from testbed.metrics import in_window, window_goodput
from testbed.sim import simulate
from testbed.sim.network import ETH_BYTES, SimNetwork
from testbed.spec import load_scenario
from testbed.workload import build_workload

POLICIES = [f"static:{g}" for g in range(1, 9)] + ["hf", "specdec", "awc"]
HORIZON_MS = 1_000_000  # trace opportunities looked up to this run time


class LowerPath:
    """Contention-free crossing times of one path (see the module docstring)."""

    def __init__(self, hops):
        self.hops = []
        for h in hops:
            delays = [h.delay] + ([st.delay_ms / 1e3 for st in h.steps] if h.steps is not None else [])
            jitter = h.jitter > 0 or (h.steps is not None and any(st.jitter_ms > 0 for st in h.steps))
            times = [h.byte_time] + (
                [8.0 / (st.bw_mbps * 1e6) if st.bw_mbps else 0.0 for st in h.steps] if h.steps else []
            )
            opps = h.trace.trace.opportunities(0, HORIZON_MS) if h.trace is not None else None
            self.hops.append((0.0 if jitter else min(delays), min(times), opps))

    def cross(self, t, payload: int, timed: bool):
        """Arrival of a message sent at t (a float, or an array of send times)."""
        segs = -(-payload // wire.MSS)
        nbytes = payload + segs * wire.HEADER_BYTES
        for delay, bt, opps in self.hops:
            if opps is not None:
                if timed and isinstance(t, np.ndarray):
                    k = np.searchsorted(opps, (t * 1e3).astype(np.int64), "left") + _more(nbytes, segs) - 1
                    t = np.maximum(t, opps[k] / 1e3)
                elif timed:
                    k = int(np.searchsorted(opps, int(t * 1e3), "left")) + _more(nbytes, segs) - 1
                    t = max(t, opps[k] / 1e3)
            else:
                t = t + nbytes * bt  # not in place: t may be an array the caller keeps
            t = t + delay
        return t


def _more(nbytes: int, segs: int) -> int:
    """Delivery opportunities a message needs beyond its first."""
    return -(-(nbytes - segs * ETH_BYTES) // 1500)


class Round:
    """One speculation round of one request alone: draft, VERIFY up, verify alone, VERIFY_RESULT down."""

    def __init__(self, draft, up: LowerPath, down: LowerPath, target, prompt: int, topk: int):
        self.draft, self.up, self.down, self.target, self.prompt, self.topk = draft, up, down, target, prompt, topk

    def end(self, t0: float, p: int, g: int, timed: bool) -> float:
        """Earliest end of a round started at t0 when p output tokens exist, drafting g (timed: trace waits)."""
        ctx = self.prompt + p
        t = t0 + self.draft.draft_time(g, ctx, p)
        t = self.up.cross(t, wire.payload_bytes("VERIFY", g, self.topk), timed) + self.target.verify_time(1, g + 1, ctx)
        return self.down.cross(t, wire.payload_bytes("VERIFY_RESULT", 1), timed)

    def costs(self, out: int, gmax: int) -> np.ndarray:
        """costs[p, g]: time-independent lower bound of a round at p drafting g (inf where g > out - p - 1)."""
        c = np.full((out + 1, gmax + 1), np.inf)
        for p in range(1, out):
            for g in range(min(gmax, out - p - 1) + 1):
                c[p, g] = self.end(0.0, p, g, False)
        return c


def request_rounds(scenario, wl, net, i: int, _paths: dict | None = None):
    """(lower-bound first token time, Round) of request i alone, per target it can reach."""
    spec = scenario.spec
    tr = wl.trace
    edge = scenario.drafts[int(wl.edge_index[i])]
    a, prompt = float(tr.arrival_s[i]), int(tr.prompt_tokens[i])
    paths = {} if _paths is None else _paths
    for tname in scenario.reachable[edge]:
        key = (edge, tname)
        if key not in paths:
            paths[key] = (LowerPath(net.path(edge, tname).hops), LowerPath(net.path(tname, edge).hops))
        up, down = paths[key]
        tc = scenario.compute[tname]
        f = up.cross(a, wire.payload_bytes("PREFILL", prompt), True) + tc.prefill_time([prompt])
        f = down.cross(f, wire.payload_bytes("PREFILL_DONE", 1), True)
        yield f, Round(scenario.compute[edge], up, down, tc, prompt, wire.verify_topk(spec.models.temperature))


def request_bounds(scenario, wl, net) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per request: lower bounds of first token time, finish time and TPOT (s) over every window policy."""
    spec = scenario.spec
    acc = AcceptanceModel(spec.models.acceptance)
    gmax = spec.policy.gamma_max
    tr = wl.trace
    paths: dict = {}
    n = len(tr.arrival_s)
    first, finish, tpot = np.full(n, np.inf), np.full(n, np.inf), np.full(n, np.inf)
    for i in range(n):
        out = int(wl.output_tokens[i])
        runs = acc.runs(spec.seed, int(tr.request_id[i]), out)
        for f, rnd in request_rounds(scenario, wl, net, i, paths):
            first[i] = min(first[i], f)
            for timed in (True, False):
                e = np.full(out + 1, np.inf)
                e[1] = f if timed else 0.0
                for p in range(1, out):
                    t0 = e[p]
                    if t0 == np.inf:
                        continue
                    for g in range(0, min(runs[p] if p < len(runs) else 0, gmax, out - p - 1) + 1):
                        t = rnd.end(t0, p, g, timed)
                        if t < e[p + g + 1]:
                            e[p + g + 1] = t
                if timed:
                    finish[i] = min(finish[i], e[out])
                else:
                    tpot[i] = min(tpot[i], e[out] / (out - 1) if out > 1 else 0.0)
    return first, finish, tpot


# ---- causal window policies (they do not know future acceptances) ----------------------------------------------
#
# A causal policy picks each round's window from what it has seen (and, generously, the whole link schedule); the
# acceptance of each position is an independent draw with the model's per-position probability (iid alpha,
# position_decay, table: exact; recorded: its mean rate, an assumption — its real draws are correlated). Tokens
# left is then a sufficient state: a round at p (tokens existing) drafting g proposes positions p .. p+g-1 and
# accepts j of them with P(j) = a_p ... a_(p+j-1) (1 - a_(p+j)) for j < g, a_p ... a_(p+g-1) for j = g, gaining
# j + 1; later rounds draw fresh positions. With the time-independent round costs (Round.costs: every link at its
# smallest delay, no wait for capacity, the request alone), a backward pass over p gives the least expected
# decode time of any causal policy (each policy's real round times are at least these, draw by draw).


def _round_terms(costs: np.ndarray, probs: np.ndarray, p: int, nxt: list) -> tuple[np.ndarray, list]:
    """For a round at p: costs[p, :G+1] and, per window g <= G, P(accepted = j) for j <= g applied to nxt (values
    at p + j + 1, any numpy shape): the expected next value. G = the largest window allowed at p."""
    gcap = int(np.isfinite(costs[p]).sum()) - 1
    a = probs[p : p + gcap]
    pre = np.concatenate(([1.0], np.cumprod(a)))  # P(the first j drafted are accepted)
    expect, acc = [], 0.0
    for g in range(gcap + 1):
        expect.append(acc + pre[g] * nxt[g])
        if g < gcap:
            acc = acc + pre[g] * (1.0 - a[g]) * nxt[g]
    return costs[p, : gcap + 1], expect


def causal_optimum(costs: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(V, policy): V[p] = the least expected time from p tokens to the last (costs.shape[0] - 1) over causal
    window policies, policy[p] = a window that attains it (the smallest on ties)."""
    out = costs.shape[0] - 1
    v, pol = np.zeros(out + 1), np.zeros(out + 1, dtype=np.int64)
    for p in range(out - 1, 0, -1):
        c, ex = _round_terms(costs, probs, p, [v[q] for q in range(p + 1, min(out, p + costs.shape[1]) + 1)])
        q = c + np.asarray(ex)
        pol[p] = int(np.argmin(q))
        v[p] = q[pol[p]]
    return v, pol


def policy_value(costs: np.ndarray, probs: np.ndarray, window) -> np.ndarray:
    """V[p] = expected time from p tokens to the last under a window policy (window(p) -> g, clamped to what is
    allowed there, as clamp_gamma does; e.g. a static window: lambda p: 5)."""
    out = costs.shape[0] - 1
    v = np.zeros(out + 1)
    for p in range(out - 1, 0, -1):
        c, ex = _round_terms(costs, probs, p, [v[q] for q in range(p + 1, min(out, p + costs.shape[1]) + 1)])
        g = min(int(window(p)), len(c) - 1)
        v[p] = c[g] + ex[g]
    return v


def sample_times(costs: np.ndarray, policy: np.ndarray, runs: np.ndarray) -> np.ndarray:
    """Time from 1 token to the last under a Markov window policy, per acceptance draw: runs[s, p] = accepted run
    from position p in draw s (AcceptanceModel.runs)."""
    out = costs.shape[0] - 1
    n = runs.shape[0]
    p, t = np.ones(n, dtype=np.int64), np.zeros(n)
    rows = np.arange(n)
    live = p < out
    while live.any():
        pl = p[live]
        g = policy[pl]
        t[live] += costs[pl, g]
        p[live] = pl + np.minimum(runs[rows[live], pl], g) + 1
        live = p < out
    return t


class TimedRounds:
    """Round ends on a time grid t_k = t0 + k step (k = 0 .. K), with the links' capacity waits: for a round at p
    drafting g started at t_k, next_index gives the grid index at or before its earliest end (round.end, with each
    intermediate time rounded down to the grid: at most 3 steps early per round; times past the grid's end are
    clamped to t_K). Rounding down keeps every value computed on the grid a lower bound (a later start never ends
    earlier: FIFO crossings, fixed compute times). The verify time is rounded down to step / 20 so that rounds with
    equal whole-step drafting share one table of next indices (`table`)."""

    def __init__(self, rnd: Round, out: int, gmax: int, t0: float, horizon_s: float, step_s: float = 1e-3):
        self.out, self.t0, self.step = out, t0, step_s
        self.k_max = int(math.ceil(horizon_s / step_s))
        t = t0 + step_s * np.arange(self.k_max + 1)
        self.up = np.array([rnd.up.cross(t, wire.payload_bytes("VERIFY", g, rnd.topk), True) for g in range(gmax + 1)])
        self.down = rnd.down.cross(t, wire.payload_bytes("VERIFY_RESULT", 1), True)
        self.draft = np.zeros((out + 1, gmax + 1), dtype=np.int64)  # whole grid steps of drafting
        self.verify = np.zeros((out + 1, gmax + 1))
        for p in range(1, out):
            for g in range(min(gmax, out - p - 1) + 1):
                self.draft[p, g] = int(rnd.draft.draft_time(g, rnd.prompt + p, p) / step_s)
                q = step_s / 20
                self.verify[p, g] = math.floor(rnd.target.verify_time(1, g + 1, rnd.prompt + p) / q) * q
        self._tables: dict = {}

    def index(self, t: np.ndarray) -> np.ndarray:
        return np.clip(np.floor((t - self.t0) / self.step), 0, self.k_max).astype(np.int64)

    def next_index(self, p, g, k: np.ndarray) -> np.ndarray:
        k1 = np.minimum(k + self.draft[p, g], self.k_max)
        return self.index(self.down[self.index(self.up[g, k1] + self.verify[p, g])])

    def table(self, p: int, g: int) -> np.ndarray:
        """next_index(p, g, every k), shared by the rounds with the same drafting steps and verify time."""
        key = (g, int(self.draft[p, g]), float(self.verify[p, g]))
        if key not in self._tables:
            self._tables[key] = self.next_index(p, g, np.arange(self.k_max + 1))
        return self._tables[key]


def timed_optimum(tr: TimedRounds, probs: np.ndarray, terminal: np.ndarray, maximise: bool = False):
    """The causal backward pass with the links' capacity waits: V[p][k] = the least (maximise: largest) expected
    terminal value (terminal[k] at the grid time of the last token) from p tokens at t_k; returns (V[1], policy
    [p, k] -> window). With terminal = t_k, V[1][0] bounds the expected finish of a request whose first token
    is at t0 from below; with terminal = 1[t_k <= deadline] and maximise, the probability of finishing by the
    deadline from above."""
    out, gmax = tr.out, tr.up.shape[0] - 1
    v = {out: np.asarray(terminal, dtype=np.float64)}
    pol = np.zeros((out + 1, tr.k_max + 1), dtype=np.int8)
    for p in range(out - 1, 0, -1):
        gcap = min(gmax, out - p - 1)
        a = probs[p : p + gcap]
        pre = np.concatenate(([1.0], np.cumprod(a)))
        best = None
        for g in range(gcap + 1):
            nk = tr.table(p, g)
            val = pre[g] * v[p + g + 1][nk]
            for j in range(g):
                val += pre[j] * (1.0 - a[j]) * v[p + j + 1][nk]
            if best is None:
                best = val
            else:
                take = val > best if maximise else val < best
                best = np.where(take, val, best)
                pol[p][take] = g
        v[p] = best
        v.pop(p + gmax + 1, None)
    return (v[1] if out > 1 else v[out]), pol


def sample_timed(tr: TimedRounds, policy: np.ndarray, runs: np.ndarray) -> np.ndarray:
    """Grid time of the last token per acceptance draw (runs[s, p], as sample_times) under a policy[p, k] (or
    policy[p]: one that ignores the time), from the first token at t0."""
    n = runs.shape[0]
    p, k = np.ones(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    rows = np.arange(n)
    live = p < tr.out
    while live.any():
        pl, kl = p[live], k[live]
        g = (policy[pl] if policy.ndim == 1 else policy[pl, kl]).astype(np.int64)
        k[live] = tr.next_index(pl, g, kl)
        p[live] = pl + np.minimum(runs[rows[live], pl], g) + 1
        live = p < tr.out
    return tr.t0 + tr.step * k


def rounds_on(tr: TimedRounds, policy: np.ndarray, runs) -> list[tuple]:
    """(start s, window, duration s) of every round under policy on one draw (runs[p])."""
    p, k, out = 1, 0, []
    while p < tr.out:
        g = int(policy[p] if policy.ndim == 1 else policy[p, k])
        nk = int(tr.next_index(p, g, np.array([k]))[0])
        out.append((tr.t0 + k * tr.step, g, (nk - k) * tr.step))
        p, k = p + min(int(runs[p]), g) + 1, nk
    return out


def static_policy(out: int, g: int) -> np.ndarray:
    """policy[p] of static window g, clamped at the end (clamp_gamma)."""
    return np.minimum(g, np.maximum(out - 1 - np.arange(out + 1), 0))


def stall_rules(tr: TimedRounds, rnd: Round, windows) -> tuple[dict[tuple, np.ndarray], dict[float, float]]:
    """Window policies[p, k] that know the link's past only: static window g, or w when the first trace hop of the
    uplink has offered no delivery opportunity for more than x seconds before the round starts (x in 30 / 50 /
    100 ms; w in 8 / gamma_max): a round that will sit in an outage may as well draft much (the link-aware optimum
    does that), and a stall seen so far is the only sign of one coming. Key: (g, x, w). Also: per x, the share of
    the grid's time the uplink is in such a stall."""
    opps = next((o for _, _, o in rnd.up.hops if o is not None), None)
    if opps is None:
        return {}, {}
    t = tr.t0 + tr.step * np.arange(tr.k_max + 1)
    last = opps[np.maximum(np.searchsorted(opps, (t * 1e3).astype(np.int64), "right") - 1, 0)] / 1e3
    gmax = tr.up.shape[0] - 1
    room = np.maximum(tr.out - 1 - np.arange(tr.out + 1), 0)[:, None]
    xs = (0.03, 0.05, 0.1)
    rules = {
        (g, x, w): np.minimum(np.where(t - last > x, w, g)[None, :], room).astype(np.int8)
        for g in windows
        for x in xs
        for w in sorted({min(8, gmax), gmax})
    }
    return rules, {x: float((t - last > x).mean()) for x in xs}


def lookahead_rules(tr: TimedRounds, windows) -> dict[tuple, np.ndarray]:
    """Window policies[p, k] that know the link one round ahead: static window g, or w when a round of window g
    started now (at the request's middle position) would take more than x seconds (x in 150 / 300 / 600 ms: it
    would sit in an outage; w in 8 / gamma_max). Key: (g, x, w)."""
    k = np.arange(tr.k_max + 1)
    gmax = tr.up.shape[0] - 1
    room = np.maximum(tr.out - 1 - np.arange(tr.out + 1), 0)[:, None]
    mid = max(1, (tr.out - 1) // 2)
    return {
        (g, x, w): np.minimum(np.where((tr.next_index(mid, g, k) - k) * tr.step > x, w, g)[None, :], room).astype(
            np.int8
        )
        for g in windows
        for x in (0.15, 0.3, 0.6)
        for w in sorted({min(8, gmax), gmax})
    }


def tail_request(scenario, wl, net, i: int, deadline: float, horizon_s: float, draws: int = 2000) -> dict:
    """What causal window policies can do for request i alone (the bounds hold for each reachable target; the
    least / largest over them is reported), with independent acceptance draws of the scenario's model (draws
    others, the run's own draw own):
    - ideal: every link at its smallest delay without capacity waits (Round.costs): expected finish of the causal
      optimum (causal_optimum) and of each static window (policy_value);
    - timed: with the links' capacity waits, the link schedule known in advance (TimedRounds, on a 1 ms grid up to
      horizon_s after the first token): expected finish of the causal optimum (timed_optimum), its finish over the
      draws and on the own draw, the probability bound of finishing by `deadline`, and each static window's and the
      ideal optimum's (a policy blind to the link) mean finish over the draws, and that of simple policies that know
      the link's past only (stall_rules) or one round ahead (lookahead_rules)."""
    spec = scenario.spec
    acc = AcceptanceModel(spec.models.acceptance)
    rid, out, gmax = int(wl.trace.request_id[i]), int(wl.output_tokens[i]), spec.policy.gamma_max
    probs = acc.probabilities(out)
    own = np.array([acc.runs(spec.seed, rid, out)])
    others = np.array([acc.runs(spec.seed + 1 + k, rid, out) for k in range(draws)])
    res = []
    for f, rnd in request_rounds(scenario, wl, net, i):
        costs = rnd.costs(out, gmax)
        v, pol = causal_optimum(costs, probs)
        tr = TimedRounds(rnd, out, gmax, f, horizon_s)
        tv, tpol = timed_optimum(tr, probs, tr.t0 + tr.step * np.arange(tr.k_max + 1))
        dl = TimedRounds(rnd, out, gmax, f, max(deadline - f, 0.0))
        in_time, _ = timed_optimum(dl, probs, (dl.t0 + dl.step * np.arange(dl.k_max + 1) <= deadline) * 1.0, True)
        res.append(
            {
                "first": f,
                "ideal": f + v[1],
                "ideal_static": {g: f + policy_value(costs, probs, lambda p, g=g: g)[1] for g in range(1, gmax + 1)},
                "timed": float(tv[0]),
                "sample": sample_timed(tr, tpol, others),
                "own": float(sample_timed(tr, tpol, own)[0]),
                "in_time": float(in_time[0]) if deadline >= f else 0.0,
                "timed_static": {
                    g: float(sample_timed(tr, static_policy(out, g), others).mean()) for g in range(1, gmax + 1)
                },
                "timed_blind": float(sample_timed(tr, pol, others).mean()),
            }
        )
        st = res[-1]["timed_static"]
        g_best = sorted(st, key=st.get)[:2]  # the two best static windows, with stalls answered by a large window
        rules, res[-1]["stalled"] = stall_rules(tr, rnd, g_best)
        res[-1]["stall_rules"] = {key: float(sample_timed(tr, rule, others).mean()) for key, rule in rules.items()}
        res[-1]["lookahead_rules"] = {
            key: float(sample_timed(tr, rule, others).mean()) for key, rule in lookahead_rules(tr, g_best).items()
        }
        res[-1]["rounds"] = {
            "the link-aware optimum": rounds_on(tr, tpol, own[0]),
            f"static:{g_best[0]}": rounds_on(tr, static_policy(out, g_best[0]), own[0]),
        }
    best = min(res, key=lambda r: r["timed"])
    best["in_time"] = max(r["in_time"] for r in res)
    best["ideal"] = min(r["ideal"] for r in res)
    return best


def changing_links(topology: Path) -> int:
    w0 = time.perf_counter()
    rows, reqs = {}, {}
    for pol in POLICIES:
        r = simulate(load_scenario(topology, [f"policy.window={pol}"]))
        rows[pol], reqs[pol] = r.summary, r.requests
    scenario = load_scenario(topology, [])
    spec = scenario.spec
    wl = build_workload(scenario)
    net = SimNetwork(scenario, spec.seed)
    first, finish, tpot = request_bounds(scenario, wl, net)
    arrivals = np.asarray(wl.trace.arrival_s, dtype=float)
    slo = rows[POLICIES[0]]["slo"]
    ok = ((first - arrivals) * 1e3 <= slo["ttft_ms"]) & (tpot * 1e3 <= slo["tpot_ms"])
    duration = max(float(arrivals.max(initial=0.0)), float(finish.max(initial=0.0)))
    bound = ok.sum() / duration
    # over the arrival window (testbed.metrics.window_goodput): a request counts if it can also finish inside it
    win = (float(arrivals.min()), float(arrivals.max()))
    win_bound = float((ok & in_window(finish, win)).sum()) / (win[1] - win[0])
    wgood = {pol: window_goodput(reqs[pol], slo["ttft_ms"], slo["tpot_ms"]) for pol in POLICIES}
    statics = [p for p in POLICIES if p.startswith("static:")]
    best = max(statics, key=lambda p: rows[p]["goodput_rps"])
    g_best = rows[best]["goodput_rps"]
    best_w = max(statics, key=lambda p: wgood[p])
    last = int(np.argmax(finish))
    rid = int(wl.trace.request_id[last])
    tail_fin = {pol: float(df.loc[df["request_id"] == rid, "finish_s"].iloc[0]) for pol, df in reqs.items()}
    # +10 % over the best static window needs duration <= (most SLO-meeting requests) / (1.1 g_best)
    deadline = int(ok.sum()) / (1.1 * g_best)
    horizon = max(tail_fin.values()) - float(first[last]) + 5.0
    tail = tail_request(scenario, wl, net, last, deadline, horizon)
    print(f"{topology}: {len(arrivals)} requests, SLO TTFT {slo['ttft_ms']:.0f} ms / TPOT {slo['tpot_ms']:.0f} ms")
    print(
        f"{'policy':>10} {'goodput req/s':>14} {'vs best static':>15} {'met SLO':>8} {'duration s':>11} "
        f"{'in arrival window req/s':>24} {'vs best static':>15} {'request ' + str(rid) + ' finish s':>20}"
    )
    for pol in POLICIES:
        s = rows[pol]
        good = round(s["goodput_rps"] * s["duration_s"])
        print(
            f"{pol:>10} {s['goodput_rps']:>14.3f} {100 * (s['goodput_rps'] / g_best - 1):>+14.1f} % "
            f"{good:>8d} {s['duration_s']:>11.1f} {wgood[pol]:>24.3f} "
            f"{100 * (wgood[pol] / wgood[best_w] - 1):>+14.1f} % "
            f"{tail_fin[pol]:>20.1f}"
        )
    print(
        f"{'bound':>10} {bound:>14.3f} {100 * (bound / g_best - 1):>+14.1f} % {int(ok.sum()):>8d} {duration:>11.1f} "
        f"{win_bound:>24.3f} {100 * (win_bound / wgood[best_w] - 1):>+14.1f} % {finish[last]:>20.1f}"
        "   (clairvoyant: any window policy <= this)"
    )
    n_best = round(g_best * rows[best]["duration_s"])
    print(
        f"the bound's parts: SLO-meeting requests <= {int(ok.sum())} (best static {n_best}: "
        f"{100 * (ok.sum() / n_best - 1):+.1f} %), duration >= {duration:.1f} s (best static "
        f"{rows[best]['duration_s']:.1f} s: the run's last finish, request {rid} with "
        f"{int(wl.output_tokens[last])} output tokens arriving at {arrivals[last]:.1f} s); over the arrival window "
        f"{win[0]:.1f}-{win[1]:.1f} s no tail counts: best static {best_w} {wgood[best_w]:.3f} req/s, "
        f"AWC {100 * (wgood['awc'] / wgood[best_w] - 1):+.1f} %, bound {100 * (win_bound / wgood[best_w] - 1):+.1f} %"
    )
    kind = spec.models.acceptance.kind
    clair_ideal = tail["first"] + tpot[last] * (wl.output_tokens[last] - 1)
    ist, tst = tail["ideal_static"], tail["timed_static"]
    g_i, g_t = min(ist, key=ist.get), min(tst, key=tst.get)
    q5, q50, q95 = np.percentile(tail["sample"], [5, 50, 95])
    print(
        f"request {rid} alone (first token >= {tail['first']:.1f} s; acceptance {kind}"
        + (f" alpha {spec.models.acceptance.alpha}" if kind == "iid" else ", draws assumed independent")
        + f"), finish s: realised {tail_fin[best]:.1f} with {best}, {tail_fin['awc']:.1f} with AWC;"
    )
    print(
        f"  links ideal (smallest delay, no capacity waits): clairvoyant {clair_ideal:.1f} on this run's draw; "
        f"causal optimum E >= {tail['ideal']:.2f}, best static window static:{g_i} E {ist[g_i]:.2f} "
        f"(+{100 * (ist[g_i] - tail['ideal']) / (tail['ideal'] - tail['first']):.2f} % decode time)"
    )
    print(
        f"  links with their capacity waits: clairvoyant >= {finish[last]:.1f} on this run's draw; causal optimum "
        f"knowing the link schedule E >= {tail['timed']:.1f} ({len(tail['sample'])} independent draws: p5 {q5:.1f} "
        f"/ p50 {q50:.1f} / p95 {q95:.1f}, this run's draw {tail['own']:.1f}); blind to the link: best static "
        f"static:{g_t} mean {tst[g_t]:.1f}, static:{best.split(':')[1]} {tst[int(best.split(':')[1])]:.1f}, the "
        f"ideal-link optimum {tail['timed_blind']:.1f}"
    )
    if tail["stall_rules"]:
        rules = tail["stall_rules"]
        (g, x, w) = min(rules, key=rules.get)
        print(
            f"  knowing the link's past only: the best of {len(rules)} stall rules (window w once the uplink has "
            f"offered nothing for x ms) mean {rules[(g, x, w)]:.1f} (static:{g}, w {w} after {x * 1e3:.0f} ms); "
            "the uplink is in such a stall "
            + " / ".join(f"{100 * v:.0f} %" for v in tail["stalled"].values())
            + " of the time (x = "
            + " / ".join(f"{x * 1e3:.0f}" for x in tail["stalled"])
            + " ms)"
        )
    rules = tail["lookahead_rules"]
    (g, x, w) = min(rules, key=rules.get)
    print(
        f"  knowing the link one round ahead: the best of {len(rules)} rules (window w when a round of window g "
        f"started now would take over x ms) mean {rules[(g, x, w)]:.1f} (static:{g}, w {w} over {x * 1e3:.0f} ms)"
    )
    for name, rounds in tail["rounds"].items():
        used = np.bincount([g for _, g, _ in rounds])
        print(
            f"  on this run's draw, {name}: {len(rounds)} rounds, windows "
            + " ".join(f"{g}:{n}" for g, n in enumerate(used) if n)
            + "; rounds over 0.3 s (start s: window, s) "
            + ", ".join(f"{t:.1f}: {g}, {d:.1f}" for t, g, d in rounds if d > 0.3)
        )
    print(
        f"+10 % over {best} needs duration <= {int(ok.sum())} / (1.1 x {g_best:.3f}) = {deadline:.1f} s, so request "
        f"{rid} finished by then: probability <= {tail['in_time']:.3f} for a causal window policy that knows the "
        f"link schedule (over the acceptance draws)"
    )
    print(
        f"best static window: {best}; no window policy can beat it by more than {100 * (bound / g_best - 1):+.1f} % "
        f"(goal +10 %: {'unreachable' if bound < 1.1 * g_best else 'not excluded by the clairvoyant bound'}); "
        f"AWC {100 * (rows['awc']['goodput_rps'] / g_best - 1):+.1f} %. "
        f"Lower bounds: TTFT median {np.median(first - arrivals) * 1e3:.0f} ms, "
        f"TPOT median {np.median(tpot) * 1e3:.1f} ms; "
        f"{time.perf_counter() - w0:.0f} s"
    )
    return 0 if math.isfinite(bound) else 1
