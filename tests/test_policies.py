"""Window, routing and batching policies, and the acceptance model: unit-level invariants."""

from __future__ import annotations

import numpy as np
import pytest

from testbed.acceptance import AcceptanceModel, accepted_runs, clamp_gamma, uniforms
from testbed.policies.batching import PREFILL, VERIFY, Batcher, Job
from testbed.policies.routing import Router
from testbed.policies.window import RoundFeedback, parse_window_policy
from testbed.rounds import verify
from testbed.spec.schema import AcceptanceSpec, BatchingSpec


def fb(gamma, accepted):
    return RoundFeedback(gamma, accepted, 0.02, 0.01, 0, 0.04)


def test_static_and_parse_errors():
    assert parse_window_policy("static:6").controller(10, 16).next_gamma() == 6
    assert parse_window_policy("static:20").controller(10, 16).next_gamma() == 16
    for bad in ("static", "static:0", "hf:x", "specdec:1.5", "nope"):
        with pytest.raises(ValueError, match="accepted forms"):
            parse_window_policy(bad)


def test_hf_heuristic():
    c = parse_window_policy("hf:5").controller(0, 8)
    assert c.next_gamma() == 5
    c.observe(fb(5, 5))
    assert c.next_gamma() == 7
    c.observe(fb(7, 7))
    assert c.next_gamma() == 8  # capped
    for _ in range(20):
        c.observe(fb(8, 0))
    assert c.next_gamma() == 1  # floor


def test_specdec_threshold_tracks_acceptance():
    hi, lo = parse_window_policy("specdec:0.7").controller(0, 16), parse_window_policy("specdec:0.7").controller(0, 16)
    for _ in range(30):
        hi.observe(fb(8, 8))
        lo.observe(fb(8, 1))
    assert hi.next_gamma() > 8 > lo.next_gamma() >= 1


def test_acceptance_is_counter_based_and_calibrated():
    u1 = uniforms(1, 42, 1000)
    assert np.array_equal(u1[500:], uniforms(1, 42, 1000)[500:])
    assert not np.array_equal(u1, uniforms(2, 42, 1000)) and not np.array_equal(u1, uniforms(1, 43, 1000))
    m = AcceptanceModel(AcceptanceSpec(kind="iid", alpha=0.7))
    assert m.sequence(5, 1, 200_000).mean() == pytest.approx(0.7, abs=0.005)
    d = AcceptanceModel(AcceptanceSpec(kind="position_decay", alpha=0.9, alpha_end=0.5, decay_tokens=100))
    p = d.probabilities(1000)
    assert p[0] == pytest.approx(0.9) and p[-1] == pytest.approx(0.5, abs=1e-3) and np.all(np.diff(p) <= 0)
    e = AcceptanceModel(AcceptanceSpec(kind="empirical", table=[0.9, 0.5]))
    assert e.probabilities(4).tolist() == [0.9, 0.5, 0.5, 0.5]


def _reference_uniforms(seed: int, request_id: int, n: int, stream: int = 0) -> np.ndarray:
    """splitmix64 of (seed, request id, stream, position) entirely on numpy arrays: the definition, as first written."""
    g, m1, m2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)

    def mix(x):
        x = (x ^ (x >> np.uint64(30))) * m1
        x = (x ^ (x >> np.uint64(27))) * m2
        return x ^ (x >> np.uint64(31))

    with np.errstate(over="ignore"):
        rid = np.array([(request_id * 4 + stream) & ((1 << 64) - 1)], dtype=np.uint64)
        key = mix(np.array([seed & ((1 << 64) - 1)], dtype=np.uint64) ^ mix(rid + g))
        u = mix(key + np.arange(n, dtype=np.uint64) * g)
    return (u >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def test_uniforms_are_the_defined_values():
    """The acceptance sequences every run and every recorded file depend on: bit for bit the definition, for
    negative seeds and ids (a warm-up request is -1), every stream, lengths 0 to 1,000."""
    for seed, rid, n, stream in [(1, 42, 1000, 0), (0, 0, 1, 0), (-3, -1, 17, 2), (2**40, 10**9, 300, 3), (7, 5, 0, 1)]:
        assert np.array_equal(uniforms(seed, rid, n, stream), _reference_uniforms(seed, rid, n, stream))
    rng = np.random.default_rng(0)
    for _ in range(200):
        seq = rng.random(int(rng.integers(0, 60))) < 0.7
        idx = np.arange(len(seq) + 1)
        false_at = np.where(np.append(~seq, True), idx, len(seq))
        assert accepted_runs(seq) == (np.minimum.accumulate(false_at[::-1])[::-1] - idx).tolist()
        assert accepted_runs(seq.tolist()) == accepted_runs(seq)


def test_runs_and_verify_rule():
    seq = np.array([True, True, False, True, True, True, False], bool)
    runs = accepted_runs(seq)
    assert runs == [2, 1, 0, 3, 2, 1, 0, 0]
    assert verify(runs, 3, 2) == 2 and verify(runs, 3, 5) == 3 and verify(runs, 2, 4) == 0 and verify(runs, 9, 4) == 0
    assert clamp_gamma(4, 1, 10, 16) == 4 and clamp_gamma(4, 8, 10, 16) == 1 and clamp_gamma(4, 9, 10, 16) == 0


def test_routing():
    rr = Router("round_robin", ["a", "b", "c"], 0, "e0")
    assert [rr.choose({}, {}) for _ in range(4)] == ["a", "b", "c", "a"]
    jsq = Router("jsq", ["a", "b"], 0, "e0")
    assert jsq.choose({"a": 3, "b": 1}, {}) == "b"
    assert jsq.choose({"a": 1, "b": 1}, {"a": 2, "b": 0}) == "b"

    def draws(seed: int, draft: str, n: int = 200) -> list[str]:
        r = Router("random", ["a", "b"], seed, draft)
        return [r.choose({}, {}) for _ in range(n)]

    seq1 = draws(5, "e0")
    assert seq1 == draws(5, "e0")  # a function of (seed, draft): simulator and emulator draw the same choices
    assert draws(6, "e0") != seq1 and draws(5, "e1") != seq1  # ... and of both
    assert 60 <= seq1.count("a") <= 140  # both targets, roughly uniform (binomial(200, 0.5): p < 1e-8 outside)
    assert jsq.choose({"a": 0, "b": 0}, {"a": 0, "b": 0}) == "a"  # a tie goes to the first listed target
    with pytest.raises(ValueError):
        Router("nope", ["a"], 0, "e0")


def jobs(spec):
    return [
        Job(VERIFY, 5, 100, 0.0, "v1"),
        Job(PREFILL, 900, 0, 0.1, "p1"),
        Job(VERIFY, 2, 100, 0.2, "v2"),
        Job(VERIFY, 9, 100, 0.3, "v3"),
    ]


def test_batching_fifo_length_aware_and_limits():
    q = jobs(None)
    b, _ = Batcher(BatchingSpec(kind="fifo", max_batch_reqs=2)).form(q, 1.0)
    assert [j.ref for j in b] == ["v1", "v2"] and [j.ref for j in q] == ["p1", "v3"]
    q = jobs(None)
    b, _ = Batcher(BatchingSpec(kind="length_aware", max_batch_reqs=2)).form(q, 1.0)
    assert [j.ref for j in b] == ["v2", "v1"]
    q = jobs(None)
    b, _ = Batcher(BatchingSpec(kind="fifo", max_batch_tokens=8)).form(q, 1.0)
    assert [j.ref for j in b] == ["v1", "v2"]  # 5 + 2 <= 8, +9 would exceed
    q = [Job(PREFILL, 5000, 0, 0.0, "big")]
    b, _ = Batcher(BatchingSpec(max_batch_tokens=100)).form(q, 0.0)
    assert [j.ref for j in b] == ["big"]  # a job above the budget still runs alone


def test_batching_max_wait():
    bt = Batcher(BatchingSpec(max_batch_reqs=4, max_wait_ms=10))
    q = [Job(VERIFY, 5, 0, 1.0, "a")]
    b, wake = bt.form(q, 1.002)
    assert b is None and wake == pytest.approx(1.010) and len(q) == 1
    b, wake = bt.form(q, 1.010)
    assert [j.ref for j in b] == ["a"] and wake is None and not q
    q = [Job(VERIFY, 1, 0, 1.0, str(i)) for i in range(4)]
    b, _ = bt.form(q, 1.0)  # full: no waiting
    assert len(b) == 4


def test_recorded_acceptance_replays_exactly(tmp_path):
    from conftest import one_edge_spec, scenario, write_native_trace
    from testbed.acceptance_recorded import save_recorded
    from testbed.errors import SpecError
    from testbed.sim import simulate

    seqs = {
        0: np.array([True, True, False, True, True, True, True, False, True, False] * 5, bool),
        1: np.array([True, False] * 25, bool),
    }
    path = save_recorded(tmp_path / "x.acceptance.npz", seqs, {"draft": "d", "target": "t"})
    m = AcceptanceModel(AcceptanceSpec(kind="recorded", path=str(path)))
    assert np.array_equal(m.sequence(1, 0, 50), seqs[0]) and np.array_equal(m.sequence(9, 1, 50), seqs[1])
    trace = write_native_trace(tmp_path / "t.jsonl", [(0.0, 10, 50), (100.0, 10, 50)])
    d = one_edge_spec(trace, window="static:3")
    d["models"]["acceptance"] = {"kind": "recorded", "path": str(path)}
    r = simulate(scenario(d))
    rd = r.rounds[r.rounds["request_id"] == 0]
    # replayed exactly: round at produced k accepts the run of True from k, capped at gamma
    from testbed.rounds import verify

    runs = accepted_runs(seqs[0])
    assert rd["accepted"].tolist() == [verify(runs, k, g) for k, g in zip(rd["produced"], rd["gamma"])]
    d["models"]["acceptance"] = {"kind": "recorded", "path": str(tmp_path / "missing.npz")}
    with pytest.raises(SpecError, match="models.acceptance.path"):
        scenario(d)


def test_registered_and_plugin_window_policies(tmp_path, monkeypatch):
    from testbed.policies.window import register_window_policy

    register_window_policy("fixed-test", lambda arg: parse_window_policy(f"static:{arg}"))
    assert parse_window_policy("fixed-test:3").controller(10, 16).next_gamma() == 3
    import testbed.awc.rollout  # noqa: F401  (registers awc-rollout)

    assert parse_window_policy("awc-rollout:5/3/1/0/static:4").name == "awc-rollout"
    (tmp_path / "my_window.py").write_text(
        "from testbed.policies.window import StaticWindow\n"
        "def policy(arg):\n    return StaticWindow(int(arg or 2))\n"
        "def not_a_policy(arg):\n    return 42\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert parse_window_policy("py:my_window:policy:5").controller(10, 16).next_gamma() == 5
    assert parse_window_policy("py:my_window:policy").controller(10, 16).next_gamma() == 2
    for bad, msg in (
        ("py:my_window:missing", "has no attribute"),
        ("py:no_such_module_x:policy", "No module"),
        ("py:my_window:not_a_policy", "not a window policy"),
        ("py:my_window", "required"),
    ):
        with pytest.raises(ValueError, match=msg):
            parse_window_policy(bad)
