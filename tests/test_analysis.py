"""analysis/: compare (relative errors, tolerances, missing values), report.html (sim-only, sim+emu, partial), CLI."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from analysis.compare import METRICS, TOLERANCES, compare_run, compare_runs, judge, relative_error
from testbed.tables import BATCH_COLUMNS, REQUEST_COLUMNS, ROUND_COLUMNS, frame, write_tables

ROOT = Path(__file__).resolve().parent.parent


# ---- known tables ----------------------------------------------------------------------------------------------


def write_side(
    d: Path,
    scale: float = 1.0,
    *,
    n: int = 4,
    status: str = "ok",
    gamma: int = 4,
    accepted: int = 2,
    summary: dict | None = None,
) -> None:
    """n requests arriving 1 s apart; TTFT = 100*scale ms, TPOT = 100*scale ms (10 output tokens), E2E = 1000*scale ms;
    3 rounds per request of `gamma` drafted / `accepted` accepted; one verify batch (size 1, 50 ms) per round."""
    reqs, rounds, batches = [], [], []
    for i in range(n):
        a = float(i)
        first, fin = a + 0.1 * scale, a + 1.0 * scale
        ok = status == "ok"
        reqs.append(
            (
                i,
                f"edge{i % 2}",
                "cloud0",
                a,
                a + 0.01,
                first if ok else math.nan,
                fin if ok else math.nan,
                100,
                10,
                10 if ok else 3,
                3,
                3 * gamma,
                3 * accepted,
                status,
            )
        )
        for k in range(3):
            t = first + 0.2 * k
            rounds.append(
                (
                    i,
                    k,
                    f"edge{i % 2}",
                    "cloud0",
                    1 + k,
                    gamma,
                    accepted,
                    accepted + 1,
                    t,
                    t + 0.01,
                    t + 0.02,
                    t + 0.03,
                    t + 0.08,
                    t + 0.09,
                    1,
                    0,
                )
            )
            batches.append(("cloud0", "verify", t + 0.03, t + 0.08, 1, gamma + 1))
    write_tables(d, frame(REQUEST_COLUMNS, reqs), frame(ROUND_COLUMNS, rounds), frame(BATCH_COLUMNS, batches))
    (d / "summary.json").write_text(json.dumps(summary or {"note": "numbers here must be ignored"}))


def row(doc: dict, metric: str) -> dict:
    return next(r for r in doc["metrics"] if r["metric"] == metric)


def test_relative_error_and_judging():
    assert relative_error(100.0, 110.0) == pytest.approx(0.10)
    assert relative_error(100.0, 90.0) == pytest.approx(-0.10)
    assert relative_error(-2.0, -1.0) == pytest.approx(0.5)  # against |reference|
    assert relative_error(0.0, 0.0) == 0.0
    assert relative_error(0.0, 1.0) is None
    assert relative_error(None, 1.0) is None and relative_error(1.0, None) is None
    assert relative_error(math.nan, 1.0) is None
    assert judge(100.0, 104.0, 0.05)[:2] == (pytest.approx(0.04), True)
    assert judge(100.0, 106.0, 0.05)[1] is False
    assert judge(100.0, 95.0, 0.05)[1] is True  # the boundary is inside
    assert judge(0.0, 0.0, 0.05)[:2] == (0.0, True)
    err, ok, note = judge(0.0, 3.0, 0.05)
    assert err is None and ok is False and "reference is 0" in note
    assert judge(None, None, 0.05)[:2] == (None, None)
    assert judge(None, 1.0, 0.05)[:2] == (None, False)
    assert judge(1.0, 2.0, None)[:2] == (pytest.approx(1.0), None)  # info rows are shown, not judged


def test_tolerance_table():
    kinds = {m.key: m.kind for m in METRICS}
    assert TOLERANCES[kinds["ttft_ms.mean"]] == 0.05 and TOLERANCES[kinds["tpot_ms.p99"]] == 0.15
    assert TOLERANCES[kinds["request_throughput_rps"]] == 0.05
    assert TOLERANCES[kinds["requests_completed"]] is None
    keys = set(kinds)
    for k in ("ttft_ms", "tpot_ms", "e2e_ms"):
        assert {f"{k}.{s}" for s in ("mean", "p50", "p90", "p99")} <= keys
    assert {
        "request_throughput_rps",
        "output_token_throughput_tps",
        "goodput_rps",
        "acceptance_rate",
        "tokens_per_round",
        "mean_gamma",
        "target_batch_size",
    } <= keys


def test_compare_known_tables(tmp_path):
    run = tmp_path / "run"
    write_side(run / "sim", 1.0)
    write_side(run / "emu", 1.1)  # every latency 10 % longer
    doc, _, _ = compare_run(run)
    assert doc["columns"] == ["sim", "emu"]
    r = row(doc, "ttft_ms.mean")
    assert r["sim"] == pytest.approx(100.0) and r["emu"] == pytest.approx(110.0)
    assert r["rel_error"] == pytest.approx(0.10) and r["abs_error"] == pytest.approx(10.0)
    assert r["tolerance"] == 0.05 and r["pass"] is False
    assert row(doc, "tpot_ms.mean")["rel_error"] == pytest.approx(0.10)
    assert row(doc, "e2e_ms.p99")["rel_error"] == pytest.approx(0.10) and row(doc, "e2e_ms.p99")["pass"] is True
    # duration = last finish: 3 + 1.0 vs 3 + 1.1 -> throughput ratio 4 / 4.1
    assert row(doc, "request_throughput_rps")["rel_error"] == pytest.approx(4.0 / 4.1 - 1)
    assert row(doc, "request_throughput_rps")["pass"] is True
    for m in ("acceptance_rate", "tokens_per_round", "mean_gamma", "target_batch_size"):
        assert row(doc, m)["rel_error"] == 0.0 and row(doc, m)["pass"] is True
    assert row(doc, "acceptance_rate")["sim"] == pytest.approx(0.5)
    assert row(doc, "requests_completed")["pass"] is None and row(doc, "requests_completed")["sim"] == 4
    assert "ttft_ms.mean" in doc["verdict"]["failed"] and "e2e_ms.p99" not in doc["verdict"]["failed"]
    assert doc["verdict"]["all_within_tolerance"] is False
    # per node
    assert doc["per_node"]["edges"]["emu"]["edge0"]["ttft_ms"]["mean"] == pytest.approx(110.0)
    assert doc["per_node"]["targets"]["sim"]["cloud0"]["requests_routed"] == 4
    json.dumps(doc, allow_nan=False)  # strict JSON: no NaN / inf anywhere


def test_compare_missing_values(tmp_path):
    run = tmp_path / "run"
    write_side(run / "sim", 1.0, gamma=0, accepted=0)  # no speculation: acceptance and mean gamma undefined
    write_side(run / "emu", 1.0, gamma=0, accepted=0, status="failed")  # nothing completed
    doc, _, _ = compare_run(run)
    ttft = row(doc, "ttft_ms.mean")
    assert ttft["sim"] == pytest.approx(100.0) and ttft["emu"] is None
    assert ttft["rel_error"] is None and ttft["pass"] is False and ttft["note"]
    acc = row(doc, "acceptance_rate")
    assert acc["sim"] is None and acc["emu"] is None and acc["pass"] is None
    thr = row(doc, "request_throughput_rps")  # emu completed 0: relative error -100 %
    assert thr["emu"] == 0.0 and thr["rel_error"] == pytest.approx(-1.0) and thr["pass"] is False
    json.dumps(doc, allow_nan=False)


def test_compare_reference_zero(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    write_side(a / "sim", 1.0, status="failed")  # run A: throughput 0
    write_side(b / "sim", 1.0)
    doc, _, _ = compare_runs(a, b)
    assert doc["kind"] == "run-vs-run" and doc["columns"] == ["A", "B"]
    thr = row(doc, "request_throughput_rps")
    assert thr["A"] == 0.0 and thr["B"] > 0 and thr["rel_error"] is None and thr["pass"] is False
    assert "reference is 0" in thr["note"]


def test_compare_runs_prefers_emu(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    write_side(a / "sim", 1.0)
    write_side(a / "emu", 2.0)
    write_side(b / "sim", 1.0)
    doc, sa, sb = compare_runs(a, b)
    assert sa.path == a / "emu" and sb.path == b / "sim"
    assert row(doc, "ttft_ms.mean")["A"] == pytest.approx(200.0)


def test_sim_only_and_emu_only(tmp_path):
    run = tmp_path / "run"
    write_side(run / "sim", 1.0)
    doc, sim, emu = compare_run(run)
    assert emu is None and doc["summaries"]["emu"] is None
    assert row(doc, "ttft_ms.mean")["emu"] is None and row(doc, "ttft_ms.mean")["pass"] is None
    assert doc["verdict"]["judged"] == 0 and any("emu" in n for n in doc["notes"])
    shutil.move(str(run / "sim"), str(run / "emu"))
    doc, sim, emu = compare_run(run)
    assert sim is None and row(doc, "ttft_ms.mean")["emu"] == pytest.approx(100.0)


# ---- runs from the simulator -------------------------------------------------------------------------------------


def _sim(out: Path, *sets: str) -> None:
    args = [
        sys.executable,
        "-m",
        "testbed",
        "sim",
        "topologies/star-4edge.yaml",
        "--out",
        str(out),
        "--quiet",
        "--set",
        "workload.trace=synthetic",
        "--set",
        "workload.synthetic.n_requests=40",
        "--set",
        "workload.synthetic.rate_rps=4",
        "--set",
        "workload.duration_s=null",
    ]
    for s in sets:
        args += ["--set", s]
    r = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr


@pytest.fixture(scope="module")
def sim_runs(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("runs")
    _sim(base / "s1")
    _sim(base / "s2", "seed=2")
    return base / "s1", base / "s2"


def links_json() -> dict:
    """As written by testbed/emu/net/verify.py (the fields the report reads)."""
    paths = []
    for i, ok in ((0, True), (1, False)):
        paths.append(
            {
                "src": f"edge{i}",
                "dst": "cloud0",
                "hops": [i, 4],
                "configured": {
                    "one_way_delay_ms": 11.0,
                    "rtt_ms": 22.01,
                    "rtt_std_ms": 0.0,
                    "loss_pct": 0.0,
                    "rtt_loss_pct": 0.0,
                    "rate_mbps": 100.0,
                },
                "measured": {
                    "rtt_p50_ms": 22.4 if ok else 25.0,
                    "rtt_p99_ms": 23.1,
                    "rtt_mean_ms": 22.5,
                    "rtt_std_ms": 0.2,
                    "samples": 50,
                    "lost": 0,
                    "loss_pct": 0.0,
                    "rate_mbps": 97.5,
                },
                "rtt_error_ms": 0.39 if ok else 2.99,
                "problems": [] if ok else ["RTT p50 25.000 ms vs configured 22.010 ms"],
                "ok": ok,
            }
        )
    return {
        "backends": {"network": "mininet", "shaping": "userspace"},
        "mode": "quick",
        "paths": paths,
        "links": [{"index": 0, "a": "edge0", "b": "sw0", "bw_mbps": 100, "delay_ms": 10}],
        "warnings": ["path edge1->cloud0: RTT p50 25.000 ms vs configured 22.010 ms"],
    }


def make_emu_run(sim_runs, dest: Path) -> Path:
    """A sim+emu run: the emulated side stands in as the seed-2 simulation (same schema as the emulator's)."""
    s1, s2 = sim_runs
    shutil.copytree(s1, dest)
    shutil.copytree(s2 / "sim", dest / "emu")
    (dest / "emu" / "links.json").write_text(json.dumps(links_json()))
    return dest


def test_report_sim_only(sim_runs, tmp_path):
    from analysis.report import build

    run = tmp_path / "run"
    shutil.copytree(sim_runs[0], run)
    res = build(run)
    page = (run / "report.html").read_text()
    assert "Sim-only report" in page and "star-4edge" in page
    assert page.count("data:image/png;base64,") == 5
    assert "id='comparison-table'" in page and "id='edges-table'" in page
    for p in res["plots"]:
        assert p.is_file() and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((run / "compare.json").read_text())["summaries"]["emu"] is None
    assert "<script" not in page and "http://" not in page and "https://" not in page  # self-contained


def test_report_sim_and_emu(sim_runs, tmp_path):
    from analysis.report import build

    run = make_emu_run(sim_runs, tmp_path / "run")
    build(run)
    page = (run / "report.html").read_text()
    assert "Sim-only" not in page and "Partial run" not in page
    assert page.count("data:image/png;base64,") == 5
    assert "<td class='pass'" in page  # errors highlighted
    doc = json.loads((run / "compare.json").read_text())
    assert doc["verdict"]["judged"] > 0
    # seed 2 against seed 1 on 40 requests: some metrics inside tolerance, some outside (deterministic simulations)
    assert doc["verdict"]["failed"] and doc["verdict"]["passed"] > 0
    assert page.count("<td class='fail'") >= len(doc["verdict"]["failed"])
    assert "id='links-table'" in page and "edge1 → cloud0" in page and "RTT p50 25.000 ms" in page
    assert "mininet" in page  # the backends of the as-built network
    assert "id='robust-table'" in page and doc["robust_verdict"]["judged"] == len(doc["robust"])


def test_report_partial_run(sim_runs, tmp_path):
    from analysis.report import build

    run = make_emu_run(sim_runs, tmp_path / "run")
    import pandas as pd

    req = pd.read_parquet(run / "emu" / "requests.parquet")
    late = req["arrival_s"] > req["arrival_s"].median()
    req.loc[late, "status"] = "unfinished"
    req.loc[late, ["first_token_s", "finish_s"]] = np.nan
    req.to_parquet(run / "emu" / "requests.parquet", index=False)
    s = json.loads((run / "emu" / "summary.json").read_text())
    s.update({"partial": True, "partial_reason": "interrupted", "crashed_nodes": ["edge2"]})
    (run / "emu" / "summary.json").write_text(json.dumps(s))
    build(run)
    page = (run / "report.html").read_text()
    assert "Partial run" in page and "interrupted" in page and "edge2" in page
    assert "unfinished" in page
    doc = json.loads((run / "compare.json").read_text())
    assert doc["sides"]["emu"]["partial"] is True and doc["sides"]["emu"]["requests_unfinished"] == int(late.sum())
    assert any("partial" in n for n in doc["notes"])


@pytest.mark.slow
def test_report_emu_dir_without_tables(sim_runs, tmp_path):
    from analysis.report import build

    run = tmp_path / "run"
    shutil.copytree(sim_runs[0], run)
    (run / "emu" / "logs").mkdir(parents=True)
    (run / "emu" / "summary.json").write_text(json.dumps({"partial": True, "partial_reason": "node cloud0 died"}))
    build(run)
    page = (run / "report.html").read_text()
    assert "Sim-only report" in page and "node cloud0 died" in page and "emulation results" in page


def test_cli_compare_and_report(sim_runs, tmp_path, capsys):
    from testbed.cli import main

    run = make_emu_run(sim_runs, tmp_path / "run")
    assert main(["compare", str(run)]) == 0
    out = capsys.readouterr().out
    assert "TTFT mean" in out and "within tolerance" in out and (run / "compare.json").is_file()
    assert main(["compare", str(sim_runs[0]), str(sim_runs[1]), "--json", str(tmp_path / "ab.json")]) == 0
    assert json.loads((tmp_path / "ab.json").read_text())["kind"] == "run-vs-run"
    capsys.readouterr()
    for args in (
        ("compare", str(tmp_path / "missing")),
        ("compare", str(tmp_path)),
        ("report", str(tmp_path / "missing")),
        ("compare", str(run), str(tmp_path / "missing")),
    ):
        assert main(list(args)) == 2, args
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and str(tmp_path) in lines[0], lines
    # end to end, as a user runs it
    r = subprocess.run(
        [sys.executable, "-m", "testbed", "report", str(run)], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert r.returncode == 0, r.stderr
    assert "report:" in r.stdout and (run / "report.html").is_file() and len(list((run / "plots").glob("*.png"))) == 5


def test_bad_table_is_input_error(tmp_path):
    from analysis.compare import load_run
    from testbed.errors import InputError

    run = tmp_path / "run"
    write_side(run / "sim")
    (run / "sim" / "rounds.parquet").write_text("not parquet")
    with pytest.raises(InputError, match="rounds.parquet"):
        load_run(run)


def test_dependency_rules():
    code = (
        "import sys, analysis.compare; assert 'matplotlib' not in sys.modules, 'compare imports matplotlib'; "
        "import analysis.report, analysis.plots; "
        "bad = [m for m in sys.modules if m.startswith(('testbed.sim', 'testbed.emu', 'zmq', 'mininet', 'nodes'))]; "
        "assert not bad, bad"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr


def test_report_emu_tables_empty(sim_runs, tmp_path):
    """An emulation that collected tables with no rows (everything died at once) still gets a report."""
    from analysis.report import build

    run = tmp_path / "run"
    shutil.copytree(sim_runs[0], run)
    write_side(run / "emu", n=0, summary={"partial": True, "partial_reason": "every target exited"})
    build(run)
    page = (run / "report.html").read_text()
    assert "Partial run" in page and "every target exited" in page
    assert page.count("data:image/png;base64,") == 5
    doc = json.loads((run / "compare.json").read_text())
    assert row(doc, "ttft_ms.mean")["emu"] is None and row(doc, "ttft_ms.mean")["pass"] is False


def test_compute_overlap_measures_interference(tmp_path):
    """Verify batches that ran during a draft took 1.5x as long: the ratio says so; drafts alone vs during a
    batch likewise."""
    import pandas as pd

    from analysis.compute_overlap import overlap_stats

    emu = tmp_path / "emu"
    emu.mkdir()
    # request 1 drafts in [0, 1) and [3, 4) ; batches: alone ones at 1..1.1, 4..4.1 (100 ms), overlapped ones
    # at 0.2..0.35 and 3.2..3.35 (150 ms)
    batches = pd.DataFrame(
        {
            "target": "c",
            "kind": "verify",
            "start_s": [1.0, 4.0, 0.2, 3.2],
            "end_s": [1.1, 4.1, 0.35, 3.35],
            "size": 1,
            "tokens": 5,
        }
    )
    rounds = pd.DataFrame(
        {
            "request_id": [1, 1, 1],
            "round": [0, 1, 2],
            "gamma": [4, 4, 4],
            "draft_start_s": [0.0, 3.0, 6.0],
            "send_s": [1.0, 4.0, 6.2],
        }
    )
    batches.to_parquet(emu / "batches.parquet")
    rounds.to_parquet(emu / "rounds.parquet")
    st = overlap_stats(emu)
    (c,) = st["verify_classes"]
    assert c["alone_n"] == 2 and c["together_n"] == 2
    assert c["ratio"] == pytest.approx(1.5) and st["verify_ratio"] == pytest.approx(1.5)
    # rounds after the first: round 1 (during batch 3.2-3.35: 15 % -> neither), round 2 alone (50 ms/token)
    assert st["draft"]["alone_n"] == 1 and st["draft"]["alone_ms"] == pytest.approx(50.0)


def test_overlap_fraction_equals_the_pairwise_sum():
    """The prefix-integral overlap is the plain sum of pairwise overlaps (clipped at 1), empty intervals NaN."""
    from analysis.compute_overlap import _overlap_fraction

    rng = np.random.default_rng(0)
    other = np.sort(rng.uniform(0, 100, (300, 2)), axis=1)
    s = rng.uniform(-5, 105, 500)
    e = s + rng.uniform(0, 3, 500)
    e[:5] = s[:5]
    ref = np.array(
        [
            min(1.0, float(np.clip(np.minimum(b, other[:, 1]) - np.maximum(a, other[:, 0]), 0, None).sum()) / (b - a))
            if b > a
            else np.nan
            for a, b in zip(s, e)
        ]
    )
    assert np.allclose(_overlap_fraction(s, e, other), ref, equal_nan=True)


# ---- streamed passes and binned figures (analysis/scan.py) -----------------------------------------------------


def _ref_binned(t, w, width, nbins):
    """Reference: the figures' per-bin sums computed from whole columns (as the report did before streaming)."""
    t = np.asarray(t, dtype=np.float64)
    ok = ~np.isnan(t)
    idx = np.clip((t[ok] / width).astype(np.int64), 0, nbins - 1)
    return np.bincount(idx, weights=None if w is None else np.asarray(w, dtype=np.float64)[ok], minlength=nbins)


def _ref_busy(starts, ends, edges):
    """Reference: busy seconds per bin of one target's batches, from a prefix sum over all of them at once."""
    o = np.argsort(starts)
    s, e = starts[o], ends[o]
    d = np.clip(e - s, 0.0, None)
    before = np.concatenate([[0.0], np.cumsum(d)])
    i = np.searchsorted(s, edges, side="right") - 1
    j = np.clip(i, 0, None)
    return np.diff(np.where(i >= 0, before[j] + np.clip(edges - s[j], 0.0, d[j]), 0.0))


def test_streamed_scan_equals_whole_tables(sim_runs):
    """Read in chunks of 7 rows, the side's summary, per-edge distributions and every binned series equal what
    the whole tables give."""
    import pandas as pd

    from analysis.scan import Binned, Bins, Scan, scan_batches, scan_request_times, scan_requests, scan_rounds
    from testbed.metrics import dist, latencies, summarize
    from testbed.tables import read_tables

    d = sim_runs[0] / "sim"
    req, rnd, bat = read_tables(d)
    scan = Scan()
    scan_requests(d, scan, 2000.0, 100.0, batch_rows=7)
    bins = Bins.for_duration(scan.builder.result(2000.0, 100.0)["duration_s"])
    scan.binned = Binned.empty(bins)
    scan_request_times(d, scan.binned, batch_rows=7)
    scan_rounds(d, scan, batch_rows=7)
    scan_batches(d, scan, batch_rows=7)
    assert scan.builder.result(2000.0, 100.0) == summarize(req, rnd, bat)
    done = req[req["status"] == "ok"]
    lat = latencies(done)
    for edge, idx in done.groupby("edge").groups.items():
        for k in ("ttft_ms", "tpot_ms", "e2e_ms"):
            assert scan.edges[edge].lat[k].result() == pytest.approx(dist(lat.loc[idx, k]), rel=1e-12)
    assert {e: s.total for e, s in scan.edges.items()} == req.groupby("edge").size().to_dict()
    assert scan.routed == req[req["target"] != ""].groupby("target").size().to_dict()
    b, w, n = scan.binned, bins.width, bins.n
    tok = _ref_binned(rnd["recv_s"], rnd["gained"], w, n) + _ref_binned(req["first_token_s"], None, w, n)
    assert np.allclose(b.tokens, tok) and b.tokens.sum() == rnd["gained"].sum() + req["first_token_s"].notna().sum()
    assert np.array_equal(b.completed, _ref_binned(done["finish_s"], None, w, n))
    spec = rnd[rnd["gamma"] > 0]
    assert np.array_equal(b.spec_n, _ref_binned(spec["send_s"], None, w, n))
    assert np.allclose(b.spec_gamma, _ref_binned(spec["send_s"], spec["gamma"], w, n))
    idx = np.minimum(spec["round"].to_numpy(), 60)
    assert np.array_equal(b.round_n, np.bincount(idx, minlength=61))
    assert np.array_equal(b.round_accepted, np.bincount(idx, weights=spec["accepted"], minlength=61))
    assert np.array_equal(np.trim_zeros(b.accepted_hist, "b"), np.trim_zeros(np.bincount(spec["accepted"]), "b"))
    assert b.gamma_max == spec["gamma"].max()
    for t, g in bat.groupby("target"):
        v = g[g["kind"] == "verify"]
        tb = b.targets[t]
        assert np.array_equal(tb.verify_n, _ref_binned(v["start_s"], None, w, n))
        assert np.allclose(tb.verify_size, _ref_binned(v["start_s"], v["size"], w, n))
        ref = _ref_busy(g["start_s"].to_numpy(), g["end_s"].to_numpy(), bins.edges)
        assert np.allclose(tb.busy, ref, atol=1e-9) and tb.busy.sum() == pytest.approx(
            (g["end_s"] - g["start_s"]).sum()
        )
    assert isinstance(req, pd.DataFrame)


def test_busy_per_bin_equals_the_prefix_sum():
    """Busy time split over bins (intervals spanning several bins, ending past the last bin) equals the prefix-sum
    reference for one-at-a-time batches."""
    from analysis.scan import Bins

    rng = np.random.default_rng(3)
    gaps, lens = rng.exponential(0.7, 400), rng.exponential(0.9, 400)
    starts = np.cumsum(gaps + np.concatenate([[0.0], lens[:-1]]))
    ends = starts + lens
    bins = Bins(0.5, int(starts[-1] / 0.5) - 3)  # the last batches run past the last bin: cut there
    got = np.zeros(bins.n)
    for part in np.array_split(np.arange(400), 9):
        got += bins.busy(starts[part], ends[part])
    assert np.allclose(got, _ref_busy(starts, ends, bins.edges), atol=1e-9)
    assert (got <= bins.width + 1e-9).all()


def test_binned_quantiles_within_the_stated_error(sim_runs, tmp_path, monkeypatch):
    """Past Quantiles' exact limit the summary's and the per-edge quantiles come from its histogram: within its
    stated 0.1 % of the order statistic at the quantile's rank (the exact value interpolates between the two
    around it); counts, means and throughputs stay exact."""
    import pandas as pd

    from testbed.metrics import Quantiles, latencies

    run = make_emu_run(sim_runs, tmp_path / "run")
    exact, _, _ = compare_run(run)
    monkeypatch.setattr(Quantiles, "EXACT_LIMIT", 5)
    binned, _, _ = compare_run(run)
    e = Quantiles.RELATIVE_ERROR
    for side in ("sim", "emu"):
        req = pd.read_parquet(run / side / "requests.parquet")
        lat = latencies(req[req["status"] == "ok"])
        for r_exact, r_binned in zip(exact["metrics"], binned["metrics"]):
            x, y = r_exact[side], r_binned[side]
            key, stat = (r_exact["metric"].split(".") + [""])[:2]
            if stat in ("p50", "p90", "p99"):
                v = lat[key].dropna().to_numpy()
                q = int(stat[1:]) / 100
                lo, hi = np.quantile(v, q, method="lower"), np.quantile(v, q, method="higher")
                assert lo * (1 - e) <= y <= hi * (1 + e) and lo <= x <= hi, r_exact["metric"]
            else:
                assert y == pytest.approx(x, rel=1e-12), r_exact["metric"]
    assert binned["per_node"]["edges"]["emu"].keys() == exact["per_node"]["edges"]["emu"].keys()
    assert exact["robust_facts"] == binned["robust_facts"]


def test_scan_pair_merges_in_chunks_like_a_join(sim_runs, tmp_path):
    """The robust verdict's merged pass (chunks of 3 and 5 rows, ids missing on one side, one side stored out of
    order) equals a whole-table join."""
    import pandas as pd

    from analysis.scan import scan_pair
    from testbed.metrics import dist, latencies

    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(sim_runs[0] / "sim", a)
    shutil.copytree(sim_runs[1] / "sim", b)
    ra = pd.read_parquet(a / "requests.parquet")
    ra = ra[ra["request_id"] % 7 != 3]  # some requests only on one side
    ra.to_parquet(a / "requests.parquet", index=False)
    rb = pd.read_parquet(b / "requests.parquet")
    rb.iloc[::-1].to_parquet(b / "requests.parquet", index=False)  # not in id order
    window = (1.0, 8.0)
    for rows in (3, 5, 1 << 19):
        got = scan_pair(a, b, window, batch_rows=rows)
        j = ra.merge(rb, on="request_id", suffixes=("_a", "_b"))
        j = j[(j["status_a"] == "ok") & (j["status_b"] == "ok") & (j["target_a"] == j["target_b"])]
        assert got.n_matched == len(j) > 0
        for k, (sfx, r) in enumerate((("_a", ra), ("_b", rb))):
            part = j[[c + sfx for c in ("status", "arrival_s", "first_token_s", "finish_s", "output_tokens")]]
            lat = latencies(part.rename(columns=lambda c: c[:-2]))
            for key in ("ttft_ms", "tpot_ms", "e2e_ms"):
                assert got.matched[k][key].result() == pytest.approx(dist(lat[key]), rel=1e-12)
            inside = (r["status"] == "ok") & (r["finish_s"] >= 1.0) & (r["finish_s"] <= 8.0)
            assert got.window_done[k] == inside.sum() and got.window_tokens[k] == r["output_tokens"][inside].sum()


def test_bench_analysis_tiles_a_run(sim_runs, tmp_path):
    """bench/bench_analysis.py's tiled run: k copies, ids renumbered, times shifted by the period; its recorded
    summary and a comparison recomputed from the tiled tables agree, and speculation figures are the base's."""
    import pandas as pd

    s1, s2 = sim_runs
    r = subprocess.run(
        [sys.executable, "bench/bench_analysis.py", "--build-only", "--tiles", "3", "--dir", str(tmp_path)]
        + ["--base-sim", str(s1 / "sim"), "--base-emu", str(s2 / "sim")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert "TILED" in r.stdout
    run = tmp_path / "run"
    base = pd.read_parquet(s1 / "sim" / "requests.parquet")
    tiled = pd.read_parquet(run / "sim" / "requests.parquet")
    period = json.loads((run / ".tiled.json").read_text())["build"]["period_s"]
    assert len(tiled) == 3 * len(base) and tiled["request_id"].is_unique and tiled["request_id"].is_monotonic_increasing
    last = tiled.iloc[2 * len(base) :].reset_index(drop=True)
    assert np.allclose(last["arrival_s"], base["arrival_s"] + 2 * period)
    doc, _, _ = compare_run(run)
    rec = json.loads((run / "sim" / "summary.json").read_text())
    base_rec = json.loads((s1 / "sim" / "summary.json").read_text())
    assert row(doc, "requests_completed")["sim"] == rec["requests_completed"] == 3 * base_rec["requests_completed"]
    assert row(doc, "acceptance_rate")["sim"] == pytest.approx(base_rec["acceptance_rate"])
    assert row(doc, "ttft_ms.p99")["sim"] == pytest.approx(rec["ttft_ms"]["p99"])


def test_window_goodput_counts_slo_meeting_completions_inside_the_arrival_window():
    import pandas as pd

    from testbed.metrics import summarize, window_goodput

    # arrivals 0..4 s: the window is [0, 4]; request 2 misses the TTFT SLO, request 3 finishes after the last
    # arrival (the drain), request 4 failed; requests 0, 1 and 5 (one output token: no TPOT) count
    req = pd.DataFrame(
        {
            "status": ["ok", "ok", "ok", "ok", "failed", "ok"],
            "arrival_s": [0.0, 1.0, 2.0, 3.0, 4.0, 3.5],
            "first_token_s": [0.1, 1.2, 3.0, 3.1, np.nan, 3.6],
            "finish_s": [0.5, 2.0, 3.5, 9.0, np.nan, 3.6],
            "output_tokens": [5, 9, 6, 61, 3, 1],
        }
    )
    assert window_goodput(req, 500.0, 100.0) == pytest.approx(3 / 4.0)
    empty = pd.DataFrame(columns=["status", "round", "gamma", "accepted", "gained"])
    batches = pd.DataFrame(columns=["target", "kind", "start_s", "end_s", "size"])
    s = summarize(req, empty, batches, 500.0, 100.0)
    assert s["goodput_rps"] == pytest.approx(4 / 9.0)  # request 3 counts there, over the duration to its finish
    assert window_goodput(req.iloc[:1], 500.0, 100.0) is None  # one arrival: no window
