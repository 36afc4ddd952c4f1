"""The faults a node run must survive (issue 3):

- garbage bytes / wrong-version / unknown messages sent to a target's socket: counted, ignored, service goes on;
- a draft killed mid-run: the target frees its state after the timeout and keeps serving the others;
- the target killed mid-run: drafts fail their in-flight requests after the timeout; the run ends with
  partial results written and a non-zero exit;
- (default --on-crash stop) a node dying stops every other node; partial results are kept and marked.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import pandas as pd
import pytest
import zmq

from conftest import read_json, wait_for
from nodes import protocol as P
from nodes.backends import synthetic_tokens
from testbed.acceptance import AcceptanceModel
from testbed.rounds import verify
from testbed.spec import load_scenario, spec_to_yaml

ROOT = Path(__file__).resolve().parents[1]
TOPO = str(ROOT / "topologies" / "star-4edge.yaml")
LOAD = [
    "workload.trace=synthetic",
    "workload.synthetic.n_requests=120",
    "workload.synthetic.rate_rps=30",
    "workload.synthetic.output_mean=100",
    "workload.synthetic.prompt_mean=200",
    "workload.duration_s=null",
    "workload.max_output_tokens=300",
    "run.request_timeout_s=2",
    "run.drain_timeout_s=20",
]


# -- garbage -----------------------------------------------------------------------------------------------
def test_target_survives_garbage_and_wrong_versions(tmp_path):
    sc = load_scenario(TOPO, LOAD)
    spec = tmp_path / "spec.yaml"
    spec.write_text(spec_to_yaml(sc.spec))
    peers = tmp_path / "peers.json"
    peers.write_text(json.dumps({"cloud0": "tcp://127.0.0.1:0"}))
    out = tmp_path / "cloud0"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nodes.target",
            "--spec",
            str(spec),
            "--node",
            "cloud0",
            "--peers",
            str(peers),
            "--t0",
            f"{time.monotonic():.6f}",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    ctx = zmq.Context()
    try:
        endpoint = wait_for(lambda: read_json(out / "ready.json").get("endpoint"), 30, "target ready")
        # raw TCP junk (not even ZMTP): libzmq drops that connection, the node never sees it
        host, port = endpoint[6:].rsplit(":", 1)
        with socket.create_connection((host, int(port))) as s:
            s.sendall(os.urandom(4096))
        d = ctx.socket(zmq.DEALER)
        d.setsockopt(zmq.IDENTITY, b"edge0")
        d.setsockopt(zmq.LINGER, 0)
        d.connect(endpoint)
        pk = lambda m: msgpack.packb(m, use_bin_type=True)  # noqa: E731
        junk = [
            b"",
            b"\xff" * 64,
            os.urandom(1000),
            pk([1, 2]),
            pk({"v": 99, "t": P.PREFILL, "r": 1}),
            pk({"v": 0, "t": P.HELLO, "n": "edge0"}),
            pk({"v": 1, "t": 42}),
            pk({"v": 1, "t": P.VERIFY, "r": "x"}),
        ]
        for j in junk:
            d.send(j)
        d.send_multipart([b"two", b"frames"])
        enc = P.Encoder()
        d.send(enc.verify(77, 1, b""))  # valid, but an unknown request: ERROR, not a crash
        d.send(enc.hello("edge0", 0.5))
        d.send(enc.prefill(5, 60, synthetic_tokens(5, 0, 100)))
        poller = zmq.Poller()
        poller.register(d, zmq.POLLIN)

        def recv() -> dict:
            assert poller.poll(5000), "target stopped answering"
            return P.decode(d.recv())

        got = [recv() for _ in range(3)]
        assert [m["t"] for m in got] == [P.ERROR, P.HELLO, P.PREFILL_DONE]
        assert got[0]["c"] == "unknown_request"
        runs = AcceptanceModel(sc.spec.models.acceptance).runs(sc.spec.seed, 5, 60)
        produced = 1
        for _ in range(5):  # service continues, with the shared acceptance rule
            d.send(enc.verify(5, produced, synthetic_tokens(5, produced, 4)))
            m = recv()
            assert m["t"] == P.VERIFY_RESULT and m["a"] == verify(runs, produced, 4)
            produced += m["a"] + 1
        d.send(enc.release(5))
        d.send(enc.bye("edge0"))
        d.close()
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(15)
        ctx.term()
    assert rc == 0, proc.stderr.read().decode()[-2000:]
    node = read_json(out / "node.json")
    bad = node["bad_messages"]
    assert bad.get("garbage", 0) >= 5 and bad.get("version", 0) == 2 and bad.get("unknown_type", 0) == 1
    assert bad.get("bad_field", 0) == 1
    assert node["errors_sent"] == {"unknown_request": 1}
    assert node["messages_in"]["VERIFY"] == 6 and node["requests_active_at_end"] == 0


# -- killed nodes ------------------------------------------------------------------------------------------
def _start(out: Path, *extra: str) -> subprocess.Popen:
    argv = [sys.executable, "-m", "testbed", "emulate", TOPO, "--net", "none", "--out", str(out), "--quiet", *extra]
    for s in LOAD:
        argv += ["--set", s]
    return subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _kill_when_busy(out: Path, victim: str) -> float:
    """SIGKILL `victim` once edge1 has completed a request (requests are in flight then)."""
    nodes = out / "emu" / "nodes"
    pid = wait_for(lambda: read_json(nodes / victim / "ready.json").get("pid"), 60, f"{victim} ready")
    wait_for(lambda: read_json(nodes / "edge1" / "progress.json").get("ok", 0) >= 2, 60, "edge1 progress")
    os.kill(pid, signal.SIGKILL)
    return time.monotonic()


def _results(out: Path):
    emu = out / "emu"
    return pd.read_parquet(emu / "requests.parquet"), json.loads((emu / "summary.json").read_text())


def _run_killing(out: Path, victim: str):
    """An emulation whose survivors carry on (--on-crash continue) after `victim` is SIGKILLed mid-run:
    asserts it ends partial with exit 1 and that nothing was lost; returns (requests, summary, kill time in the
    run's clock: seconds after T0, the time base of every table)."""
    p = _start(out, "--on-crash", "continue")
    try:
        killed = _kill_when_busy(out, victim)
        _, err = p.communicate(timeout=120)
    finally:
        p.kill()
    assert p.returncode == 1, err[-3000:]
    req, s = _results(out)
    assert s["partial"] is True and s["crashed_nodes"] == [victim]
    assert len(req) == 120 and req["status"].isin(["ok", "failed"]).all()  # nothing lost, nothing pending
    t0 = float((out / "emu" / "t0").read_text())
    return req, s, killed - t0


@pytest.mark.slow
def test_draft_killed_target_frees_state_and_serves_the_others(tmp_path):
    req, s, killed_s = _run_killing(tmp_path / "run", "edge1")
    mine = req["edge"] == "edge1"
    assert (req.loc[mine, "status"] == "failed").all()
    others = req[~mine]
    assert (others["status"] == "ok").all() and (others["tokens_out"] == others["output_tokens"]).all()
    target = s["nodes"]["cloud0"]
    assert target["dead_peers"] == ["edge1"] and target["requests_freed_on_timeout"] >= 1
    assert target["requests_active_at_end"] == 0 and target["exit_code"] == 0
    # the target kept serving after the draft died: requests of the other drafts that arrived after the kill
    # completed, and some of them finished after the target's peer timeout had expired (it detected the death
    # and went on serving)
    later = others[others["arrival_s"] > killed_s]
    assert len(later) >= 5, (killed_s, others["arrival_s"].max())
    timeout_s = 2.0  # run.request_timeout_s in LOAD
    assert (later["finish_s"] > killed_s + timeout_s).any(), (killed_s, later["finish_s"].max())


@pytest.mark.slow
def test_target_killed_drafts_fail_in_flight_requests(tmp_path):
    out = tmp_path / "run"
    req, s, _ = _run_killing(out, "cloud0")
    ok = req[req["status"] == "ok"]
    assert len(ok) >= 1 and (ok["tokens_out"] == ok["output_tokens"]).all()
    assert (req["status"] == "failed").sum() >= 1
    reasons = {}
    for d in ("edge0", "edge1", "edge2", "edge3"):
        info = s["nodes"][d]
        assert info["exit_code"] == 0 and info["dead_targets"] == ["cloud0"]
        for k, v in info["fail_reasons"].items():
            reasons[k] = reasons.get(k, 0) + v
    # one target: nowhere to re-route (testbed/faults.py rule 2), so they fail
    assert reasons.get("no_live_target", 0) + reasons.get("target_dead", 0) + reasons.get("request_timeout", 0) >= 1
    assert (out / "emu" / "rounds.parquet").is_file()


@pytest.mark.slow
def test_crashed_node_stops_the_run_by_default(tmp_path):
    out = tmp_path / "run"
    p = _start(out)
    try:
        t_kill = _kill_when_busy(out, "edge2")
        _, err = p.communicate(timeout=60)
        t_end = time.monotonic()
    finally:
        p.kill()
    assert p.returncode == 1, err[-3000:]
    req, s = _results(out)
    assert s["partial"] is True and "edge2" in s["partial_reason"]
    assert len(req) == 120
    assert (req.loc[req["edge"] == "edge2", "status"] == "failed").all()
    assert (req["status"] != "ok").sum() > (req["edge"] == "edge2").sum()  # the others were stopped, not finished
    for name, info in s["nodes"].items():
        assert info["exit_code"] is not None, name  # every child ended
    assert t_end - t_kill < 30
