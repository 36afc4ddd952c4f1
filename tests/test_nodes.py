"""End-to-end loopback runs of the real node programs (`python -m testbed emulate --net none`), kept short.

Checks conservation (every request ok, tokens_out == output_tokens, rounds add up), the exact table schemas,
timestamp order, and that the token-level behaviour is identical to the simulator's (same acceptance
sequences, same window policy code): per request the same rounds, drafted and accepted tokens; in the co-located
modes (fused, autoregressive) also the same rounds and TPOT within 15 %.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from testbed.spec import load_scenario
from testbed.tables import BATCH_COLUMNS, REQUEST_COLUMNS, ROUND_COLUMNS

ROOT = Path(__file__).resolve().parents[1]
TOPO = str(ROOT / "topologies" / "star-4edge.yaml")
SMALL = [
    "workload.trace=synthetic",
    "workload.synthetic.n_requests=16",
    "workload.synthetic.rate_rps=20",
    "workload.synthetic.output_mean=40",
    "workload.synthetic.prompt_mean=200",
    "workload.duration_s=null",
    "run.request_timeout_s=5",
    "run.drain_timeout_s=30",
]


def emulate(out: Path, sets: list[str], *extra: str, timeout: float = 120) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "testbed", "emulate", TOPO, "--net", "none", "--out", str(out), "--quiet", *extra]
    for s in sets:
        argv += ["--set", s]
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def tables(out: Path):
    emu = out / "emu"
    return (
        pd.read_parquet(emu / "requests.parquet"),
        pd.read_parquet(emu / "rounds.parquet"),
        pd.read_parquet(emu / "batches.parquet"),
        json.loads((emu / "summary.json").read_text()),
    )


def check_schema(df: pd.DataFrame, columns: dict) -> None:
    assert list(df.columns) == list(columns)
    for name, (dtype, _) in columns.items():
        assert str(df[name].dtype) == str(pd.Series([], dtype=dtype).dtype), name


def check_complete_run(out: Path, n: int):
    req, rnd, bat, summary = tables(out)
    check_schema(req, REQUEST_COLUMNS)
    check_schema(rnd, ROUND_COLUMNS)
    check_schema(bat, BATCH_COLUMNS)
    assert len(req) == n and req["request_id"].is_unique
    assert (req["status"] == "ok").all(), req["status"].value_counts()
    assert (req["tokens_out"] == req["output_tokens"]).all()
    assert summary["partial"] is False and summary["requests_completed"] == n
    # rounds add up: 1 token from the prefill + sum of gained per request
    gained = rnd.groupby("request_id")["gained"].sum().reindex(req["request_id"]).fillna(0).to_numpy()
    assert (gained + 1 == req["output_tokens"].to_numpy()).all()
    assert (rnd["gained"] == rnd["accepted"] + 1).all() and (rnd["accepted"] <= rnd["gamma"]).all()
    # timestamps in causal order (one host, one clock)
    assert (req["arrival_s"] <= req["prefill_sent_s"] + 1e-9).all()
    assert (req["prefill_sent_s"] < req["first_token_s"]).all() and (req["first_token_s"] <= req["finish_s"]).all()
    order = ["draft_start_s", "send_s", "target_recv_s", "batch_start_s", "batch_end_s", "recv_s"]
    for a, b in zip(order, order[1:]):
        assert (rnd[a] <= rnd[b] + 1e-9).all(), (a, b)
    assert set(bat["kind"]) <= {"prefill", "verify"} and (bat["end_s"] >= bat["start_s"]).all()
    assert bat.loc[bat["kind"] == "prefill", "size"].sum() == n
    assert bat.loc[bat["kind"] == "verify", "size"].sum() == len(rnd)
    for name, info in summary["nodes"].items():
        assert info["exit_code"] == 0, name
        assert not info.get("bad_messages"), name
    return req, rnd, bat, summary


def sim_requests(out: Path) -> pd.DataFrame:
    from testbed.sim import simulate

    return simulate(load_scenario(out / "spec.yaml")).requests


def same_token_level(req: pd.DataFrame, sim: pd.DataFrame) -> None:
    cols = ["request_id", "edge", "output_tokens", "tokens_out", "rounds", "drafted_tokens", "accepted_tokens"]
    a = req[cols].sort_values("request_id").reset_index(drop=True)
    b = sim[cols].sort_values("request_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.slow
def test_loopback_run_static_window(tmp_path):
    out = tmp_path / "run"
    p = emulate(out, SMALL)
    assert p.returncode == 0, p.stderr[-3000:]
    req, rnd, bat, summary = check_complete_run(out, 16)
    assert (rnd["gamma"] <= 4).all() and (rnd["gamma"] > 0).any()
    same_token_level(req, sim_requests(out))
    assert (out / "emu" / "logs" / "cloud0.log").is_file() and (out / "meta.json").is_file()
    meta = json.loads((out / "meta.json").read_text())
    assert meta["backends"]["network"] == "none" and meta["emu"]["exit_code"] == 0


@pytest.mark.slow
def test_loopback_run_adaptive_window_with_draft_slots(tmp_path):
    out = tmp_path / "run"
    p = emulate(out, SMALL + ["policy.window=hf", "edges.0.draft_slots=1", "policy.batching.max_wait_ms=2"])
    assert p.returncode == 0, p.stderr[-3000:]
    req, rnd, _, _ = check_complete_run(out, 16)
    assert rnd["gamma"].nunique() > 1  # the heuristic moved gamma
    same_token_level(req, sim_requests(out))
    # one slot per edge: drafting intervals of one edge never overlap
    spec = rnd[rnd["gamma"] > 0].sort_values(["edge", "draft_start_s"])
    for _, g in spec.groupby("edge"):
        assert (g["draft_start_s"].to_numpy()[1:] >= g["send_s"].to_numpy()[:-1] - 1e-6).all()


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["autoregressive", "fused"])
def test_loopback_colocated_modes_match_the_simulator(tmp_path, mode):
    """fused / autoregressive: the rounds run at the target (co-located drafter, no network per round), as in
    the simulator; identical token-level behaviour and rounds, and the same TPOT within 15 %."""
    out = tmp_path / "run"
    p = emulate(out, SMALL + [f"run.mode={mode}", "workload.synthetic.output_mean=30"])
    assert p.returncode == 0, p.stderr[-3000:]
    req, rnd, bat, summary = check_complete_run(out, 16)
    from testbed.sim import simulate

    sim = simulate(load_scenario(out / "spec.yaml"))
    same_token_level(req, sim.requests)
    key = ["request_id", "round", "edge", "target", "produced", "gamma", "accepted", "gained"]
    pd.testing.assert_frame_equal(
        rnd[key].reset_index(drop=True),
        sim.rounds[key].sort_values(["request_id", "round"]).reset_index(drop=True),
        check_dtype=False,
    )
    if mode == "autoregressive":
        assert (rnd["gamma"] == 0).all() and (req["drafted_tokens"] == 0).all()
        assert (req["rounds"] == req["output_tokens"] - 1).all()
    else:
        assert (rnd["gamma"] > 0).any() and (rnd["gamma"] <= 4).all()
        assert summary["acceptance_rate"] == pytest.approx(sim.summary["acceptance_rate"])
    # no network inside a round: the VERIFY job is queued when drafting ends, the result applied at batch end
    assert (rnd["send_s"] == rnd["target_recv_s"]).all() and (rnd["recv_s"] == rnd["batch_end_s"]).all()
    assert summary["nodes"]["cloud0"]["local_rounds"] == len(rnd)
    assert all(
        info["messages_in"].get("VERIFY_RESULT", 0) == 0 for n, info in summary["nodes"].items() if n.startswith("edge")
    )
    emu_tpot, sim_tpot = summary["tpot_ms"]["mean"], sim.summary["tpot_ms"]["mean"]
    assert emu_tpot == pytest.approx(sim_tpot, rel=0.15), (emu_tpot, sim_tpot)
