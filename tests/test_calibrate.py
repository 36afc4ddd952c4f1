"""Calibration: the NNLS fit recovers known coefficients, the profile it writes loads through
testbed.compute, recorded acceptance files replay exactly."""

from __future__ import annotations

import numpy as np
import pytest

from testbed.acceptance import accepted_runs
from testbed.acceptance_recorded import RecordedAcceptance, save_recorded
from testbed.calibrate.fit import fit_cost, write_profile
from testbed.compute import ComputeModel, Cost, load_profile_file
from testbed.errors import InputError
from testbed.spec.schema import CostSpec


def test_fit_recovers_known_coefficients():
    rng = np.random.default_rng(1)
    B = rng.integers(1, 9, 60)
    g = rng.integers(1, 9, 60)
    tokens = B * (g + 1)
    ctx = B * rng.integers(100, 3000, 60)
    true = dict(base_ms=12.0, per_req_ms=1.5, per_token_ms=0.8, per_kctx_ms=2.5)
    ms = true["base_ms"] + true["per_req_ms"] * B + true["per_token_ms"] * tokens + true["per_kctx_ms"] * ctx / 1000
    f = fit_cost(B, tokens, ctx, ms * (1 + rng.normal(0, 0.01, 60)))
    for k, v in true.items():
        assert f.coef[k] == pytest.approx(v, rel=0.1, abs=0.3), k
    assert f.r2 > 0.99 and f.max_rel < 0.05


def test_fit_finds_the_one_token_path_and_compute_charges_it():
    """One token per step (an autoregressive decode) is a matrix-vector product on a CPU, much cheaper than the
    first of several tokens: multi_token_ms is fitted when the grid has both, and ComputeModel charges it only
    above one token."""
    rng = np.random.default_rng(2)
    B = np.array([1, 1, 1, 1, 2, 2, 4, 4] * 4)
    g = np.array([0, 1, 4, 8, 0, 4, 0, 4] * 4)
    tokens = B * (g + 1)
    ctx = B * rng.integers(100, 300, len(B))
    ms = 100 + 5 * tokens + 20 * ctx / 1000 + 90 * (tokens > 1)
    f = fit_cost(B, tokens, ctx, ms * (1 + rng.normal(0, 0.005, len(B))))
    assert f.coef["multi_token_ms"] == pytest.approx(90, rel=0.1)
    assert f.coef["base_ms"] == pytest.approx(100, rel=0.1)
    spec = CostSpec(**{k: v for k, v in f.coef.items()})
    cost = Cost.from_spec(spec)
    assert cost(1, 2, 200) - cost(1, 1, 200) == pytest.approx((f.coef["per_token_ms"] + f.coef["multi_token_ms"]) / 1e3)
    assert cost(1, 3, 200) - cost(1, 2, 200) == pytest.approx(f.coef["per_token_ms"] / 1e3)
    flat = fit_cost(np.ones(4), np.full(4, 5), [100, 200, 300, 400], [50, 51, 52, 53])
    assert flat.coef["multi_token_ms"] == 0  # constant column (every step has 5 tokens): folded into base


def test_fit_is_non_negative_and_handles_constant_columns():
    ctx = np.array([128, 512, 1024, 2048])
    ms = 40.0 + 0.0 * ctx  # flat: no context term
    f = fit_cost(np.ones(4), np.ones(4), ctx, ms - 0.001 * ctx / 1000)  # a slightly negative slope
    assert all(v >= 0 for v in f.coef.values())
    assert f.coef["per_req_ms"] == 0 and f.coef["per_token_ms"] == 0  # constant columns: folded into base
    assert f.coef["base_ms"] == pytest.approx(40.0, abs=0.01)


def test_written_profile_loads_via_compute(tmp_path):
    B, tok, ctx = np.array([1, 2, 4, 8]), np.array([5, 10, 20, 40]), np.array([256, 512, 1024, 2048])
    fits = {
        "draft_step": fit_cost(np.ones(4), np.ones(4), ctx, 30 + 4 * ctx / 1000),
        "prefill": fit_cost(B, tok * 50, np.zeros(4), 10 + 0.5 * tok * 50),
        "verify": fit_cost(B, tok, ctx, 20 + 2 * B + 1.0 * tok + 3 * ctx / 1000),
    }
    path = write_profile(tmp_path / "hf-test.yaml", fits, "Synthetic.", {"grid": "test"})
    spec = load_profile_file(path)
    assert "R2 1.000" in spec.description
    cm = ComputeModel.from_spec("hf-test", spec)
    assert cm.verify_time(2, 10, 512) == pytest.approx((20 + 4 + 10 + 1.536) / 1e3, rel=1e-3)
    assert cm.draft_time(4, 1024, 5) == pytest.approx(4 * (30 + 4.096) / 1e3, rel=1e-3)
    assert path.with_suffix(".fit.json").is_file()


def test_recorded_acceptance_roundtrip(tmp_path):
    seqs = {0: np.array([1, 1, 0, 1, 1, 1, 0], bool), 1: np.array([1, 0, 0, 1], bool), 5: np.array([1, 1, 1], bool)}
    p = save_recorded(tmp_path / "a.npz", seqs, {"draft": "d", "target": "t"})
    rec = RecordedAcceptance(p)
    assert rec.meta["draft"] == "d" and len(rec) == 3
    assert rec.sequence(0, 0, 7).tolist() == seqs[0].tolist()
    assert rec.sequence(0, 1, 3).tolist() == seqs[1][:3].tolist()
    assert rec.recorded(3).tolist() == seqs[0].tolist()  # 3 mod 3 = index 0 (request 0)
    ext = rec.sequence(9, 5, 50)  # past the recording: iid at the overall rate, deterministic
    assert ext[:3].all() and len(ext) == 50 and (ext == rec.sequence(9, 5, 50)).all()
    assert rec.rate == pytest.approx(7 / 11)  # positions >= 1
    runs = accepted_runs(rec.sequence(0, 0, 7))
    assert runs[:3] == [2, 1, 0]


def test_recorded_acceptance_bad_file(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(InputError):
        RecordedAcceptance(bad)


def test_draft_prefill_replaces_the_first_step_of_the_first_round(tmp_path):
    spec = load_profile_file(
        _write(tmp_path / "p.yaml", "draft_step: {base_ms: 10}\ndraft_prefill: {base_ms: 4, per_token_ms: 0.25}\n")
    )
    cm = ComputeModel.from_spec("p", spec)
    assert cm.draft_time(4, 101, 1) == pytest.approx((4 + 0.25 * 101 + 3 * 10) / 1e3)  # first round
    assert cm.draft_time(4, 101, 2) == pytest.approx(4 * 10 / 1e3)  # any later round
    plain = ComputeModel.from_spec("q", load_profile_file(_write(tmp_path / "q.yaml", "draft_step: {base_ms: 10}\n")))
    assert plain.draft_prefill is None and plain.draft_time(4, 101, 1) == pytest.approx(0.040)


def test_fit_weighs_relative_errors():
    """Small batches must fit well even when the largest point is off the linear model (as the 8 x 2048
    verify batch of the real models is): the fit minimises relative, not absolute, error."""
    tok = np.array([2, 4, 8, 16, 32, 64, 128, 256], float)
    ms = 50 + 1.0 * tok
    ms[-1] *= 3  # a super-linear largest point
    f = fit_cost(np.ones(8), tok, np.zeros(8), ms)
    pred = f.coef["base_ms"] + f.coef["per_token_ms"] * tok
    assert np.max(np.abs(pred[:6] - ms[:6]) / ms[:6]) < 0.1


def _write(path, text):
    path.write_text(text)
    return path


def test_acceptance_from_rounds_replays_the_run(tmp_path):
    """Booleans extracted from a run's rounds give back the run's accepted counts when replayed with the same
    windows; untested positions come from the fallback."""
    import pandas as pd

    from testbed.acceptance_recorded import sequences_from_rounds
    from testbed.rounds import verify

    truth = {7: np.array([1, 1, 1, 0, 1, 1, 0, 0, 1, 1, 1, 1, 1, 0, 1], bool), 9: np.array([1, 0, 1, 1, 1], bool)}
    rows = []
    for rid, seq in truth.items():
        runs, produced, g = accepted_runs(seq), 1, 3
        while produced < len(seq):
            gg = min(g, len(seq) - produced - 1)  # the last round is clamped to the output length
            a = verify(runs, produced, gg)
            rows.append((rid, produced, gg, a))
            produced += a + 1
    rounds = pd.DataFrame(rows, columns=["request_id", "produced", "gamma", "accepted"])
    reqs = pd.DataFrame({"request_id": [7, 9], "output_tokens": [15, 5]})
    seqs, info = sequences_from_rounds(rounds, reqs, lambda rid, n: np.ones(n, bool))
    for row in rows:
        rid, p, g, a = row
        assert verify(accepted_runs(seqs[rid]), p, g) == a
    assert info["positions_filled"] > 0  # bonus positions were never tested
    # tested rejections are kept even where the fallback says "accept"
    assert not seqs[7][3] and not seqs[9][1]


def test_max_ctx_clips_every_context_axis():
    from testbed.commands.calibrate import CONTEXT_AXES, GRID_FULL, _clip_grid

    g = _clip_grid(GRID_FULL, 256)
    for k in CONTEXT_AXES:
        assert g[k] and max(g[k]) <= 256, k
    assert g["verify_B"] == GRID_FULL["verify_B"] and g["verify_gamma"] == GRID_FULL["verify_gamma"]
    assert _clip_grid(GRID_FULL, 8)["verify_ctx"] == [8]  # never an empty axis


def test_grid_json_replaces_axes_and_rejects_bad_input():
    """--grid-json (the run's own grid, passed by `testbed run --profile-check recalibrate`): the given axes replace
    the quick grid's, the others stay; anything else is one InputError naming --grid-json."""
    from testbed.commands.calibrate import GRID_QUICK, parse_grid

    g = parse_grid('{"verify_ctx": [26, 62], "reps": 3}')
    assert g["verify_ctx"] == [26, 62] and g["reps"] == 3 and g["prefill_L"] == GRID_QUICK["prefill_L"]
    assert parse_grid('{"verify_gamma": [0, 4]}')["verify_gamma"] == [0, 4]  # window 0: a one-token verify
    bads = ('{"verify_B": [0]}', '{"verify_gamma": [-1]}', '{"reps": true}', '{"draft_ctx": [0]}')
    for bad in ("[1]", "{", '{"ctx": [1]}', '{"reps": 0}', '{"verify_B": []}') + bads:
        with pytest.raises(InputError, match="--grid-json"):
            parse_grid(bad)


def test_recalibration_grid_is_the_runs_operating_points():
    """The grid a profile check recalibrates on follows the run's workload and policy (not the generic quick grid):
    prompt lengths / contexts from its requests, its static window, batches up to what its drafts can send."""
    from pathlib import Path

    import json

    from testbed.commands.calibrate import parse_grid
    from testbed.commands.profilecheck import grid_for
    from testbed.spec import load_scenario
    from testbed.workload import build_workload

    root = Path(__file__).resolve().parents[1] / "topologies" / "hf-pair.yaml"
    sc = load_scenario(root)
    wl = build_workload(sc)
    g = grid_for(sc)
    lo, hi = int(wl.trace.prompt_tokens.min()), int((wl.trace.prompt_tokens + wl.output_tokens).max())
    for axis in ("draft_ctx", "draft_prefill_L", "prefill_L", "verify_ctx"):
        assert len(g[axis]) >= 2 and all(lo <= v <= hi + 1 for v in g[axis]), axis
    assert g["verify_gamma"] == [0, 1, 4] and g["verify_B"] == [1, 2] and g["reps"] == 3  # static:4, one slot
    g2 = grid_for(load_scenario(root, ["policy.window=hf", "edges.0.count=4", "edges.0.draft_slots=0"]))
    assert g2["verify_B"] == [1, 2, 4] and len(g2["verify_gamma"]) == 4 and max(g2["verify_gamma"]) > 4
    assert grid_for(load_scenario(root, ["run.mode=autoregressive"]))["verify_gamma"] == [0, 1]  # one-token steps
    for grid in (g, g2):  # what recalibrate passes to calibrate --grid-json is accepted there
        assert parse_grid(json.dumps(grid)) == grid


def test_as_built_compute_recovers_the_compute_a_run_had():
    """testbed run --sim-compute as-built: the cost terms fitted on a run's own rounds and batches charge what that
    run measured. A simulation with a known, slower profile stands in for the emulation (its tables have the
    same schema): the fit on its tables must predict its draft rounds, prefills and verify batches, not the
    profile the scenario names (2-3x faster)."""
    from pathlib import Path

    from testbed.calibrate.fromrun import profiles_from_run
    from testbed.compute import ComputeModel
    from testbed.sim import simulate
    from testbed.spec import load_scenario

    root = Path(__file__).resolve().parents[1] / "topologies" / "hf-pair.yaml"
    slow = {  # well over the shipped profile's costs (recalibrated 2026-11-30: draft step 66 ms + 78 ms per 1k context)
        "draft_step": {"base_ms": 180, "per_kctx_ms": 80},
        "draft_prefill": {"base_ms": 200, "per_token_ms": 6},
        "prefill": {"base_ms": 200, "per_token_ms": 4},
        "verify": {"base_ms": 220, "per_req_ms": 20, "per_token_ms": 2, "per_kctx_ms": 30},
    }
    sets = ["edges.0.count=2", "workload.synthetic.n_requests=16"]
    named = load_scenario(root, sets)
    prof = named.node(named.drafts[0]).profile
    sets_slow = sets + [f"profiles.{prof}.{t}.{k}={v}" for t, c in slow.items() for k, v in c.items()]
    run = simulate(load_scenario(root, sets_slow))
    fitted, quality = profiles_from_run(named, run.rounds, run.batches, run.requests)[prof]
    assert all("points" in q for q in quality.values()), quality  # every term fitted, none kept from the profile
    truth = ComputeModel.from_spec("slow", load_scenario(root, sets_slow).spec.profiles[prof])
    fit = ComputeModel.from_spec("fit", fitted)
    given = ComputeModel.from_spec("named", named.spec.profiles[prof])
    for ctx, pos in ((45, 1), (60, 10), (100, 30)):
        assert fit.draft_time(4, ctx, pos) == pytest.approx(truth.draft_time(4, ctx, pos), rel=0.02)
        assert given.draft_time(4, ctx, pos) < 0.7 * truth.draft_time(4, ctx, pos)  # the named profile is off
    for B, ctx in ((1, 60), (2, 150)):
        assert fit.verify_time(B, 5 * B, ctx) == pytest.approx(truth.verify_time(B, 5 * B, ctx), rel=0.05)
    assert fit.prefill_time([45]) == pytest.approx(truth.prefill_time([45]), rel=0.05)
