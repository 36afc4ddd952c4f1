"""Adaptive Window Control: the shared feature extractor, the shipped policy, rollout labels, a tiny
end-to-end training run (serial fallback, no Ray), and AWC inside a simulation."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from testbed.policies.features import FEATURE_NAMES, FeatureState, model_gamma
from testbed.policies.window import RoundFeedback, parse_window_policy

ROOT = Path(__file__).resolve().parent.parent
SMALL = [
    "workload.trace=synthetic",
    "workload.synthetic.n_requests=30",
    "workload.synthetic.rate_rps=4",
    "workload.duration_s=null",
    "workload.max_output_tokens=64",
]


def test_features_on_a_crafted_feedback_sequence():
    st = FeatureState(context_tokens=99, gamma_max=8)
    v0 = dict(zip(FEATURE_NAMES, st.vector(), strict=True))
    assert v0["alpha"] == pytest.approx(0.7) and v0["have_obs"] == 0.0 and v0["last_gamma"] == 0.0
    assert v0["log_context"] == pytest.approx(math.log(101))  # prompt + the prefill's token
    st.update(RoundFeedback(gamma=4, accepted=4, rtt_s=0.040, verify_s=0.010, queue_depth=2, draft_s=0.020))
    st.update(RoundFeedback(gamma=4, accepted=1, rtt_s=0.060, verify_s=0.020, queue_depth=4, draft_s=0.024))
    v = dict(zip(FEATURE_NAMES, st.vector(), strict=True))
    # acceptance: pseudo-counts (1.4 acc, 0.6 rej) decayed by 0.8 per round
    acc = (1.4 * 0.8 + 4) * 0.8 + 1
    rej = (0.6 * 0.8 + 0) * 0.8 + 1
    assert v["alpha"] == pytest.approx(acc / (acc + rej))
    rtt = 40 + 0.3 * (60 - 40)  # first observation replaces the prior, then EWMA 0.3
    assert v["log_rtt_ms"] == pytest.approx(math.log(1 + rtt))
    assert v["rtt_trend"] == pytest.approx(0.3 * (60 - 40) / 40)
    assert v["log_qdepth"] == pytest.approx(math.log(5))
    assert v["log_qdepth_ewma"] == pytest.approx(math.log(1 + 2 + 0.3 * 2))
    td = 5 + 0.3 * (6 - 5)
    assert v["log_tdraft_ms"] == pytest.approx(math.log(td))
    assert v["log_verify_ms"] == pytest.approx(math.log(1 + 10 + 0.3 * 10))
    assert v["log_context"] == pytest.approx(math.log(1 + 100 + 5 + 2))
    assert v["last_gamma"] == 4 and v["have_obs"] == 1.0 and v["log_rounds"] == pytest.approx(math.log(3))
    assert v["log_rtt_over_td"] == pytest.approx(math.log((1 + rtt) / td))
    assert v["g_model"] == model_gamma(acc / (acc + rej), td, rtt, 10 + 0.3 * 10, 8)
    # a truncated final round (gamma 0) updates times and context but not acceptance nor the draft time
    st.update(RoundFeedback(gamma=0, accepted=0, rtt_s=0.05, verify_s=0.01, queue_depth=0, draft_s=0.0))
    v2 = dict(zip(FEATURE_NAMES, st.vector(), strict=True))
    assert v2["alpha"] == v["alpha"] and v2["log_tdraft_ms"] == v["log_tdraft_ms"] and v2["last_gamma"] == 4


def test_model_gamma_follows_the_textbook_tradeoff():
    assert model_gamma(0.9, 5.0, 200.0, 15.0, 16) > model_gamma(0.9, 30.0, 10.0, 15.0, 16)  # cheap drafts, long RTT
    assert model_gamma(0.95, 10.0, 50.0, 15.0, 16) > model_gamma(0.5, 10.0, 50.0, 15.0, 16)
    assert 1 <= model_gamma(0.0, 10.0, 1.0, 1.0, 16) <= model_gamma(1.0, 10.0, 1.0, 1.0, 16) <= 16


def test_shipped_policy_loads_and_decides_in_range(capsys):
    pol = parse_window_policy("awc")
    assert pol.name == "awc" and pol.observes
    rng = np.random.default_rng(0)
    for gmax in (1, 3, 16):
        c = pol.controller(200, gmax)
        for _ in range(50):
            g = c.next_gamma()
            assert 1 <= g <= gmax
            acc = int(rng.integers(0, g + 1))
            c.observe(
                RoundFeedback(
                    g,
                    acc,
                    float(rng.uniform(0.002, 0.3)),
                    float(rng.uniform(0.005, 0.05)),
                    int(rng.integers(0, 40)),
                    g * float(rng.uniform(0.002, 0.04)),
                )
            )
    c = pol.controller(500, 16)
    fb = RoundFeedback(4, 2, 0.03, 0.015, 3, 0.05)
    n = 2000
    t = time.perf_counter()
    for _ in range(n):
        c.observe(fb)
        c.next_gamma()
    with capsys.disabled():
        print(
            f"\n[awc] observe + decision: {(time.perf_counter() - t) / n * 1e6:.1f} us per round (reported, not "
            "asserted)"
        )


def test_bad_weights_are_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="window policy 'awc'"):
        parse_window_policy(f"awc:{tmp_path / 'missing.npz'}")


def test_rollout_policy_follows_base_then_switches():
    from testbed.awc.dataset import round_starts, sample_config, scenario_of
    from testbed.awc.rollout import rollout_form
    from testbed.sim import simulate

    data = sample_config(np.random.default_rng(3), "star-4edge", max_requests=30)
    data["policy"]["window"] = "static:4"
    base = simulate(scenario_of(data))
    same = simulate(scenario_of(data, rollout_form(10**9, 2, 1, [0], "static:4")))
    assert base.rounds.equals(same.rounds)
    res = simulate(scenario_of(data, rollout_form(40, 2, 1, [0], "static:4")))
    cols = ["request_id", "round", "gamma", "start_s"]
    a = round_starts(base.rounds, base.requests).sort_values(["start_s", "request_id"])[cols].head(40)
    b = round_starts(res.rounds, res.requests).sort_values(["start_s", "request_id"])[cols].head(40)
    assert a.reset_index(drop=True).equals(b.reset_index(drop=True))  # same state up to decision K = 40
    assert (res.rounds["gamma"] == 2).sum() > (base.rounds["gamma"] == 2).sum() and res.rounds["gamma"].max() == 4


def test_tiny_training_end_to_end(tmp_path):
    pytest.importorskip("torch")  # the optional `models` extra
    from testbed.awc.dataset import tasks
    from testbed.awc.ray_runner import generate
    from testbed.awc.train import TrainConfig, train_all
    from testbed.policies.awc import load_awc_policy, save_weights

    rows, how = generate(
        tasks(2, 5, families=("star-4edge", "two-tier")),
        workers=0,
        n_branches=1,
        per_branch=2,
        max_requests=30,
        candidates=(2, 4),
    )
    assert how.startswith("serial") and len(rows) >= 2
    import pandas as pd

    df = pd.DataFrame(rows)
    assert {"label", "good_2", "rate_4"} <= set(df.columns) and set(df["label"]) <= {2, 4}
    net, held, meta = train_all(df, TrainConfig(seed=0, epochs=20))
    assert meta["samples"] == len(df) and len(held) > 0
    again, _, _ = train_all(df, TrainConfig(seed=0, epochs=20))  # reproducible from the seed
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(net.layers, again.layers, strict=True))
    path = tmp_path / "w.npz"
    save_weights(path, net)
    assert path.stat().st_size < 20_000
    pol = load_awc_policy(str(path))
    assert pol.controller(100, 16).next_gamma() in (2, 4)


def test_awc_runs_inside_a_simulation(tmp_path):
    out = tmp_path / "run"
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
        "policy.window=awc",
    ]
    for s in SMALL:
        args += ["--set", s]
    r = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    s = json.loads((out / "sim" / "summary.json").read_text())
    assert s["requests_completed"] == 30 and 1.0 <= s["mean_gamma"] <= 16.0
