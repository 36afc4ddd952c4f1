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
largest lower-bound finish).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from testbed import wire
from testbed.acceptance import AcceptanceModel
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

    def cross(self, t: float, payload: int, timed: bool) -> float:
        segs = -(-payload // wire.MSS)
        nbytes = payload + segs * wire.HEADER_BYTES
        for delay, bt, opps in self.hops:
            if opps is not None:
                if timed:
                    k = int(np.searchsorted(opps, int(t * 1e3), "left")) + -(-(nbytes - segs * ETH_BYTES) // 1500) - 1
                    t = max(t, opps[k] / 1e3)
            else:
                t += nbytes * bt
            t += delay
        return t


def request_bounds(scenario, wl, net) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per request: lower bounds of first token time, finish time and TPOT (s) over every window policy."""
    spec = scenario.spec
    acc = AcceptanceModel(spec.models.acceptance)
    topk = wire.verify_topk(spec.models.temperature)
    gmax = spec.policy.gamma_max
    tr = wl.trace
    paths = {}
    n = len(tr.arrival_s)
    first, finish, tpot = np.full(n, np.inf), np.full(n, np.inf), np.full(n, np.inf)
    for i in range(n):
        edge = scenario.drafts[int(wl.edge_index[i])]
        a, prompt, out = float(tr.arrival_s[i]), int(tr.prompt_tokens[i]), int(wl.output_tokens[i])
        runs = acc.runs(spec.seed, int(tr.request_id[i]), out)
        draft = scenario.compute[edge]
        for tname in scenario.reachable[edge]:
            key = (edge, tname)
            if key not in paths:
                paths[key] = (
                    LowerPath(net.path(edge, tname).hops),
                    LowerPath(net.path(tname, edge).hops),
                )
            up, down = paths[key]
            tc = scenario.compute[tname]
            f = up.cross(a, wire.payload_bytes("PREFILL", prompt), True) + tc.prefill_time([prompt])
            f = down.cross(f, wire.payload_bytes("PREFILL_DONE", 1), True)
            first[i] = min(first[i], f)
            for timed in (True, False):
                e = np.full(out + 1, np.inf)
                e[1] = f if timed else 0.0
                for p in range(1, out):
                    t0 = e[p]
                    if t0 == np.inf:
                        continue
                    ctx = prompt + p
                    for g in range(0, min(runs[p] if p < len(runs) else 0, gmax, out - p - 1) + 1):
                        t = t0 + draft.draft_time(g, ctx, p)
                        t = up.cross(t, wire.payload_bytes("VERIFY", g, topk), timed) + tc.verify_time(1, g + 1, ctx)
                        t = down.cross(t, wire.payload_bytes("VERIFY_RESULT", 1), timed)
                        if t < e[p + g + 1]:
                            e[p + g + 1] = t
                if timed:
                    finish[i] = min(finish[i], e[out])
                else:
                    tpot[i] = min(tpot[i], e[out] / (out - 1) if out > 1 else 0.0)
    return first, finish, tpot


def changing_links(topology: Path) -> int:
    w0 = time.perf_counter()
    rows = {}
    for pol in POLICIES:
        r = simulate(load_scenario(topology, [f"policy.window={pol}"]))
        rows[pol] = r.summary
    scenario = load_scenario(topology, [])
    spec = scenario.spec
    wl = build_workload(scenario)
    first, finish, tpot = request_bounds(scenario, wl, SimNetwork(scenario, spec.seed))
    arrivals = np.asarray(wl.trace.arrival_s, dtype=float)
    slo = rows[POLICIES[0]]["slo"]
    ok = ((first - arrivals) * 1e3 <= slo["ttft_ms"]) & (tpot * 1e3 <= slo["tpot_ms"])
    duration = max(float(arrivals.max(initial=0.0)), float(finish.max(initial=0.0)))
    bound = ok.sum() / duration
    statics = [p for p in POLICIES if p.startswith("static:")]
    best = max(statics, key=lambda p: rows[p]["goodput_rps"])
    g_best = rows[best]["goodput_rps"]
    print(f"{topology}: {len(arrivals)} requests, SLO TTFT {slo['ttft_ms']:.0f} ms / TPOT {slo['tpot_ms']:.0f} ms")
    print(f"{'policy':>10} {'goodput req/s':>14} {'vs best static':>15} {'met SLO':>8} {'duration s':>11}")
    for pol in POLICIES:
        s = rows[pol]
        good = round(s["goodput_rps"] * s["duration_s"])
        print(
            f"{pol:>10} {s['goodput_rps']:>14.3f} {100 * (s['goodput_rps'] / g_best - 1):>+14.1f} % "
            f"{good:>8d} {s['duration_s']:>11.1f}"
        )
    print(
        f"{'bound':>10} {bound:>14.3f} {100 * (bound / g_best - 1):>+14.1f} % {int(ok.sum()):>8d} {duration:>11.1f}"
        "   (any window policy: <= this)"
    )
    last = int(np.argmax(finish))
    n_best = round(g_best * rows[best]["duration_s"])
    print(
        f"the bound's parts: SLO-meeting requests <= {int(ok.sum())} (best static {n_best}: "
        f"{100 * (ok.sum() / n_best - 1):+.1f} %), duration >= {duration:.1f} s (best static "
        f"{rows[best]['duration_s']:.1f} s: the run's last finish, request {int(wl.trace.request_id[last])} with "
        f"{int(wl.output_tokens[last])} output tokens arriving at {arrivals[last]:.1f} s)"
    )
    print(
        f"best static window: {best}; no window policy can beat it by more than {100 * (bound / g_best - 1):+.1f} % "
        f"(goal +10 %: {'unreachable' if bound < 1.1 * g_best else 'not excluded by the bound'}); "
        f"AWC {100 * (rows['awc']['goodput_rps'] / g_best - 1):+.1f} %. "
        f"Lower bounds: TTFT median {np.median(first - arrivals) * 1e3:.0f} ms, "
        f"TPOT median {np.median(tpot) * 1e3:.1f} ms; "
        f"{time.perf_counter() - w0:.0f} s"
    )
    return 0 if math.isfinite(bound) else 1
