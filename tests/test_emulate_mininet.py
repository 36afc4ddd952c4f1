"""End to end over the emulated network: `python -m testbed emulate star-4edge --net mininet` (root).

A short synthetic run (30 requests at 6 req/s) over the shaped 10 ms edge links: every request completes,
emu/links.json holds the as-built paths with measurements, the target bound its host's own address, and two
measured invariants that fail when shaping is missing or broken: every request's TTFT is at least the
configured prefill path (2 x one-way path delay + the prefill compute), and the mean TPOT agrees with the
simulator's on the same spec within 15 %. Whatever happens, the run's network objects are removed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
TOPO = ROOT / "topologies" / "star-4edge.yaml"
SETS = [
    "workload.trace=synthetic",
    "workload.synthetic.n_requests=30",
    "workload.synthetic.rate_rps=6",
    "workload.duration_s=null",
]
N = 30
RUN_TIMEOUT_S = 120


def _why_not() -> str | None:
    if sys.platform != "linux":
        return "linux only"
    if os.geteuid() != 0:
        return "needs root (network namespaces, Mininet)"
    from testbed.emu.net.probe import probe_mininet, shaping_support

    ok, detail = probe_mininet()
    if not ok:
        return f"mininet missing: {detail}"
    if not any(ok for ok, _ in shaping_support().values()):
        return "no link shaping backend works here (see python -m testbed doctor)"
    return None


_why = _why_not()
pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.skipif(_why is not None, reason=_why or "")]


def _run_tags(pid: int) -> set[str]:
    from testbed.emu.net.runstate import read_states

    return {t for t, s in read_states().items() if s.get("pid") == pid}


def _objects_of(tag: str) -> dict:
    from testbed.emu.cleanup import find_leftovers

    f = find_leftovers(include_live=True)
    return {
        "shells": [s for s in f["shells"] if s[1] == tag],
        "delaylines": [d for d in f["delaylines"] if d[1] == tag],
        "links": [l for l in f["links"] if l.startswith("dsd" + tag)],
        "cgroups": [c for c in f["cgroups"] if c.endswith("dsd-" + tag)],
        "states": [t for t in f["states"] if t == tag],
    }


def _remove_run(tag: str) -> None:
    """Remove what one run (ours) left: programs in its hosts, its delay lines and shells, links, cgroups."""
    from testbed.emu.cleanup import cleanup_tag, kill_namespace_processes
    from testbed.emu.net.runstate import remove_state

    objs = _objects_of(tag)
    holders = [p for p, _ in objs["shells"]] + [p for p, _ in objs["delaylines"]]
    kill_namespace_processes(holders)
    for pid in holders:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    time.sleep(0.2)
    cleanup_tag(tag)
    remove_state(tag)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """One emulated run, shared by the checks below; its network is gone afterwards, whatever happened."""
    out = tmp_path_factory.mktemp("mininet") / "run"
    argv = [sys.executable, "-m", "testbed", "emulate", str(TOPO), "--net", "mininet", "--out", str(out), "--quiet"]
    for s in SETS:
        argv += ["--set", s]
    log = out.parent / "emulate.log"
    tags: set[str] = set()
    with open(log, "w") as f:
        child = subprocess.Popen(argv, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        end = time.monotonic() + RUN_TIMEOUT_S
        while child.poll() is None and time.monotonic() < end:
            tags |= _run_tags(child.pid)  # the run's tag, while its state file exists
            time.sleep(0.2)
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)  # the orchestrator stops its nodes and tears the network down
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait(10)
            pytest.fail(f"emulate still running after {RUN_TIMEOUT_S} s; log: {log.read_text()[-3000:]}")
        assert child.returncode == 0, log.read_text()[-3000:]
        assert tags, "the run never recorded its network (no /run/dsd state seen)"
        leftovers = {t: o for t in tags if any((o := _objects_of(t)).values())}
        assert not leftovers, f"the run left network objects behind: {leftovers}"
        yield out
    finally:
        if child.poll() is None:
            try:
                os.killpg(child.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            child.wait(10)
        for t in tags | _run_tags(child.pid):
            _remove_run(t)


def test_all_requests_complete_and_links_are_measured(run_dir):
    emu = run_dir / "emu"
    summary = json.loads((emu / "summary.json").read_text())
    req = pd.read_parquet(emu / "requests.parquet")
    assert summary["partial"] is False and summary["requests_completed"] == N
    assert len(req) == N and (req["status"] == "ok").all() and (req["tokens_out"] == req["output_tokens"]).all()
    assert summary["emulator"]["network"]["network"] == "mininet"
    links = json.loads((emu / "links.json").read_text())
    assert "error" not in links and links["backends"]["network"] == "mininet"
    paths = {(p["src"], p["dst"]): p for p in links["paths"]}
    for e in ("edge0", "edge1", "edge2", "edge3"):
        p = paths[(e, "cloud0")]
        assert p["configured"]["one_way_delay_ms"] == pytest.approx(11.0)
        m = p["measured"]
        assert m["samples"] > 0 and m["rtt_p50_ms"] == pytest.approx(p["configured"]["rtt_ms"], abs=1.0), p
    # the target bound its own host's address only (drafts only connect)
    ready = json.loads((emu / "nodes" / "cloud0" / "ready.json").read_text())
    host = ready["endpoint"][len("tcp://") :].rpartition(":")[0]
    assert host == links["addresses"]["cloud0"] and host not in ("0.0.0.0", "*", "127.0.0.1")
    for name, info in summary["nodes"].items():
        assert info["exit_code"] == 0 and not info.get("bad_messages"), name


def test_ttft_is_at_least_the_shaped_prefill_path(run_dir):
    """Measured invariant: prompt up (11 ms one way) + prefill compute + first token down (11 ms)."""
    from testbed.spec import load_scenario

    sc = load_scenario(run_dir / "spec.yaml")
    req = pd.read_parquet(run_dir / "emu" / "requests.parquet")
    one_way = {e: sum(sc.links[h.link].delay_ms for h in sc.paths[(e, "cloud0")]) / 1e3 for e in sc.drafts}
    back = {e: sum(sc.links[h.link].delay_ms for h in sc.paths[("cloud0", e)]) / 1e3 for e in sc.drafts}
    compute = sc.compute["cloud0"]
    floor = [one_way[e] + back[e] + compute.prefill_time([p]) for e, p in zip(req["edge"], req["prompt_tokens"])]
    ttft = (req["first_token_s"] - req["arrival_s"]).to_numpy()
    floor = pd.Series(floor).to_numpy()
    assert ttft.mean() >= floor.mean(), (ttft.mean(), floor.mean())
    assert (ttft >= floor - 0.3e-3).all(), (ttft - floor).min()  # each request (0.3 ms for timer granularity)


def test_tpot_agrees_with_the_simulator(run_dir):
    from testbed.sim import simulate
    from testbed.spec import load_scenario

    sim = simulate(load_scenario(run_dir / "spec.yaml")).summary
    emu = json.loads((run_dir / "emu" / "summary.json").read_text())
    assert emu["tokens_per_round"] == pytest.approx(sim["tokens_per_round"])  # same token-level behaviour
    assert emu["tpot_ms"]["mean"] == pytest.approx(sim["tpot_ms"]["mean"], rel=0.15), (emu["tpot_ms"], sim["tpot_ms"])
