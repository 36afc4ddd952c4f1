"""The schedule in DSD-Sim (issue 12): exact, closed-form checks of steps, capacity traces, outages with
retransmission, crashes with re-routing (rules of testbed/faults.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import one_edge_spec, scenario, write_native_trace
from testbed.faults import (
    DELAYED_ACK_S,
    RTO_MIN_S,
    AckClock,
    RttEstimator,
    heartbeat_s,
    housekeeping_s,
    loss_recovery_s,
    retransmit_until,
)
from testbed.sim import simulate


def steady(n: int, gap: float, prompt: int = 100, output: int = 200) -> list[tuple[float, int, int]]:
    return [(i * gap, prompt, output) for i in range(n)]


def test_delay_step_changes_the_round_trip_exactly_at_the_step(tmp_path):
    trace = write_native_trace(tmp_path / "t.jsonl", steady(20, 0.5))
    d = one_edge_spec(trace, delay_ms=10)
    d["schedule"] = {
        "links": [{"link": "edge0-cloud0", "steps": [{"at_s": 5.0, "delay_ms": 30}, {"at_s": 8.0, "delay_ms": 2}]}]
    }
    r = simulate(scenario(d))
    rd = r.rounds
    up = rd.target_recv_s - rd.send_s
    down = rd.recv_s - rd.batch_end_s
    expect_up = np.where(rd.send_s < 5, 0.010, np.where(rd.send_s < 8, 0.030, 0.002))
    expect_down = np.where(rd.batch_end_s < 5, 0.010, np.where(rd.batch_end_s < 8, 0.030, 0.002))
    # no reordering within a flow: after the 30 -> 2 ms step a message may wait for the one before it
    late = (rd.send_s >= 8) & (rd.send_s < 8.03)
    assert np.allclose(up[~late], expect_up[~late], atol=1e-9) and (up[late] >= 0.002 - 1e-9).all()
    late_d = (rd.batch_end_s >= 8) & (rd.batch_end_s < 8.03)
    assert np.allclose(down[~late_d], expect_down[~late_d], atol=1e-9)
    assert ((rd.send_s >= 5) & (rd.send_s < 8)).sum() > 10  # the step was exercised
    ev = r.schedule_events
    assert list(ev.kind) == ["link_params", "link_params"] and list(ev.t_s) == [5.0, 8.0]


def test_trace_link_delivers_only_at_opportunities(tmp_path):
    trace = write_native_trace(tmp_path / "t.jsonl", steady(10, 0.37, prompt=50, output=60))
    (tmp_path / "every10.up").write_text("\n".join(str(10 * k) for k in range(1, 11)) + "\n")  # 0.1 Mbit/s-ish
    d = one_edge_spec(trace, delay_ms=5, t_draft_ms=11.3)  # sends off the 10 ms grid: most wait for an opportunity
    d["schedule"] = {"links": [{"link": "edge0-cloud0", "trace_fwd": str(tmp_path / "every10.up")}]}
    r = simulate(scenario(d))
    rd = r.rounds
    left_link = rd.target_recv_s - 0.005  # the moment the VERIFY finished crossing the trace link
    ms = left_link * 1e3
    # opportunities only: released at an opportunity's millisecond, or within it at the packet's arrival
    # (Mahimahi's max(m, arrival), for a send inside an opportunity's millisecond)
    at_opp = np.isclose(ms, np.round(ms), atol=1e-6) & (np.round(ms) % 10 == 0)
    in_opp = np.isclose(left_link, rd.send_s, atol=1e-9) & (ms - np.floor(ms / 10 + 1e-9) * 10 <= 1 + 1e-6)
    assert (at_opp | in_opp).all() and ((left_link - rd.send_s)[at_opp] > 1e-6).sum() > len(rd) / 2  # most waited
    assert (left_link >= rd.send_s - 1e-9).all() and (left_link - rd.send_s < 0.010 + 1e-9).all()  # the next one
    down = rd.recv_s - rd.batch_end_s  # the other direction has no trace: plain 5 ms
    assert np.allclose(down, 0.005, atol=1e-9)


def test_outage_holds_messages_until_a_retransmission_after_the_link_is_back(tmp_path):
    trace = write_native_trace(tmp_path / "t.jsonl", steady(10, 0.8, output=400))
    d = one_edge_spec(trace, delay_ms=10)
    d["schedule"] = {"events": [{"at_s": 3.0, "kind": "link_down", "link": "edge0-cloud0", "until_s": 4.5}]}
    r = simulate(scenario(d))
    rd = r.rounds.sort_values("send_s")
    assert (r.requests.status == "ok").all()
    down = lambda t: 3.0 <= t < 4.5  # noqa: E731
    hit = rd[(rd.send_s >= 3.0) & (rd.send_s < 4.5)]
    assert len(hit) >= 1
    first = hit.iloc[0]
    # crossed at the first retransmission after the link is back: the tail-loss probe at send + PTO, then the RTO
    # timer from it, doubling (send + PTO + rto (1 + 2 + ... + 2^(k-1))). Steady 20 ms RTT samples (+ up to the delayed
    # ACK and the target's compute): rttvar stays at its 200 ms floor, rto = srtt + 200 ms, and the lone segment's PTO
    # (2 srtt + 200 ms) is capped at the rto: the retransmissions fall at send + rto 2^k
    waited = first.target_recv_s - 0.010 - first.send_s
    ks = [k for k in range(0, 8) if 0.22 <= waited / 2**k <= 0.28]
    assert len(ks) == 1
    rto = waited / 2 ** ks[0]
    resent = retransmit_until(first.send_s, rto, down, pto=rto)
    assert resent >= 4.5 and first.target_recv_s == pytest.approx(resent + 0.010, abs=1e-9)
    assert first.send_s + rto * 2 ** (ks[0] - 1) < 4.5  # the one before fell in the outage
    # later messages of the connection left with it (one byte stream), none crossed during the outage
    assert (hit.target_recv_s >= resent + 0.010 - 1e-9).all()
    crossed = rd.target_recv_s - 0.010
    assert not ((crossed >= 3.0) & (crossed < 4.5) & (rd.send_s >= 3.0)).any()
    ev = r.schedule_events
    assert list(ev.kind) == ["link_down", "link_up"]


def _two_targets(trace, **run):
    return {
        "name": "crash",
        "seed": 3,
        "nodes": [
            {"name": "edge0", "role": "draft", "profile": "edgec"},
            {"name": "sw0", "role": "switch"},
            {"name": "cloud0", "role": "target", "profile": "cloudc"},
            {"name": "cloud1", "role": "target", "profile": "cloudc"},
        ],
        "links": [
            {"a": "edge0", "b": "sw0", "delay_ms": 5},
            {"a": "sw0", "b": "cloud0", "delay_ms": 1},
            {"a": "sw0", "b": "cloud1", "delay_ms": 1},
        ],
        "workload": {"trace": str(trace), "format": "native", "duration_s": None},
        "policy": {"window": "static:4", "routing": "round_robin"},
        "profiles": {
            "edgec": {"draft_step": {"base_ms": 5.0}},
            "cloudc": {"prefill": {"base_ms": 20.0}, "verify": {"base_ms": 10.0}},
        },
        "run": {"peer_timeout_s": 0.5, "request_timeout_s": 5, **run},
    }


def test_crashed_target_requests_are_rerouted_and_finish_with_every_token(tmp_path):
    trace = write_native_trace(tmp_path / "t.jsonl", steady(40, 0.25, output=300))
    d = _two_targets(trace)
    d["schedule"] = {"events": [{"at_s": 3.0, "kind": "crash", "node": "cloud1", "until_s": 6.0}]}
    r = simulate(scenario(d))
    req, b, ev = r.requests, r.batches, r.schedule_events
    assert (req.status == "ok").all() and (req.tokens_out == req.output_tokens).all()
    assert r.summary["requests_rerouted"] == (ev.kind == "reroute").sum() > 0
    # detection (faults rule 2): at a housekeeping tick (every 62.5 ms = heartbeat 125 ms / 2, in the draft's own
    # phase) once nothing was heard
    # for the peer timeout (0.5 s): the last message from cloud1 came at most a heartbeat + a round trip before the
    # crash; back when it answers a heartbeat after the restart (and used again)
    every, hb = housekeeping_s(heartbeat_s(0.5)), heartbeat_s(0.5)
    heard = r.rounds[(r.rounds.target == "cloud1") & (r.rounds.recv_s < 3.0)].recv_s.max()
    (dead,) = ev[ev.kind == "target_dead"].t_s.tolist()
    assert 3.0 - hb - 0.012 + 0.5 < dead <= 3.0 + 0.5 + every and heard + 0.5 < dead
    (alive,) = ev[ev.kind == "target_alive"].t_s.tolist()
    assert 6.0 < alive <= 6.0 + hb + every + 0.012 + 1e-9
    c1 = b[b.target == "cloud1"]
    assert not ((c1.start_s >= 3.0) & (c1.start_s < 6.0)).any()  # a dead process runs nothing
    assert (c1.start_s >= 6.0).any()
    # between detection and restart, every new request went to cloud0
    assert (req[(req.arrival_s > dead) & (req.arrival_s < 6.0)].target == "cloud0").all()


def test_single_target_crash_fails_requests_and_nothing_hangs(tmp_path):
    trace = write_native_trace(tmp_path / "t.jsonl", steady(30, 0.2, output=300))
    d = one_edge_spec(trace, delay_ms=5)
    d["run"] = {"peer_timeout_s": 0.5, "request_timeout_s": 5, "drain_timeout_s": 30}
    d["schedule"] = {"events": [{"at_s": 2.0, "kind": "crash", "node": "cloud0", "until_s": 4.0}]}
    r = simulate(scenario(d))
    req = r.requests
    assert set(req.status) == {"ok", "failed"} and (req.status == "failed").sum() > 0
    ok = req[req.status == "ok"]
    assert (ok.tokens_out == ok.output_tokens).all()
    # failed: in flight at the crash (declared dead ~2.5 s), or arrived while it was believed dead: until it answered
    # a heartbeat after the restart (at most a heartbeat + a tick + a round trip after it)
    (alive,) = r.schedule_events.query("kind == 'target_alive'").t_s.tolist()
    assert 4.0 < alive <= 4.0 + heartbeat_s(0.5) + housekeeping_s(heartbeat_s(0.5)) + 0.010 + 1e-9
    failed = req[req.status == "failed"]
    assert (failed.arrival_s < alive).all()
    assert (req[req.arrival_s >= alive].status == "ok").all()


def test_short_crash_before_detection_ends_in_request_timeouts(tmp_path):
    """Restarted before anyone noticed: the requests it held are unknown to it; those whose message was lost
    wait for run.request_timeout_s (rule 5), those that send a VERIFY later are told and re-routed (rule 4)."""
    trace = write_native_trace(tmp_path / "t.jsonl", steady(20, 0.2, output=300))
    d = one_edge_spec(trace, delay_ms=5)
    d["run"] = {"peer_timeout_s": 2.0, "request_timeout_s": 3, "drain_timeout_s": 30}
    d["schedule"] = {"events": [{"at_s": 2.0, "kind": "crash", "node": "cloud0", "until_s": 2.3}]}
    r = simulate(scenario(d))
    req, ev = r.requests, r.schedule_events
    assert "target_dead" not in set(ev.kind)
    failed = req[req.status == "failed"]
    assert len(failed) > 0 and set(req.status) <= {"ok", "failed"}
    fails = ev[ev.kind == "fail"]
    assert fails.detail.str.contains("request_timeout").all()
    assert ((fails.t_s >= 2.0 + 3.0 - 0.1) & (fails.t_s < 2.3 + 3.0 + 0.1)).all()


def test_crashed_draft_loses_its_requests_and_takes_new_ones_after_restart(tmp_path):
    trace = write_native_trace(tmp_path / "t.jsonl", steady(30, 0.2, output=200))
    d = one_edge_spec(trace, delay_ms=5)
    d["schedule"] = {"events": [{"at_s": 2.0, "kind": "crash", "node": "edge0", "until_s": 3.0}]}
    r = simulate(scenario(d))
    req = r.requests
    during = req[(req.arrival_s >= 2.0) & (req.arrival_s < 3.0)]
    assert (during.status == "failed").all() and len(during) == 5
    assert (req[req.arrival_s >= 3.0].status == "ok").all()
    assert (req[(req.arrival_s < 2.0) & (req.status == "failed")].shape[0]) > 0
    assert not math.isnan(r.summary["ttft_ms"]["mean"])


def test_unscheduled_runs_are_unchanged_by_an_empty_schedule(tmp_path):
    trace = write_native_trace(tmp_path / "t.jsonl", steady(20, 0.3))
    a = simulate(scenario(one_edge_spec(trace, bw_mbps=5)))
    d = one_edge_spec(trace, bw_mbps=5)
    d["schedule"] = {"links": [], "events": []}
    b = simulate(scenario(d))
    assert a.requests.equals(b.requests) and a.rounds.equals(b.rounds) and b.schedule_events is None


def test_timeline_figure_of_a_scheduled_run(tmp_path):
    """`testbed sim` writes sim/events.parquet; the report draws the schedule timeline from it and spec.yaml."""
    import subprocess
    import sys
    from pathlib import Path

    from analysis.compare import load_side
    from analysis.plots import render_all

    trace = write_native_trace(tmp_path / "t.jsonl", steady(20, 0.3))
    (tmp_path / "every5.up").write_text("\n".join(str(5 * k) for k in range(1, 21)) + "\n")
    topo = tmp_path / "topo.yaml"
    import yaml

    d = one_edge_spec(trace, delay_ms=5)
    d["schedule"] = {
        "links": [
            {"link": "edge0-cloud0", "trace_rev": str(tmp_path / "every5.up"), "steps": [{"at_s": 2, "delay_ms": 20}]}
        ],
        "events": [{"at_s": 3, "kind": "link_down", "link": "edge0-cloud0", "until_s": 3.5}],
    }
    topo.write_text(yaml.safe_dump(d))
    out = tmp_path / "run"
    root = Path(__file__).resolve().parent.parent
    r = subprocess.run(
        [sys.executable, "-m", "testbed", "sim", str(topo), "--out", str(out), "--quiet"],
        cwd=root,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    ev = __import__("pandas").read_parquet(out / "sim" / "events.parquet")
    assert list(ev.kind) == ["link_params", "link_down", "link_up"]
    imgs = render_all([("sim", load_side(out / "sim", "sim", figures=True))])
    assert imgs["schedule"][:4] == b"\x89PNG"
    plain = tmp_path / "plain"
    d.pop("schedule")
    topo.write_text(yaml.safe_dump(d))
    subprocess.run(
        [sys.executable, "-m", "testbed", "sim", str(topo), "--out", str(plain), "--quiet"],
        cwd=root,
        check=True,
        capture_output=True,
    )
    assert "schedule" not in render_all([("sim", load_side(plain / "sim", "sim", figures=True))])


def test_rtt_estimator_follows_linux():
    """tcp_rtt_estimator + __tcp_set_rto, by hand: rto = srtt + rttvar, rttvar >= 200 ms and following the largest
    deviation (4 mdev) of a flight, decaying by a quarter of the excess per flight."""
    e = RttEstimator()
    assert e.rto() == 1.0  # TCP_TIMEOUT_INIT before a sample
    e.sample(0.1, 0.0, 0.1)  # first: srtt = 0.1, mdev = 0.2, rttvar = max(0.2, 200 ms)
    assert (e.srtt, e.mdev, e.rttvar) == pytest.approx((0.1, 0.2, 0.2)) and e.rto() == pytest.approx(0.3)
    e.sample(0.1, 0.2, 0.3)  # steady: mdev decays 0.2 -> 0.15, rttvar stays at the 200 ms floor
    assert (e.srtt, e.mdev, e.rttvar) == pytest.approx((0.1, 0.15, 0.2))
    e.sample(0.5, 0.3, 0.8)  # a spike of +0.4: srtt += 0.05; mdev = 0.15 + (0.4 - 0.0375) = 0.5125 = rttvar
    assert (e.srtt, e.mdev, e.rttvar) == pytest.approx((0.15, 0.5125, 0.5125)) and e.rto() == pytest.approx(0.6625)
    # back to 0.15 (no error): mdev = 3/4 0.5125, the largest of this flight (its floor RTO_MIN below it); the flight
    # ends (sent after the spike's ACK), so rttvar decays by a quarter of its excess over that
    e.sample(0.15, 0.9, 1.0)
    assert e.rttvar == pytest.approx(0.5125 - (0.5125 - 0.75 * 0.5125) / 4)
    e.sample(0.15, 0.95, 1.05)  # sent before this flight began (1.0): same flight, no further decay
    assert e.rttvar == pytest.approx(0.5125 - (0.5125 - 0.75 * 0.5125) / 4) and e.mdev_max > RTO_MIN_S
    e2 = RttEstimator()
    e2.sample(0.1, 0.0, 0.1)
    e2.sample(0.02, 0.2, 0.3)  # the RTT fell by 80 ms: mdev gains only (0.08 - 0.05) / 8
    assert e2.mdev == pytest.approx(0.2 + (0.08 - 0.05) / 8)


def test_ack_clock_delayed_ack_piggyback_and_second_segment():
    c = AckClock(lambda t: 0.010)
    c.arrived(0.0, 0.010, 1)  # alone, nothing sent back: delayed ACK 40 ms after the arrival, 10 ms back
    c.settle(1.0)
    assert c.est.srtt == pytest.approx(0.010 + DELAYED_ACK_S + 0.010)
    c = AckClock(lambda t: 0.010)
    c.arrived(0.0, 0.010, 1)
    c.receiver_sends(0.005)  # before the arrival: acknowledges nothing
    assert c.est.srtt == 0.0
    c.receiver_sends(0.025)  # the reply carries the ACK
    assert c.est.srtt == pytest.approx(0.035)
    c = AckClock(lambda t: 0.010)
    c.arrived(0.0, 0.010, 1)
    c.arrived(0.001, 0.012, 1)  # a second segment waiting: ACK at once; the sample is the oldest message's
    assert c.est.srtt == pytest.approx(0.022) and not c.unacked


def test_loss_recovery_rack_tail_probe_rto():
    e = RttEstimator()
    e.sample(0.1, 0.0, 0.1)
    assert loss_recovery_s(e, tail=False, alone=False) == pytest.approx(0.125)  # RACK: srtt + srtt / 4
    assert loss_recovery_s(e, tail=True, alone=False) == pytest.approx(0.202)  # PTO 2 srtt + 2 ms
    assert loss_recovery_s(e, tail=True, alone=True) == pytest.approx(0.3)  # 2 srtt + 200 ms, capped at the RTO


def test_outage_retransmissions_probe_then_doubling_rto():
    down = lambda t: 1.0 <= t < 4.0  # noqa: E731
    assert retransmit_until(0.5, 0.3, down, pto=0.25) == 0.5  # up: leaves now
    # probe at 1.25, then 1.25 + 0.3, + 0.6, + 1.2, + 2.4: 1.55, 2.15, 3.35, 5.75
    assert retransmit_until(1.0, 0.3, down, pto=0.25) == pytest.approx(5.75)
    assert retransmit_until(1.0, 0.3, down) == pytest.approx(1.0 + 0.3 * 15)  # no probe: 1, 3, 7, 15 rto
