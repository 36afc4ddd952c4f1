"""The mechanisms the simulator and the node programs share exist once and mean one thing."""

from __future__ import annotations

import inspect
import json

import pandas as pd
import pytest

from testbed import files, tables
from testbed.policies.batching import VERIFY, verify_cost_inputs, verify_job
from testbed.policies.features import FeatureState
from testbed.policies.window import DecayedAcceptance, RoundFeedback, parse_window_policy
from testbed.rounds import DraftSlots, RequestProgress, request_row, round_row


def _params(fn) -> list[str]:
    return list(inspect.signature(fn).parameters)


def test_row_builders_follow_the_table_columns():
    assert _params(tables.request_row) == list(tables.REQUEST_COLUMNS)
    cols = list(tables.ROUND_COLUMNS)
    cols.remove("gained")  # derived: accepted + 1
    assert _params(tables.round_row) == cols
    assert _params(tables.batch_row) == list(tables.BATCH_COLUMNS)


def test_rows_from_a_request_progress_land_in_their_columns():
    p = RequestProgress(
        7, prompt_tokens=30, output_tokens=20, controller=parse_window_policy("static:3").controller(30, 8), gamma_max=8
    )
    p.first_token()
    r = dict(zip(tables.ROUND_COLUMNS, round_row(p, "e0", "t0", 3, 2, 1.0, 1.5, 1.6, 1.7, 1.9, 2.0, 4, 5)))
    assert r == {
        "request_id": 7,
        "round": 0,
        "edge": "e0",
        "target": "t0",
        "produced": 1,
        "gamma": 3,
        "accepted": 2,
        "gained": 3,
        "draft_start_s": 1.0,
        "send_s": 1.5,
        "target_recv_s": 1.6,
        "batch_start_s": 1.7,
        "batch_end_s": 1.9,
        "recv_s": 2.0,
        "batch_size": 4,
        "queue_depth": 5,
    }
    p.apply(3, 2, None)
    q = dict(zip(tables.REQUEST_COLUMNS, request_row(p, "e0", "t0", 0.5, 0.6, 0.9, 3.0, "ok")))
    assert (q["tokens_out"], q["rounds"], q["drafted_tokens"], q["accepted_tokens"]) == (4, 1, 3, 2)
    assert (q["prompt_tokens"], q["output_tokens"], q["finish_s"], q["status"]) == (30, 20, 3.0, "ok")
    df = tables.frame(
        tables.REQUEST_COLUMNS,
        [
            request_row(p, "e0", "t0", 0.5, 0.6, 0.9, 3.0, "ok"),
            tables.unstarted_request_row(8, "e0", 1.0, 10, 5, "failed"),
        ],
    )
    assert list(df["status"]) == ["ok", "failed"] and df["target"].iloc[1] == "" and df["rounds"].iloc[1] == 0


def test_round_feedback_from_timestamps():
    fb = RoundFeedback.of_round(
        4, 3, draft_start=10.0, send=10.5, batch_start=10.7, batch_end=10.8, recv=11.0, queue_depth=2
    )
    assert fb == RoundFeedback(4, 3, rtt_s=0.5, verify_s=pytest.approx(0.1), queue_depth=2, draft_s=0.5)


def test_verify_job_and_batch_cost_inputs():
    jobs = [verify_job(4, 100, 1.0, "a"), verify_job(0, 50, 2.0, "b")]
    assert (jobs[0].kind, jobs[0].tokens, jobs[0].ctx, jobs[0].arrival, jobs[0].ref) == (VERIFY, 5, 100, 1.0, "a")
    assert verify_cost_inputs(jobs) == (2, 6, 150)


def test_draft_slots_fifo_handover():
    s = DraftSlots(1)
    assert s.acquire("a") and not s.acquire("b") and not s.acquire("c")
    assert s.release() == "b"  # a's slot goes to b
    assert s.release(lambda r: r != "c") is None  # c gave its turn away (failed while waiting): the slot is free
    assert s.busy == 0 and s.acquire("d")
    unlimited = DraftSlots(0)
    assert all(unlimited.acquire(i) for i in range(100))


def test_one_acceptance_estimator_for_specdec_and_awc_features():
    fb = [
        RoundFeedback(4, 4, 0.03, 0.01, 1, 0.02),
        RoundFeedback(4, 1, 0.03, 0.01, 1, 0.02),
        RoundFeedback(0, 0, 0.03, 0.01, 1, 0.0),
        RoundFeedback(6, 2, 0.03, 0.01, 1, 0.02),
    ]
    est = DecayedAcceptance()
    feat = FeatureState(100, 16)
    ctl = parse_window_policy("specdec:0.7").controller(100, 16)
    for f in fb:
        if f.gamma > 0:
            est.update(f.gamma, f.accepted)
        feat.update(f)
        ctl.observe(f)
    assert feat.alpha == est.alpha == ctl.est.alpha
    # by hand: prior 0.7 x 2 tokens, decay 0.8, a rejection counts 1
    acc = ((1.4 * 0.8 + 4) * 0.8 + 1) * 0.8 + 2
    rej = ((0.6 * 0.8 + 0) * 0.8 + 1) * 0.8 + 1
    assert est.alpha == pytest.approx(acc / (acc + rej))


def test_atomic_writes(tmp_path):
    import numpy as np

    p = tmp_path / "x.json"
    files.write_json(p, {"n": np.int64(3), "path": tmp_path})
    assert json.loads(p.read_text()) == {"n": 3, "path": str(tmp_path)}
    files.write_parquet(tmp_path / "t.parquet", pd.DataFrame({"a": [1, 2]}))
    assert list(pd.read_parquet(tmp_path / "t.parquet")["a"]) == [1, 2]
    assert sorted(f.name for f in tmp_path.iterdir()) == ["t.parquet", "x.json"]  # no temporary file left


def test_doctor_reports_only_runtimes_that_exist():
    from testbed.emu.doctor import _usable_runtimes
    from testbed.emu.runtime import RUNTIMES

    assert _usable_runtimes({"docker": (True, "engine 27")}) == [r for r in RUNTIMES if r in ("process", "docker")]
    assert _usable_runtimes({"docker": (False, "engine not running")}) == ["process"]
    assert _usable_runtimes({"docker": (True, ""), "kubernetes": (True, "")}) == ["process", "docker"]
