"""Run the node programs of a scenario in a network backend and collect their results into DIR/emu/.

    targets start first (each binds its own address, port 0 = any free port) and write ready.json with the
    endpoint they bound; then drafts start with the targets' endpoints, connect and write ready.json once
    every target answered HELLO; then the orchestrator publishes the common start time T0 (an absolute
    CLOCK_MONOTONIC time, start_delay_s ahead) in DIR/emu/t0, which every node reads (`--t0 file:PATH`).
    So no node starts late, however long imports take on a small machine.
    While they run: a progress bar on completed requests (the drafts' progress.json files), and a watch on
    every child. The drafts end by themselves (all requests done, or the drain timeout); targets end when
    all their drafts left, or on SIGTERM.

Stops: Ctrl-C / SIGTERM of the orchestrator, a node that dies (with on_crash="stop", the default) or the
overall timeout stop every child: SIGTERM to its process group (nodes write what they have), SIGKILL after a
grace period. Partial results are kept: the summary says `"partial": true` and why; the requests of a draft
that left no table are marked failed, and those left unfinished at a target that died are marked failed.

Nodes are programs (`python -m nodes.target|draft`): this module never imports them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from testbed.emu.base import NetworkBackend
from testbed.emu.hostload import HostLoad
from testbed.emu.runtime import NodeHandle, NodeRuntime
from testbed.emu.schedule import LiveSchedule
from testbed.errors import InputError
from testbed.metrics import summarize
from testbed.progress import JobProgress
from testbed.rundir import write_json, write_results
from testbed.spec import Scenario
from testbed.tables import (
    BATCH_COLUMNS,
    EVENT_COLUMNS,
    REQUEST_COLUMNS,
    ROUND_COLUMNS,
    check_schema,
    frame,
    unstarted_request_row,
)
from testbed.workload import Workload, build_workload

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class EmulateOptions:
    on_crash: str = "stop"  # stop: a dead node stops the run; continue: survivors handle it (fault experiments)
    start_delay_s: float | None = None  # T0 = when every node is ready + this (default 0.5 s)
    ready_timeout_s: float = 120.0  # every node must be ready within this
    stop_grace_s: float = 5.0  # SIGTERM -> SIGKILL
    timeout_s: float | None = None  # overall limit after T0 (default: last arrival + drain timeout + 30 s)
    progress: bool = True
    node_args: list[str] = field(default_factory=list)  # extra arguments for every node program


@dataclass
class NodeProc:
    name: str
    role: str
    proc: NodeHandle
    dir: Path
    log: Path
    stopped: bool = False  # we sent it SIGTERM / SIGKILL
    rc: int | None = None

    def poll(self) -> int | None:
        if self.rc is None:
            self.rc = self.proc.poll()
        return self.rc

    @property
    def crashed(self) -> bool:
        return self.rc is not None and self.rc != 0 and not self.stopped


@dataclass
class EmulateResult:
    summary: dict[str, Any]
    exit_code: int
    requests: pd.DataFrame
    rounds: pd.DataFrame
    batches: pd.DataFrame


class _Interrupt:
    """SIGINT / SIGTERM of the orchestrator set a flag (restored on exit)."""

    def __init__(self) -> None:
        self.hit = 0
        self.old: dict[int, Any] = {}

    def __enter__(self) -> "_Interrupt":
        for s in (signal.SIGINT, signal.SIGTERM):
            try:
                self.old[s] = signal.signal(s, self._handler)
            except ValueError:  # not the main thread
                pass
        return self

    def _handler(self, signum: int, frame: Any) -> None:
        self.hit = signum

    def __exit__(self, *exc: object) -> None:
        for s, h in self.old.items():
            signal.signal(s, h)


def emulation_backends(scenario: Scenario, net: NetworkBackend, runtime: NodeRuntime | None = None) -> dict[str, str]:
    """What an emulation runs on, for meta.json: the network's backends, the node runtime, the model backend."""
    return {**net.backends, "runtime": runtime.name if runtime else "process", "model": scenario.spec.models.backend}


def emulate(
    scenario: Scenario,
    net: NetworkBackend,
    out: Path,
    spec_path: Path,
    opts: EmulateOptions | None = None,
    workload: Workload | None = None,
    runtime: NodeRuntime | None = None,
) -> EmulateResult:
    """Run the scenario's nodes inside `net` (already built) with `runtime` (default: processes on the network's
    hosts); write DIR/emu/; return the result."""
    opts = opts or EmulateOptions()
    if runtime is None:
        from testbed.emu.runtime.process import ProcessRuntime

        runtime = ProcessRuntime(scenario)
    runtime.attach(net)
    out = Path(out).resolve()  # node programs may run in containers: every path they are given is absolute
    spec_path = Path(spec_path).resolve()
    emu = out / "emu"
    if emu.exists():
        shutil.rmtree(emu)
    (emu / "logs").mkdir(parents=True)
    wl = workload if workload is not None else build_workload(scenario)
    runtime.bind_run(out, wl.trace.source)
    run = _Run(scenario, net, runtime, emu, spec_path, opts, len(wl))
    reason = run.execute(_time_limit(scenario, wl, opts))
    return _finish(run, wl, reason)


def _time_limit(scenario: Scenario, wl: Workload, opts: EmulateOptions) -> float:
    """The overall limit after T0: opts.timeout_s, or the last arrival + the drain timeout + 30 s."""
    if opts.timeout_s is not None:
        return opts.timeout_s
    last_arrival = float(wl.trace.arrival_s.max()) if len(wl) else 0.0
    return last_arrival + scenario.spec.run.drain_timeout_s + 30.0


def _node_env(scenario: Scenario) -> dict[str, str]:
    """The environment of every node program: this project importable, unbuffered output, a share of the cores."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(PROJECT_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    )
    env["PYTHONUNBUFFERED"] = "1"
    # real-model nodes share the machine's cores instead of each taking all of them
    env["DSD_TORCH_THREADS_DEFAULT"] = str(
        max(1, (os.cpu_count() or 1) // max(1, len(scenario.drafts) + len(scenario.targets)))
    )
    return env


class _Run:
    """One emulation's node processes: launch, readiness, T0, the watch loop with progress, stopping."""

    def __init__(
        self,
        scenario: Scenario,
        net: NetworkBackend,
        runtime: NodeRuntime,
        emu: Path,
        spec_path: Path,
        opts: EmulateOptions,
        total: int,
    ):
        self.scenario = scenario
        self.net = net
        self.runtime = runtime
        self.emu = emu
        self.logs = emu / "logs"
        self.nodes_dir = emu / "nodes"
        self.spec_path = spec_path
        self.opts = opts
        self.env = _node_env(scenario)
        self.procs: dict[str, NodeProc] = {}
        self.crashed: list[str] = []
        self.start_delay = opts.start_delay_s if opts.start_delay_s is not None else 0.5
        self.t0_file = emu / "t0"
        self.t0 = float("nan")
        self.progress = _Progress(total, opts.progress, scenario.spec.name)
        self.intr = _Interrupt()
        # the run's own processes: the orchestrator's descendants and the nodes (containers are not descendants)
        self.host_load = HostLoad(own_pids=lambda: [p.proc.pid for p in self.procs.values() if p.proc.pid])
        self.endpoints: dict[str, str] = {}
        self.past_lives: list[NodeProc] = []  # processes of nodes the schedule killed (and restarted)
        self.schedule = LiveSchedule(scenario, net, self.kill_node, self.restart_node)

    def execute(self, limit: float) -> str:
        """Launch, wait, watch, stop every node; '' when the run ended by itself, or why it was stopped."""
        reason = ""
        with self.intr:
            try:
                reason = self.launch_all()
                if not reason:
                    self.publish_t0()
                    self.schedule.start(self.t0)
                    reason = self.watch(limit)
            except BaseException:
                self.schedule.stop()
                self.stop_all()
                self.progress.stop()
                raise
            self.schedule.stop()
            self.stop_all()
            self.progress.stop()
            for p in self.procs.values():
                if p.crashed and p.name not in self.crashed:
                    self.crashed.append(p.name)
        return reason

    def launch_all(self) -> str:
        """Targets first (each binds its own port), then drafts with the targets' endpoints; '' or why not."""
        scenario = self.scenario
        tpeers = self.emu / "peers-targets.json"
        write_json(tpeers, {t: f"tcp://{self.net.address(t)}:0" for t in scenario.targets})
        for t in scenario.targets:
            self.start(t, "target", tpeers)
        endpoints = self.endpoints
        reason = self.wait_ready(scenario.targets, endpoints, "endpoint")
        if reason:
            return reason
        dpeers = self.emu / "peers.json"
        write_json(dpeers, endpoints)
        for d in scenario.drafts:
            self.start(d, "draft", dpeers)
        return self.wait_ready(scenario.drafts, {}, "pid")

    def kill_node(self, name: str) -> None:
        """The schedule's crash: SIGKILL, expected (not a failure of the run)."""
        p = self.procs[name]
        p.stopped = True
        p.proc.signal(signal.SIGKILL)

    def restart_node(self, name: str, start_at: float | None = None) -> None:
        """The schedule's restart: a new process of the node, same address and port, nothing of its state;
        with `start_at` (prepared at the crash) it loads at once and binds at that CLOCK_MONOTONIC time."""
        old = self.procs[name]
        old.proc.wait(30)
        old.poll()
        self.past_lives.append(old)
        life = sum(1 for p in self.past_lives if p.name == name) + 1
        if old.role == "draft":  # a draft's peers are the targets' endpoints, as at the start
            peers = self.emu / "peers.json"
        else:  # a target binds the endpoint it had
            peers = self.emu / f"peers-{name}-life{life}.json"
            write_json(peers, {name: self.endpoints[name]})
        self.start(
            name, old.role, peers, f"{name}.life{life}", [] if start_at is None else ["--start-at", f"{start_at:.6f}"]
        )

    def start(self, name: str, role: str, peers_file: Path, life: str | None = None, extra: list[str] = ()) -> None:
        d = self.nodes_dir / (life or name)
        d.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{life or name}.log"
        argv = [
            sys.executable,
            "-m",
            f"nodes.{role}",
            "--spec",
            str(self.spec_path),
            "--node",
            name,
            "--peers",
            str(peers_file),
            "--t0",
            f"file:{self.t0_file}",
            "--out",
            str(d),
            *self.opts.node_args,
            *extra,
        ]
        self.procs[name] = NodeProc(name, role, self.runtime.start(name, argv, self.env, log, os.getcwd()), d, log)

    def wait_ready(self, names: list[str], found: dict[str, str], key: str) -> str:
        """Wait for every node's ready.json (with `key`); '' or why not."""
        procs = self.procs
        ready_by = time.monotonic() + self.opts.ready_timeout_s
        while len(found) < len(names):
            for n in names:
                if n not in found:
                    v = _read_json(procs[n].dir / "ready.json").get(key)
                    if v:
                        found[n] = v
            dead = [p for p in procs.values() if p.poll() is not None]
            if dead:
                self.crashed.append(dead[0].name)
                return f"node {dead[0].name} exited with code {dead[0].rc} before it was ready (see {dead[0].log})"
            if self.intr.hit:
                return "interrupted"
            if time.monotonic() > ready_by:
                return f"nodes not ready after {self.opts.ready_timeout_s:.0f} s: " + ", ".join(
                    n for n in names if n not in found
                )
            time.sleep(0.02)
        return ""

    def publish_t0(self) -> None:
        """The common start time, start_delay_s ahead, written atomically for every node to read."""
        self.t0 = time.monotonic() + self.start_delay
        tmp = self.t0_file.with_name(".t0.tmp")
        tmp.write_text(f"{self.t0:.6f}\n")
        tmp.replace(self.t0_file)

    def watch(self, limit: float) -> str:
        """Progress and a watch on every child until the drafts end; '' or why the run must stop."""
        procs, crashed, progress = self.procs, self.crashed, self.progress
        progress.start()
        self.host_load.start()
        reason = ""
        while True:
            drafts = [procs[d] for d in self.scenario.drafts]  # a restarted draft is a new process
            for p in procs.values():
                if p.poll() is not None and p.crashed and p.name not in crashed:
                    crashed.append(p.name)
                    progress.note(f"node {p.name} died (exit {p.rc}); log: {p.log}")
            progress.update(*_count(drafts))
            self.host_load.sample()
            if self.intr.hit:
                reason = "interrupted"
                break
            if crashed and self.opts.on_crash == "stop":
                reason = f"node {crashed[0]} died (exit code {procs[crashed[0]].rc})"
                break
            if all(p.poll() is not None for p in drafts):
                break
            if time.monotonic() > self.t0 + limit:
                reason = f"timeout: still running {limit:.0f} s after the start"
                break
            time.sleep(0.1)
        if not reason:  # drafts are done: targets end by themselves once their drafts left
            end = time.monotonic() + 3.0
            while time.monotonic() < end and any(procs[t].poll() is None for t in self.scenario.targets):
                time.sleep(0.05)
        progress.update(*_count(drafts))
        return reason

    def stop_all(self) -> None:
        """SIGTERM to every live node's process group, SIGKILL after the grace period."""
        live = [p for p in self.procs.values() if p.poll() is None]
        for p in live:
            p.stopped = True
            p.proc.signal(signal.SIGTERM)
        end = time.monotonic() + self.opts.stop_grace_s
        while time.monotonic() < end and any(p.poll() is None for p in live):
            time.sleep(0.05)
        for p in live:
            if p.poll() is None:
                p.proc.signal(signal.SIGKILL)
                p.proc.wait(30)
                p.poll()


def _finish(run: _Run, wl: Workload, reason: str) -> EmulateResult:
    """Merge the nodes' tables, write DIR/emu/ (tables, summary, links), and decide the exit code."""
    procs, crashed, emu = run.procs, run.crashed, run.emu
    req, rounds, batches, notes = _merge(run.scenario, wl, procs, crashed, run.past_lives)
    partial = bool(reason) or bool(crashed)
    if crashed and not reason:
        reason = "node(s) died: " + ", ".join(f"{n} (exit {procs[n].rc})" for n in crashed)
    summary = summarize(req, rounds, batches)
    summary["partial"] = partial
    summary["partial_reason"] = reason if partial else None
    summary["crashed_nodes"] = crashed
    summary["notes"] = notes
    node_info = {}
    late = []
    for name, p in procs.items():
        info = _read_json(p.dir / "node.json")
        info["exit_code"] = p.rc
        info.update(p.proc.exit_info())
        node_info[name] = info
        if p.role == "draft" and info.get("ready_s") is not None and info["ready_s"] > 0:
            late.append(name)
    summary["nodes"] = node_info
    summary["emulator"] = {
        "network": run.net.backends,
        "runtime": run.runtime.describe(),
        "start_delay_s": run.start_delay,
        "late_start_nodes": late,
        "t0_monotonic": run.t0,
        "host_load": run.host_load.report(),
    }
    oom = [n for n, i in node_info.items() if i.get("oom_killed")]
    if oom:
        notes.append(f"OOM-killed (memory_mb too small): {', '.join(oom)}")
    events = None
    if run.scenario.schedule.active:
        rows = list(run.schedule.rows)
        for d in run.scenario.drafts:  # each draft's detections, re-routes, failures (rules of testbed/faults.py)
            rows += [(t, t, 0.0, kind, "", d, detail) for t, kind, detail in node_info.get(d, {}).get("events", [])]
        events = frame(EVENT_COLUMNS, sorted(rows, key=lambda r: (r[1], r[0])))
        summary["requests_rerouted"] = sum(int(node_info.get(d, {}).get("rerouted", 0)) for d in run.scenario.drafts)
        if run.schedule.error:
            notes.append(f"the schedule stopped being applied: {run.schedule.error}")
    write_results(emu, req, rounds, batches, summary, events)
    try:
        if reason != "interrupted":
            run.net.probe_after()  # the paths once more: was the network during the run what verification saw?
        write_json(emu / "links.json", run.net.links_report())
    except Exception as e:  # a report failure must not lose the results
        write_json(emu / "links.json", {"error": str(e)})
    exit_code = 0
    if reason == "interrupted":
        exit_code = 130
    elif crashed or reason:
        exit_code = 1
    return EmulateResult(summary, exit_code, req, rounds, batches)


def record_teardown(out: Path, net: NetworkBackend) -> None:
    """After the network is torn down: what only teardown yields (the delay lines' exit counters: packets, release
    lateness) goes into DIR/emu/links.json."""
    p = Path(out) / "emu" / "links.json"
    doc = _read_json(p)
    detail = net.links_report().get("shaping_detail")
    if doc and detail:
        doc["shaping_detail"] = detail
        write_json(p, doc)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _count(drafts: list[NodeProc]) -> tuple[int, int]:
    ok = failed = 0
    for p in drafts:
        pr = _read_json(p.dir / "progress.json")
        ok += int(pr.get("ok", 0))
        failed += int(pr.get("failed", 0))
    return ok, failed


def _read_table(path: Path, table: str, columns: dict) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    try:
        df = pd.read_parquet(path)
        check_schema(df, table, str(path))
    except Exception:
        return None
    return df.astype({n: t for n, (t, _) in columns.items()})


def _journal(path: Path) -> list[tuple]:
    """A draft's finished rows as it wrote them (nodes/draft.py), up to a kill; a torn last line is dropped."""
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rows.append(tuple(json.loads(line)))
            except ValueError:
                pass
    return rows


def _failed_rows(wl, i: int, d: str, have: set[int]) -> list[tuple]:
    """'failed' rows for the requests of draft d (index i) not in `have` (the orchestrator knows the assignment)."""
    tr = wl.trace
    return [
        unstarted_request_row(
            int(tr.request_id[j]),
            d,
            float(tr.arrival_s[j]),
            int(tr.prompt_tokens[j]),
            int(wl.output_tokens[j]),
            "failed",
        )
        for j in wl.for_edge(i)
        if int(tr.request_id[j]) not in have
    ]


def _merge(scenario: Scenario, wl, procs: dict[str, NodeProc], crashed: list[str], past: list[NodeProc] = ()):
    """Concatenate node tables; requests of drafts without a table become 'failed' rows. A draft the schedule
    killed (faults rule 6): its lives' journals keep what finished before each kill, the last life's table what it
    took after its restart, and every other request of that draft failed (in flight at a kill or arrived while it
    was down)."""
    notes: list[str] = []
    reqs, rounds, batches = [], [], []
    for i, d in enumerate(scenario.drafts):
        p = procs.get(d)
        r = _read_table(p.dir / "requests.parquet", "requests", REQUEST_COLUMNS) if p else None
        if d in scenario.schedule.crashed:
            lives = [q for q in past if q.name == d] + ([p] if p is not None and r is None else [])  # + killed last
            rows = [row for q in lives for row in _journal(q.dir / "journal.jsonl")]
            have = {row[0] for row in rows} | (set(r.request_id.tolist()) if r is not None else set())
            lost = _failed_rows(wl, i, d, have)
            notes.append(
                f"draft {d} crashed: {len(rows)} requests finished before a crash (journal), {len(lost)} lost with it "
                "or arrived while it was down (failed); the killed lives' rounds are not in the tables"
            )
            reqs.append(frame(REQUEST_COLUMNS, rows + lost))
            if r is not None:
                reqs.append(r)
        elif r is None:
            rows = _failed_rows(wl, i, d, set())
            if rows:
                notes.append(f"draft {d} left no results: its {len(rows)} requests are marked failed")
            reqs.append(frame(REQUEST_COLUMNS, rows))
        else:
            reqs.append(r)
        rr = _read_table(p.dir / "rounds.parquet", "rounds", ROUND_COLUMNS) if p else None
        if rr is not None:
            rounds.append(rr)
    for t in scenario.targets:
        p = procs.get(t)
        rr = _read_table(p.dir / "rounds.parquet", "rounds", ROUND_COLUMNS) if p else None
        if rr is not None:  # co-located modes (fused / autoregressive): the rounds run at the target
            rounds.append(rr)
        b = _read_table(p.dir / "batches.parquet", "batches", BATCH_COLUMNS) if p else None
        if b is None:
            if p is not None and p.rc is not None:
                notes.append(f"target {t} left no batches table")
        else:
            batches.append(b)
    req = pd.concat(reqs, ignore_index=True) if reqs else frame(REQUEST_COLUMNS, [])
    dead_targets = [t for t in crashed if t in scenario.targets]
    if dead_targets:
        m = (req["status"] == "unfinished") & req["target"].isin(dead_targets)
        if m.any():
            req.loc[m, "status"] = "failed"
            notes.append(
                f"{int(m.sum())} unfinished requests at dead target(s) {', '.join(dead_targets)} marked failed"
            )
    req = req.sort_values("request_id", kind="stable").reset_index(drop=True)
    rnd = pd.concat(rounds, ignore_index=True) if rounds else frame(ROUND_COLUMNS, [])
    rnd = rnd.sort_values(["request_id", "round"], kind="stable").reset_index(drop=True)
    bat = pd.concat(batches, ignore_index=True) if batches else frame(BATCH_COLUMNS, [])
    bat = bat.sort_values(["start_s", "target"], kind="stable").reset_index(drop=True)
    req = req.astype({n: t for n, (t, _) in REQUEST_COLUMNS.items()})
    rnd = rnd.astype({n: t for n, (t, _) in ROUND_COLUMNS.items()})
    bat = bat.astype({n: t for n, (t, _) in BATCH_COLUMNS.items()})
    return req, rnd, bat, notes


def _Progress(total: int, enabled: bool, name: str) -> JobProgress:
    """Progress on completed (ok + failed) requests: a bar on a terminal, periodic lines otherwise."""
    return JobProgress(f"emulate {name}", total, enabled)


def check_supported(scenario: Scenario, net_kind: str | None = None) -> None:
    """What the node programs cannot run yet: an InputError before anything starts."""
    spec = scenario.spec
    if (
        spec.models.backend != "profiled"
        and not (PROJECT_ROOT / "nodes" / "backends" / f"{spec.models.backend}.py").is_file()
    ):
        raise InputError(scenario.source, f"models.backend: {spec.models.backend!r} is not available in the nodes yet")
    if not scenario.targets:
        raise InputError(scenario.source, "the scenario has no target node")
    sched = scenario.schedule
    if sched.crashed and spec.run.mode != "distributed":
        raise InputError(scenario.source, f"schedule: node crashes need run.mode distributed (not {spec.run.mode})")
    if net_kind == "none" and (sched.traces or sched.steps or sched.down):
        raise InputError(
            scenario.source, "schedule: link changes need an emulated network (--net mininet); --net none has no links"
        )
