"""Build a simulation from a resolved scenario and its workload, run it, return the tables."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from testbed import wire
from testbed.acceptance import AcceptanceModel
from testbed.metrics import summarize
from testbed.policies.batching import Batcher
from testbed.policies.routing import Router
from testbed.policies.window import parse_window_policy
from testbed.rounds import RequestProgress
from testbed.sim.engine import EventLoop
from testbed.sim.network import SimNetwork
from testbed.sim.nodes import Recorder, SimDraft, SimRequest, SimTarget
from testbed.spec import Scenario
from testbed.schedule import schedule_rows
from testbed.sim import faults as sim_faults
from testbed.sim.faults import needs_faults
from testbed.tables import BATCH_COLUMNS, EVENT_COLUMNS, REQUEST_COLUMNS, ROUND_COLUMNS, frame
from testbed.workload import Workload, build_workload


@dataclass
class SimResult:
    requests: pd.DataFrame
    rounds: pd.DataFrame
    batches: pd.DataFrame
    summary: dict
    events: int
    wall_s: float  # measured by the caller-facing wrapper only, for benchmarks; never used in results
    schedule_events: pd.DataFrame | None = None  # testbed.tables.EVENT_COLUMNS, when the scenario has a schedule


def simulate(scenario: Scenario, workload: Workload | None = None,
             progress: Callable[[int, int], None] | None = None) -> SimResult:
    """Run DSD-Sim on the scenario. Deterministic for a given spec (seed included)."""
    wall0 = time.perf_counter()
    spec = scenario.spec

    wl = workload if workload is not None else build_workload(scenario)
    loop = EventLoop()
    rec = Recorder()
    net = SimNetwork(scenario, spec.seed)
    policy = parse_window_policy(spec.policy.window)
    mode = spec.run.mode
    local = mode != "distributed"
    speculate = mode != "autoregressive"
    observes = policy.observes and speculate
    names = [n.name for n in scenario.nodes]
    code = {n: i for i, n in enumerate(names)}
    targets: dict[str, SimTarget] = {}
    for name in scenario.targets:
        cm = scenario.compute[name]
        drafter = SimDraft(f"{name}.draft", code[name], loop, cm, 0, None, rec, True, observes) if local else None
        targets[name] = SimTarget(name, code[name], loop, cm, Batcher(spec.policy.batching), rec, drafter)
    drafts = [
        SimDraft(name, code[name], loop, scenario.compute[name], scenario.node(name).draft_slots,
                 Router(spec.policy.routing, scenario.reachable[name], spec.seed, name), rec, False, observes)
        for name in scenario.drafts
    ]
    faults = needs_faults(scenario)
    if faults:
        sim_faults.install(scenario, loop, net, drafts, targets)
    topk = wire.verify_topk(spec.models.temperature)
    for d in drafts:
        d.topk = topk
    acceptance = AcceptanceModel(spec.models.acceptance)
    gamma_max = spec.policy.gamma_max
    seed = spec.seed

    tr = wl.trace
    arrivals = tr.arrival_s.tolist()
    rids = tr.request_id.tolist()
    prompts = tr.prompt_tokens.tolist()
    outputs = wl.output_tokens.tolist()
    edge_of = wl.edge_index.tolist()
    n = len(arrivals)
    paths = net.path

    def on_arrival(i: int) -> None:
        rid, L = rids[i], outputs[i]
        edge = drafts[edge_of[i]]
        f = edge.faults
        tname = edge.route() if f is None else (None if f.down else f.route())
        ctl = policy.controller(prompts[i], gamma_max)
        t = tname or scenario.reachable[edge.name][0]
        req = SimRequest(rid, edge, targets[t], arrivals[i], RequestProgress(rid, prompts[i], L, ctl, gamma_max, speculate),
                         acceptance.runs(seed, rid, L) if speculate else [], paths(edge.name, t), paths(t, edge.name))
        rec.active[rid] = req
        if tname is None:  # faults rules 2 / 6: the edge is down, or every target it reaches is believed dead
            edge.own_active[t] = edge.own_active.get(t, 0) + 1
            f.fail(req, "edge down" if f.down else "no reachable target alive")
        else:
            edge.send_prefill(req)
        if i + 1 < n:
            loop.at(arrivals[i + 1], on_arrival, i + 1)

    if n:
        loop.at(arrivals[0], on_arrival, 0)
    until = (arrivals[-1] if n else 0.0) + spec.run.drain_timeout_s

    step = None
    if progress is not None:
        def step() -> bool:
            progress(rec.completed, n)
            return False

    loop.run(until, step)
    if progress is not None:
        progress(rec.completed, n)
    for req in sorted(rec.active.values(), key=lambda r: r.rid):
        p = req.prog
        rec.requests.append((req.rid, req.edge.name, req.target.name, req.arrival,
                             req.prefill_sent, req.first_token, float("nan"), p.prompt_tokens, p.output_tokens,
                             p.produced, p.rounds, p.drafted, p.accepted, "unfinished"))
    requests = frame(REQUEST_COLUMNS, sorted(rec.requests))
    rounds = frame(ROUND_COLUMNS, rec.rounds, codes={"edge": names, "target": names})
    batches = frame(BATCH_COLUMNS, rec.batches, codes={"target": names, "kind": ["prefill", "verify"]})
    summary = summarize(requests, rounds, batches)
    summary["events"] = loop.events
    events = None
    if scenario.schedule.active:
        events = frame(EVENT_COLUMNS, sorted(schedule_rows(scenario) + rec.events, key=lambda r: (r[1], r[0])))
        summary["requests_rerouted"] = rec.rerouted
    return SimResult(requests, rounds, batches, summary, loop.events, time.perf_counter() - wall0, events)
