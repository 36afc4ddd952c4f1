"""Issue 17: the as-built rule (residuals both probes agree on), the robust verdicts (arrival window, routing-matched
subset, seeds with CIs) and the disturbance record, on known inputs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from analysis.compare import compare_run, seed_verdict
from analysis.disturbance import assess
from testbed.spec import load_scenario
from testbed.spec.asbuilt import agreed, as_built_spec, path_residuals
from testbed.tables import BATCH_COLUMNS, REQUEST_COLUMNS, ROUND_COLUMNS, frame, write_tables

ROOT = Path(__file__).resolve().parents[1]


def test_agreed_residual_rule():
    assert agreed(2.0, None) == 2.0  # one probe only: as measured
    assert agreed(2.0, 0.5) == 0.5 and agreed(0.4, 3.0) == 0.4  # the smaller of two of the same sign
    assert agreed(-1.0, -0.3) == -0.3
    assert agreed(2.5, -0.2) == 0.0 and agreed(0.0, 1.0) == 0.0  # disagreeing: nothing baked in


def _path(src: str, dst: str, conf: float, meas: float) -> dict:
    return {
        "src": src,
        "dst": dst,
        "configured": {"rtt_ms": conf},
        "measured": {"rtt_p50_ms": meas},
        "rtt_error_ms": meas - conf,
    }


def test_as_built_uses_what_both_probes_agree_on():
    sc = load_scenario(ROOT / "topologies" / "star-4edge.yaml")
    d0, d1 = sc.drafts[0], sc.drafts[1]
    t = sc.reachable[d0][0]
    conf = 20.0
    before = {
        "paths": [
            _path(d0, t, conf, conf + 4.0),
            _path(d1, t, conf, conf + 1.0),
            _path(sc.drafts[2], t, conf, conf + 0.5),
        ]
    }
    # before only: the whole residual (4 ms RTT -> +2 ms one way on d0's access link); 0.5 ms is within the
    # verification tolerance (0.6 ms at 20 ms): no correction
    _, ch = as_built_spec(sc, before)
    by = {c["a"]: c["residual_ms"] for c in ch}
    assert by == {d0: pytest.approx(2.0), d1: pytest.approx(0.5)}
    # after the run d0's path shows +1.4 ms (the 4 ms were contention during the first probe), d1's -0.2 ms
    after = {
        **before,
        "after": {"paths": [{"src": d0, "dst": t, "rtt_error_ms": 1.4}, {"src": d1, "dst": t, "rtt_error_ms": -0.2}]},
    }
    res = {(s, d): r for s, d, r in path_residuals(after)}
    assert res[(d0, t)] == pytest.approx(1.4) and res[(d1, t)] == 0.0
    spec, ch = as_built_spec(sc, after)
    assert [c["a"] for c in ch] == [d0] and ch[0]["residual_ms"] == pytest.approx(0.7)
    li = ch[0]["link"]
    assert spec.links[li].delay_ms == pytest.approx(sc.spec.links[li].delay_ms + 0.7)
    # both probes within tolerance: the configured network, unchanged
    calm = {"paths": [_path(d0, t, conf, conf + 0.3)], "after": {"paths": [{"src": d0, "dst": t, "rtt_error_ms": 0.5}]}}
    assert as_built_spec(sc, calm)[1] == []


def test_a_residual_within_the_medians_standard_error_is_none():
    """With jitter a median of 100 probes is known to ~1 ms: a residual of 0.8 ms on a path whose RTT std is 7 ms
    (standard error 0.88 ms) is not the network's and corrects nothing; the same residual with 0.5 ms std does."""
    from testbed.spec.asbuilt import median_se_ms, rtt_tolerance_ms

    assert median_se_ms(7.0, 100) == pytest.approx(0.8773, abs=1e-4) and median_se_ms(None, 100) == 0.0
    assert rtt_tolerance_ms(20.0) == 0.6 and rtt_tolerance_ms(20.0, 0.88) == pytest.approx(1.76)
    sc = load_scenario(ROOT / "topologies" / "star-4edge.yaml")
    d0, d1 = sc.drafts[0], sc.drafts[1]
    t = sc.reachable[d0][0]
    paths = [_path(d0, t, 20.0, 20.8), _path(d1, t, 20.0, 20.8)]
    paths[0]["measured"].update(rtt_std_ms=7.0, samples=100)
    paths[1]["measured"].update(rtt_std_ms=0.5, samples=100)
    res = {s: r for s, _, r in path_residuals({"paths": paths})}
    assert res == {d0: 0.0, d1: pytest.approx(0.8)}


def _side(d: Path, rows: list[tuple]) -> None:
    """rows: (request_id, target, arrival, ttft_s, e2e_s, status); 11 output tokens each."""
    reqs = [
        (
            rid,
            "edge0",
            tgt,
            a,
            a + 0.001,
            a + f if st == "ok" else math.nan,
            a + e if st == "ok" else math.nan,
            10,
            11,
            11 if st == "ok" else 0,
            1,
            4,
            2,
            st,
        )
        for rid, tgt, a, f, e, st in rows
    ]
    write_tables(d, frame(REQUEST_COLUMNS, reqs), frame(ROUND_COLUMNS, []), frame(BATCH_COLUMNS, []))
    (d / "summary.json").write_text("{}")


def test_robust_verdict_ignores_tail_and_routing_race(tmp_path):
    run = tmp_path / "run"
    base = [(i, "c0" if i % 2 else "c1", float(i), 0.1, 1.0, "ok") for i in range(10)]
    _side(run / "sim", base)
    emu = list(base)
    emu[9] = (9, "c1", 9.0, 0.1, 5.0, "ok")  # routed elsewhere (a race) and finished late: the run's duration grows
    emu[3] = (3, "c1", 3.0, 0.5, 1.4, "ok")  # routed elsewhere, served slowly there
    _side(run / "emu", emu)
    doc, _, _ = compare_run(run)
    plain = {r["metric"]: r for r in doc["metrics"]}
    robust = {r["metric"]: r for r in doc["robust"]}
    assert plain["request_throughput_rps"]["pass"] is False  # 10 / 10 s vs 10 / 14 s
    assert plain["ttft_ms.mean"]["pass"] is False
    assert robust["window_throughput_rps"]["rel_error"] == pytest.approx(0.0)  # 9 of 10 finish within [0, 9] s on both
    assert doc["robust_facts"]["matched_requests"] == 8
    assert robust["matched.ttft_ms.mean"]["rel_error"] == pytest.approx(0.0) and robust["matched.e2e_ms.p99"]["pass"]
    assert doc["disturbance"] is None  # an emu side without an emulator record: nothing to judge
    json.dumps(doc, allow_nan=False)


def test_seed_verdict_mean_and_ci():
    docs = [
        {
            "metrics": [
                {"metric": "m", "rel_error": e, "tolerance": 0.05},
                {"metric": "i", "rel_error": 1.0, "tolerance": None},
            ]
        }
        for e in (0.02, 0.04, 0.06)
    ]
    v = {r["metric"]: r for r in seed_verdict(docs)}
    assert v["m"]["mean_rel_error"] == pytest.approx(0.04) and v["m"]["n"] == 3 and v["m"]["pass"] is True
    assert v["m"]["ci95"] == pytest.approx(4.303 * 0.02 / math.sqrt(3))
    assert v["i"]["pass"] is None
    docs[2]["metrics"][0]["rel_error"] = 0.2
    assert {r["metric"]: r for r in seed_verdict(docs)}["m"]["pass"] is False


def test_disturbance_record(tmp_path):
    emu = tmp_path / "run" / "emu"
    emu.mkdir(parents=True)
    calm = {
        "emulator": {"host_load": {"cores": 2, "runnable_mean": 1.2, "cpu_busy_frac": 0.5}},
        "nodes": {"edge0": {"timer_lateness": {"p99_us": 300.0}}},
    }
    links = {
        "paths": [_path("edge0", "cloud0", 20.0, 20.3)],
        "after": {"paths": [{"src": "edge0", "dst": "cloud0", "rtt_error_ms": 0.1, "measured": {"rtt_std_ms": 0.2}}]},
        "shaping_detail": {
            "delayline_stats": {
                "cloud0": {
                    "released": 1000,
                    "late_over_1ms": 2,
                    "late_mean_us": 20.0,
                    "late_max_us": 1500.0,
                    "sched": "fifo",
                }
            }
        },
    }
    (emu / "summary.json").write_text(json.dumps(calm))
    (emu / "links.json").write_text(json.dumps(links))
    d = assess(tmp_path / "run")
    assert d["trusted"] is True and d["warnings"] == [] and d["delay_line"]["late_over_1ms"] == 2
    busy = {
        "emulator": {"host_load": {"cores": 2, "runnable_mean": 6.0, "cpu_busy_frac": 1.0}},
        "nodes": {"edge0": {"timer_lateness": {"p99_us": 9000.0}}},
    }
    links["after"]["paths"][0]["rtt_error_ms"] = 3.0
    links["shaping_detail"]["delayline_stats"]["cloud0"]["late_over_1ms"] = 50
    (emu / "summary.json").write_text(json.dumps(busy))
    (emu / "links.json").write_text(json.dumps(links))
    d = assess(tmp_path / "run")
    assert d["trusted"] is False and len(d["warnings"]) == 4
    assert any("host busy" in w for w in d["warnings"]) and any("edge0->cloud0" in w for w in d["warnings"])
    assert assess(tmp_path / "nothing") is None


def test_lateness_is_judged_by_what_it_adds_to_a_round(tmp_path):
    """With rounds, node-timer and delay-line lateness distrust a run when they add over 1 % to the mean round: a
    p99 of 4 ms with a mean of 0.2 ms on a 120 ms round does not; a mean of 1 ms at drafts and targets does."""
    emu = tmp_path / "run" / "emu"
    emu.mkdir(parents=True)

    def warnings(draft_mean: float, dl_mean: float) -> list[str]:
        nodes = {
            "edge0": {"role": "draft", "timer_lateness": {"mean_us": draft_mean, "p99_us": 4000.0}},
            "cloud0": {"role": "target", "timer_lateness": {"mean_us": draft_mean, "p99_us": 3000.0}},
        }
        summary = {"tpot_ms": {"mean": 40.0}, "tokens_per_round": 3.0, "nodes": nodes}  # a 120 ms round
        stats = {"cloud0": {"released": 1000, "late_over_1ms": 30, "late_mean_us": dl_mean}}
        links = {"paths": [{**_path("edge0", "cloud0", 20.0, 20.1), "hops": [0, 1]}]}
        links["shaping_detail"] = {"delayline_stats": stats}
        (emu / "summary.json").write_text(json.dumps(summary))
        (emu / "links.json").write_text(json.dumps(links))
        return assess(tmp_path / "run")["warnings"]

    assert warnings(200.0, 100.0) == []  # 0.33 % and 0.33 % of the round, though p99 > 2 ms and 3 % over 1 ms
    w = warnings(1000.0, 100.0)
    assert len(w) == 1 and w[0].startswith("node timers late: mean 1000 us at drafts + 1000 us at targets, 1.7 %")
    w = warnings(200.0, 400.0)  # 2 x 2 hops x 0.4 ms = 1.6 ms: 1.3 % of the round
    assert len(w) == 1 and w[0].startswith("delay line late: 30 of 1000") and "1.3 % of a 120 ms round" in w[0]


def test_report_shows_disturbance_robust_verdict_and_both_predictions(tmp_path):
    from analysis.report import build

    run = tmp_path / "run"
    rows = [(i, "c0", float(i), 0.1, 1.0, "ok") for i in range(6)]
    _side(run / "sim", rows)
    _side(run / "sim-configured", [(i, "c0", float(i), 0.2, 1.1, "ok") for i in range(6)])
    _side(run / "emu", [(i, "c0", float(i), 0.11, 1.0, "ok") for i in range(6)])
    (run / "emu" / "summary.json").write_text(
        json.dumps({"emulator": {"host_load": {"cores": 2, "runnable_mean": 5.0}}})
    )
    (run / "emu" / "links.json").write_text(
        json.dumps(
            {
                "paths": [_path("edge0", "c0", 20.0, 20.2)],
                "after": {
                    "paths": [{"src": "edge0", "dst": "c0", "rtt_error_ms": 2.5, "measured": {"rtt_std_ms": 1.0}}]
                },
            }
        )
    )
    build(run)
    page = (run / "report.html").read_text()
    doc = json.loads((run / "compare.json").read_text())
    assert "id='disturbance'" in page and "host busy" in page and "edge0-&gt;c0" in page
    assert "id='robust-table'" in page and "id='predictions-table'" in page
    p = doc["predictions"]
    assert p["configured"]["rel_error"]["ttft_ms.mean"] == pytest.approx(0.11 / 0.2 - 1)
    assert p["as-built"]["rel_error"]["ttft_ms.mean"] == pytest.approx(0.1)
    assert doc["disturbance"]["trusted"] is False


def test_host_busy_counts_only_load_that_is_not_the_runs_own(tmp_path):
    """A run that fills the cores by itself (real models on 2 cores) is not disturbed; other jobs' load is."""
    emu = tmp_path / "run" / "emu"
    emu.mkdir(parents=True)

    def host_warnings(host: dict) -> list[str]:
        (emu / "summary.json").write_text(json.dumps({"emulator": {"host_load": host}}))
        return [w for w in assess(tmp_path / "run")["warnings"] if w.startswith("host busy")]

    base = {"cores": 2, "runnable_mean": 2.6, "cpu_busy_frac": 1.0}
    assert host_warnings({**base, "own_runnable_mean": 2.5, "foreign_runnable_mean": 0.1}) == []
    w = host_warnings({**base, "own_runnable_mean": 0.4, "foreign_runnable_mean": 2.2, "foreign_cpu_busy_frac": 0.8})
    assert len(w) == 1 and "2.2 of them not the run's own" in w[0] and "80 %" in w[0]
    assert host_warnings({**base, "own_runnable_mean": 1.0, "foreign_runnable_mean": 0.5}) != []
    assert host_warnings({**base, "runnable_mean": 1.5, "foreign_runnable_mean": 1.5}) == []  # cores not full
    assert host_warnings(base) != []  # an older record without the split: the total alone


def test_host_load_sampler_counts_the_runs_own_processes():
    """HostLoad: a busy child of the orchestrator (as a node computing) is the run's own load, runnable in nearly
    every sample, and its CPU time is the run's own; the foreign share is what is left."""
    import os
    import subprocess
    import sys
    import time

    from testbed.emu.hostload import HostLoad, own_processes

    child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        assert child.pid in own_processes([os.getpid()])
        h = HostLoad(every_s=0.0)
        h.start()
        for _ in range(8):
            time.sleep(0.05)
            h.sample()
        r = h.report()
    finally:
        child.kill()
        child.wait()
    assert r["samples"] == 8 and r["own_runnable_mean"] >= 0.75  # a busy loop is 'R' (running or waiting for a CPU)
    assert r["foreign_runnable_mean"] == pytest.approx(r["runnable_mean"] - r["own_runnable_mean"], abs=0.01)
    assert r["own_cpu_frac"] > 0 and r["foreign_cpu_busy_frac"] is not None
