"""Build a simulation from a resolved scenario and its workload, run it, return the tables."""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from testbed import wire
from testbed.acceptance import AcceptanceModel
from testbed.metrics import summarize, summarize_dir
from testbed.policies.batching import Batcher
from testbed.policies.routing import Router
from testbed.policies.window import parse_window_policy
from testbed.rounds import RequestProgress, request_row
from testbed.sim.engine import EventLoop
from testbed.sim.network import SimNetwork
from testbed.sim.nodes import Recorder, SimDraft, SimRequest, SimTarget
from testbed.spec import Scenario
from testbed.schedule import schedule_rows
from testbed.sim import faults as sim_faults
from testbed.sim.faults import needs_faults
from testbed.tables import BATCH_COLUMNS, EVENT_COLUMNS, REQUEST_COLUMNS, ROUND_COLUMNS, ParquetSink, frame
from testbed.workload import Workload, build_workload


@dataclass
class SimResult:
    requests: pd.DataFrame | None  # None when the tables were streamed to files (simulate(..., out=DIR))
    rounds: pd.DataFrame | None
    batches: pd.DataFrame | None
    summary: dict
    events: int
    wall_s: float  # measured by the caller-facing wrapper only, for benchmarks; never used in results
    schedule_events: pd.DataFrame | None = None  # testbed.tables.EVENT_COLUMNS, when the scenario has a schedule


CHUNK_ROWS = 65_536  # rows of a table held before they are streamed to its file (simulate(..., out=DIR))
STEP_EVENTS = 0x10000  # events between two looks at the tables (and the progress callback)


def simulate(
    scenario: Scenario,
    workload: Workload | None = None,
    progress: Callable[[int, int], None] | None = None,
    out: Path | None = None,
    net_seed: int | None = None,
) -> SimResult:
    """Run DSD-Sim on the scenario. Deterministic for a given spec (seed included).

    `net_seed` seeds the network's random draws alone (jitter, loss; the spec's seed when None): acceptance,
    routing and faults keep the spec's seed, so runs differing in it differ only by the network's randomness
    (testbed/sim/spread.py).

    With `out`, requests / rounds / batches stream to out/*.parquet in chunks during the run (memory flat in
    the run's length; the files equal the tables an in-memory run returns) and the summary is computed in a
    second pass over the files (testbed.metrics.summarize_dir); the result then holds no tables.
    """
    wall0 = time.perf_counter()
    spec = scenario.spec

    wl = workload if workload is not None else build_workload(scenario)
    loop = EventLoop()
    rec = Recorder()
    net = SimNetwork(scenario, spec.seed if net_seed is None else net_seed)
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
        SimDraft(
            name,
            code[name],
            loop,
            scenario.compute[name],
            scenario.node(name).draft_slots,
            Router(spec.policy.routing, scenario.reachable[name], spec.seed, name),
            rec,
            False,
            observes,
        )
        for name in scenario.drafts
    ]
    faults = needs_faults(scenario)
    if faults:
        ends = wl.trace.arrival_s
        last = {d.name: float(ends[wl.edge_index == i].max(initial=0.0)) for i, d in enumerate(drafts)}
        sim_faults.install(scenario, loop, net, drafts, targets, last)
    topk = wire.verify_topk(spec.models.temperature)
    for d in drafts:
        d.topk = topk
    acceptance = AcceptanceModel(spec.models.acceptance)
    gamma_max = spec.policy.gamma_max
    seed = spec.seed

    tr = wl.trace
    arrivals = tr.arrival_s  # numpy arrays, read one request at a time (a day-long trace stays compact)
    rids = tr.request_id
    prompts = tr.prompt_tokens
    outputs = wl.output_tokens
    edge_of = wl.edge_index
    n = len(arrivals)
    paths = net.path

    def on_arrival(i: int) -> None:
        rid, L, prompt, arrival = rids.item(i), outputs.item(i), prompts.item(i), arrivals.item(i)
        edge = drafts[edge_of.item(i)]
        f = edge.faults
        tname = edge.route() if f is None else (None if f.down else f.route())
        ctl = policy.controller(prompt, gamma_max)
        t = tname or scenario.reachable[edge.name][0]
        req = SimRequest(
            rid,
            edge,
            targets[t],
            arrival,
            RequestProgress(rid, prompt, L, ctl, gamma_max, speculate),
            acceptance.runs(seed, rid, L) if speculate else [],
            paths(edge.name, t),
            paths(t, edge.name),
        )
        rec.active[rid] = req
        if tname is None:  # faults rules 2 / 6: the edge is down, or every target it reaches is believed dead
            edge.own_active[t] = edge.own_active.get(t, 0) + 1
            f.fail(req, "edge down" if f.down else "no reachable target alive")
        else:
            edge.send_prefill(req)
        if i + 1 < n:
            loop.at(arrivals.item(i + 1), on_arrival, i + 1)

    if n:
        loop.at(arrivals.item(0), on_arrival, 0)
    until = (arrivals.item(n - 1) if n else 0.0) + spec.run.drain_timeout_s

    sinks = None if out is None else _Sinks(Path(out), names)
    step = None
    if progress is not None or sinks is not None:

        def step() -> bool:
            if sinks is not None:
                sinks.flush(rec)
            if progress is not None:
                progress(rec.completed, n)
            return False

    try:
        loop.run(until, step, STEP_EVENTS)
    except BaseException:
        if sinks is not None:
            sinks.abort()
        raise
    if progress is not None:
        progress(rec.completed, n)
    for req in sorted(rec.active.values(), key=lambda r: r.rid):
        rec.requests.append(
            request_row(
                req.prog,
                req.edge.name,
                req.target.name,
                req.arrival,
                req.prefill_sent,
                req.first_token,
                float("nan"),
                "unfinished",
            )
        )
    if sinks is None:
        requests = frame(REQUEST_COLUMNS, sorted(rec.requests))
        rounds = frame(ROUND_COLUMNS, rec.rounds, codes={"edge": names, "target": names})
        batches = frame(BATCH_COLUMNS, rec.batches, codes={"target": names, "kind": ["prefill", "verify"]})
        summary = summarize(requests, rounds, batches)
    else:
        try:
            sinks.flush(rec, final=True)
            sinks.close()
        except BaseException:
            sinks.abort()
            raise
        requests = rounds = batches = None
        summary = summarize_dir(sinks.dir)
    summary["events"] = loop.events
    events = None
    if scenario.schedule.active:
        events = frame(EVENT_COLUMNS, sorted(schedule_rows(scenario) + rec.events, key=lambda r: (r[1], r[0])))
        summary["requests_rerouted"] = rec.rerouted
    return SimResult(requests, rounds, batches, summary, loop.events, time.perf_counter() - wall0, events)


class _Sinks:
    """The three tables streamed to DIR/{requests,rounds,batches}.parquet. Rounds and batches go out in the
    order they happen; requests in request-id order (as the in-memory table is sorted): a finished request's
    row waits until every request that arrived before it has its row, so what is held is bounded by the
    requests in flight, not by the run's length."""

    def __init__(self, d: Path, names: list[str]):
        self.dir = d
        self.requests = ParquetSink(d / "requests.parquet", REQUEST_COLUMNS)
        self.rounds = ParquetSink(d / "rounds.parquet", ROUND_COLUMNS, codes={"edge": names, "target": names})
        self.batches = ParquetSink(
            d / "batches.parquet", BATCH_COLUMNS, codes={"target": names, "kind": ["prefill", "verify"]}
        )

    def flush(self, rec: Recorder, final: bool = False) -> None:
        for sink, rows in ((self.rounds, rec.rounds), (self.batches, rec.batches)):
            if final or len(rows) >= CHUNK_ROWS:
                sink.write(rows)
                rows.clear()  # in place: the nodes append to these very lists
        rows = rec.requests
        if final:
            rows.sort()
            self.requests.write(rows)
            rows.clear()
        elif len(rows) >= CHUNK_ROWS:
            rows.sort()
            oldest = min(rec.active) if rec.active else None  # every request below it has its row
            k = len(rows) if oldest is None else bisect.bisect_left(rows, oldest, key=lambda r: r[0])
            if k >= CHUNK_ROWS // 2:
                self.requests.write(rows[:k])
                del rows[:k]

    def close(self) -> None:
        for sink in (self.requests, self.rounds, self.batches):
            sink.close()

    def abort(self) -> None:
        for sink in (self.requests, self.rounds, self.batches):
            sink.abort()
