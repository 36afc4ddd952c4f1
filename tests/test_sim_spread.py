"""The simulator's spread over the network's randomness (testbed/sim/spread.py) and its verdict (analysis/compare.py):
a network seed moves jitter and loss draws and nothing else; the spread verdict passes a metric within tolerance
or inside the simulated range, and fails one outside both."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from analysis.compare import compare_run, spread_rows
from testbed.rundir import SPREAD_FILE
from testbed.sim import simulate
from testbed.sim.spread import has_network_randomness, network_spread
from testbed.spec import load_scenario
from testbed.workload import build_workload

ROOT = Path(__file__).resolve().parent.parent
TOPO = str(ROOT / "topologies/star-4edge.yaml")
LOAD = [
    "workload.trace=synthetic",
    "workload.synthetic.n_requests=30",
    "workload.synthetic.rate_rps=3",
    "workload.duration_s=null",
]
LOSSY = [*LOAD, "edges.0.link.loss_pct=2", "edges.0.link.jitter_ms=2"]


def _per_request(res) -> dict:
    r = res.requests.set_index("request_id")
    return {"ttft": (r["first_token_s"] - r["arrival_s"]).round(9).to_dict(), "tokens": r["tokens_out"].to_dict()}


def test_network_seed_moves_the_network_and_nothing_else():
    sc = load_scenario(TOPO, LOSSY)
    wl = build_workload(sc)
    assert has_network_randomness(sc)
    base = simulate(sc, wl)
    same = simulate(sc, wl, net_seed=sc.spec.seed)
    other = simulate(sc, wl, net_seed=sc.spec.seed + 1)
    assert _per_request(same) == _per_request(base)  # None means the spec's seed
    b, o = _per_request(base), _per_request(other)
    assert b["tokens"] == o["tokens"]
    assert b["ttft"] != o["ttft"]  # 2 % loss and 2 ms jitter on 30 requests: some TTFT differs
    # acceptance is keyed by the spec's seed: with a static window each request accepts the same tokens per round
    rounds = [r.rounds.sort_values(["request_id", "round"]) for r in (base, other)]
    acc = [r.groupby("request_id")["accepted"].apply(list).to_dict() for r in rounds]
    assert acc[0] == acc[1]


def test_no_jitter_or_loss_is_no_spread():
    sc = load_scenario(TOPO, LOAD)
    assert not has_network_randomness(sc)
    assert "skipped" in network_spread(sc, build_workload(sc), 3)
    sc2 = load_scenario(TOPO, LOSSY)
    doc = network_spread(sc2, build_workload(sc2), 3)
    assert doc["net_seeds"] == [sc2.spec.seed + 1, sc2.spec.seed + 2, sc2.spec.seed + 3]
    assert len(doc["summaries"]) == 3 and len({s["ttft_ms"]["mean"] for s in doc["summaries"]}) > 1


def _summary(ttft: float, thr: float = 2.0) -> dict:
    return {"ttft_ms": {"mean": ttft}, "request_throughput_rps": thr}


def test_spread_verdict_passes_inside_the_range_or_within_tolerance():
    sim = _summary(100.0)
    spread = {"summaries": [_summary(90.0), _summary(130.0), _summary(104.0)]}
    rows = {r["metric"]: r for r in spread_rows(sim, _summary(120.0), spread)}
    r = rows["ttft_ms.mean"]
    assert (r["sim_lo"], r["sim_hi"]) == (90.0, 130.0)
    assert r["rel_lo"] == pytest.approx(-0.10) and r["rel_hi"] == pytest.approx(0.30)
    assert r["inside"] and r["pass"] and r["rel_error"] == pytest.approx(0.20)  # outside 5 %, inside the range
    r = {x["metric"]: x for x in spread_rows(sim, _summary(140.0), spread)}["ttft_ms.mean"]
    assert not r["inside"] and not r["pass"]  # outside both
    r = {x["metric"]: x for x in spread_rows(sim, _summary(101.0), {"summaries": [_summary(100.0)]})}["ttft_ms.mean"]
    assert not r["inside"] and r["pass"]  # outside a one-point range, within tolerance
    assert rows["request_throughput_rps"]["inside"] and rows["request_throughput_rps"]["pass"]
    assert rows["tpot_ms.mean"]["pass"] is None  # no value on either side: not judged


def test_compare_run_reads_the_spread(tmp_path):
    """A run directory whose emulated side is the simulation with another network seed: inside the spread."""
    sc = load_scenario(TOPO, LOSSY)
    wl = build_workload(sc)
    run = tmp_path / "run"
    from testbed.rundir import prepare, write_results

    prepare(run, sc, "test", wl)
    for side, seed in (("sim", None), ("emu", sc.spec.seed + 7)):
        res = simulate(sc, wl, net_seed=seed)
        write_results(run / side, res.requests, res.rounds, res.batches, res.summary, res.schedule_events)
    (run / SPREAD_FILE).write_text(json.dumps(network_spread(sc, wl, 8), default=float))
    doc, _, _ = compare_run(run)
    assert doc["spread"]["net_seeds"] == 8 and doc["spread"]["coverage"] == pytest.approx(0.8)
    assert doc["spread_verdict"]["judged"] == len(doc["spread"]["rows"]) > 0
    rows = {r["metric"]: r for r in doc["spread"]["rows"]}
    assert rows["ttft_ms.mean"]["sim_lo"] <= rows["ttft_ms.mean"]["sim"] <= rows["ttft_ms.mean"]["sim_hi"]
    from analysis.report import build

    build(run)
    assert "id='spread-table'" in (run / "report.html").read_text()
    # a spread the run does not have: skipped, said so
    run2 = tmp_path / "run2"
    shutil.copytree(run, run2)
    (run2 / SPREAD_FILE).write_text(json.dumps({"skipped": "no link has jitter or loss"}))
    doc2, _, _ = compare_run(run2)
    assert doc2["spread"] == {"skipped": "no link has jitter or loss"} and "spread_verdict" not in doc2
    (run2 / SPREAD_FILE).write_text("{not json")
    with pytest.raises(ValueError, match=SPREAD_FILE):
        compare_run(run2)


def _bench():
    import importlib.util

    spec = importlib.util.spec_from_file_location("validate_random", ROOT / "bench" / "validate_random.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_validate_random_counts_and_explains_by_the_spread(tmp_path):
    vr = _bench()
    plain = {m: 0.0 for m in vr.GOAL}
    runs = []
    for e, inside in ((0.01, False), (0.20, True), (0.20, False), (0.30, None)):
        r = {"plain": {**plain, "ttft_ms.mean": e}}
        if inside is not None:
            r["spread"] = {"ttft_ms.mean": {"inside": inside, "rel_lo": -0.1, "rel_hi": 0.25, "pass": None}}
            r["spread_seeds"] = 20
        runs.append(r)
    d = vr.spread_distribution(runs)["ttft_ms.mean"]
    assert (d["n"], d["within"], d["ok"], d["inside_only"]) == (4, 1, 2, 1)
    # the causes of a miss say whether the spread explains it
    (tmp_path / "compare.json").write_text("{}")
    spec = {"targets": 1, "loss": True, "load": "light"}
    causes = vr.likely_causes({**runs[1], "run": str(tmp_path), "spec": spec, "disturbance": []})
    assert any(c.startswith("network randomness: inside") and "ttft_ms.mean +20.0%" in c for c in causes)
    causes = vr.likely_causes({**runs[2], "run": str(tmp_path), "spec": spec, "disturbance": []})
    assert any(c.startswith("not network randomness: outside") for c in causes)


def test_validate_random_names_batching_differences(tmp_path):
    """A miss's causes say when the targets batched otherwise: prompts in more or fewer prefill batches, verify
    batches of another mean size; nothing when both sides batched alike."""
    from testbed.tables import BATCH_COLUMNS, frame, write_parquet

    vr = _bench()

    def side(name, rows):
        (tmp_path / name).mkdir(exist_ok=True)
        write_parquet(tmp_path / name / "batches.parquet", frame(BATCH_COLUMNS, rows))

    def row(kind, size):
        return ("c0", kind, 0.0, 0.1, size, 100)

    def summaries(emu: float, sim: float) -> dict:  # compare.json's, where target_batch_size is defined
        return {"emu": {"target_batch_size": emu}, "sim": {"target_batch_size": sim}}

    side("sim", [row("prefill", 1), row("prefill", 1), row("verify", 2), row("verify", 2)])
    side("emu", [row("prefill", 1), row("prefill", 1), row("verify", 2), row("verify", 2)])
    assert vr.batching_differences(tmp_path, summaries(2.0, 2.0)) == []
    side("emu", [row("prefill", 2), row("verify", 2), row("verify", 3)])
    out = vr.batching_differences(tmp_path, summaries(2.5, 2.0))
    assert out[0] == "prefill batching differs: 2 prompts in 1 batches emulated, in 2 simulated"
    assert out[1].startswith("verify batches differ: mean size 2.50 emulated vs 2.00 simulated (+25.0%)")
