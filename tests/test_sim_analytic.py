"""Exact invariants of DSD-Sim on cases with a closed-form answer."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import one_edge_spec, scenario, write_native_trace
from testbed import wire
from testbed.acceptance import expected_tokens_per_round
from testbed.sim import simulate
from testbed.sim.nodes import RECV_GATHER_S


def spaced(n: int, prompt: int, output: int, gap: float = 1000.0) -> list[tuple[float, int, int]]:
    return [(i * gap, prompt, output) for i in range(n)]


@pytest.mark.parametrize("gamma,alpha", [(4, 0.8), (2, 0.6), (7, 0.9)])
def test_low_load_tpot_matches_leviathan(tmp_path, gamma, alpha):
    trace = write_native_trace(tmp_path / "t.jsonl", spaced(30, 100, 1501))
    sc = scenario(
        one_edge_spec(trace, window=f"static:{gamma}", alpha=alpha, delay_ms=10, t_draft_ms=10, t_verify_ms=20)
    )
    r = simulate(sc)
    s = r.summary
    assert s["requests_completed"] == 30
    rtt = 2 * 0.010
    expect_ms = (gamma * 0.010 + rtt + 0.020) / expected_tokens_per_round(alpha, gamma) * 1e3
    assert s["tpot_ms"]["mean"] == pytest.approx(expect_ms, rel=0.02)
    # TTFT = prompt up + prefill + first token down (unshaped links: no serialisation)
    assert s["ttft_ms"]["mean"] == pytest.approx(10 + 30 + 10, rel=0.02)
    assert s["acceptance_rate"] == pytest.approx(sum(alpha**k for k in range(1, gamma + 1)) / gamma, rel=0.03)


def test_ttft_includes_serialisation_at_link_rate(tmp_path):
    prompt = 20000
    trace = write_native_trace(tmp_path / "t.jsonl", spaced(3, prompt, 5))
    sc = scenario(one_edge_spec(trace, bw_mbps=1.0, delay_ms=5))
    s = simulate(sc).summary
    # the link is idle before each request (5 s apart): its token bucket's burst leaves at once, the rest at the rate
    burst = wire.link_burst_bytes(1.0)
    up = (wire.wire_bytes(wire.payload_bytes("PREFILL", prompt)) - burst) * 8 / 1e6
    down = max(0, wire.wire_bytes(wire.payload_bytes("PREFILL_DONE", 1)) - burst) * 8 / 1e6
    assert up > 0.1 and down == 0
    # the prefill starts RECV_GATHER_S after its message reached the idle target (the receive rule)
    expect = up + 0.005 + RECV_GATHER_S + 0.030 + down + 0.005
    assert s["ttft_ms"]["mean"] == pytest.approx(expect * 1e3, rel=1e-6)


def test_token_bucket_of_a_rate_limited_link(tmp_path):
    """wire.link_burst_bytes: after idle, a message's first `burst` bytes leave at once and the rest at the rate;
    back to back, a message waits for the previous one; a partly refilled bucket gives partial credit."""
    from testbed.sim.network import SimNetwork

    d = one_edge_spec(write_native_trace(tmp_path / "t.jsonl", spaced(1, 50, 10)), bw_mbps=1.0, delay_ms=5)
    sc = scenario(d)
    p = SimNetwork(sc, 1).path("edge0", "cloud0")
    bt, burst = 8e-6, wire.link_burst_bytes(1.0)
    assert burst == 3028
    n = 10_000
    t1 = p.transfer(10.0, n)  # idle since the start: full bucket
    assert t1 == pytest.approx(10.0 + (n - burst) * bt + 0.005, abs=1e-12)
    t2 = p.transfer(10.0, 1_000)  # right behind it: no credit left, queued
    assert t2 == pytest.approx(10.0 + (n - burst + 1_000) * bt + 0.005, abs=1e-12)
    free = 10.0 + (n - burst + 1_000) * bt
    t3 = p.transfer(free + 0.010, 5_000)  # 10 ms idle: 1,250 bytes of credit
    assert t3 == pytest.approx(free + 0.010 + (5_000 - 1_250) * bt + 0.005, abs=1e-12)
    t4 = p.transfer(100.0, 500)  # a small message after idle: propagation only
    assert t4 == pytest.approx(100.005, abs=1e-12)
    # the rule path verification expects of its probes (wire.idle_serialisation_s) is the simulator's
    for k, nbytes in enumerate((106, burst, burst + 1, 10_000, 100_000)):
        t = 200.0 + 100 * k
        assert p.transfer(t, nbytes) - t - 0.005 == pytest.approx(wire.idle_serialisation_s(nbytes, 1.0), abs=1e-12)
    assert wire.idle_serialisation_s(10_000, None) == 0.0


@pytest.mark.parametrize("bw_mbps", [None, 1000.0])
def test_idle_target_verifies_a_burst_written_in_one_instant_in_one_batch(tmp_path, bw_mbps):
    """Six requests arrive at once: their PREFILLs, and then every round's VERIFYs, are written in one instant and
    reach the idle target together (unshaped link) or 1-2 us apart (serialised at 1 Gbit/s). The target takes them
    all in before it starts a batch (receive rule), so each batch holds every request still running; starting at
    the first arrival would verify one VERIFY alone and make the other five wait a whole batch."""
    n = 6
    trace = write_native_trace(tmp_path / "t.jsonl", [(0.0, 100, 40)] * n)
    r = simulate(scenario(one_edge_spec(trace, bw_mbps=bw_mbps)))
    b, rd = r.batches, r.rounds
    assert b[b.kind == "prefill"]["size"].tolist() == [n]
    assert b[b.kind == "verify"]["size"].iloc[0] == n
    # the VERIFYs written together (in one instant; 1 us apart at 1 Gbit/s, as their results came back; all n until
    # the last rounds, truncated to the length, drift apart) are verified in one batch, which starts RECV_GATHER_S
    # after the first of them reached the idle target
    rd = rd.sort_values("send_s")
    burst = (rd.send_s.diff() > 50e-6).cumsum()
    bursts = rd.groupby(burst).agg(n=("request_id", "size"), batches=("batch_start_s", "nunique"))
    assert (bursts.n == n).sum() >= 8 and (bursts.batches == 1).all()
    first = rd[burst.map(bursts.n).to_numpy() == n].groupby("batch_start_s").target_recv_s.min()
    assert first.index.to_numpy() - first.to_numpy() == pytest.approx(RECV_GATHER_S, abs=1e-9)


def test_autoregressive_and_fused_baselines(tmp_path):
    trace = write_native_trace(tmp_path / "t.jsonl", spaced(10, 100, 801))
    ar = simulate(scenario(one_edge_spec(trace, mode="autoregressive"))).summary
    assert ar["tpot_ms"]["mean"] == pytest.approx(20.0, rel=0.001)  # one verify step per token, no network
    assert ar["mean_gamma"] is None and ar["tokens_per_round"] == pytest.approx(1.0)
    fused = simulate(scenario(one_edge_spec(trace, mode="fused", alpha=0.8))).summary
    # drafting with the cloud's draft step (1 ms), no per-round hop
    assert fused["tpot_ms"]["mean"] == pytest.approx(
        (4 * 0.001 + 0.020) / expected_tokens_per_round(0.8, 4) * 1e3, rel=0.02
    )


def test_conservation_and_schema(tmp_path):
    rng = np.random.default_rng(3)
    rows = [
        (float(t), int(p), int(o))
        for t, p, o in zip(np.cumsum(rng.exponential(0.05, 300)), rng.integers(1, 3000, 300), rng.integers(1, 400, 300))
    ]
    trace = write_native_trace(tmp_path / "t.jsonl", rows)
    d = one_edge_spec(trace, window="hf")
    r = simulate(scenario(d))
    req = r.requests
    assert len(req) == 300 and (req["status"] == "ok").all()
    assert (req["tokens_out"] == req["output_tokens"]).all()
    assert int(req["tokens_out"].sum()) == sum(o for _, _, o in rows)
    # tokens from rounds + the prefill token add up per request
    gained = r.rounds.groupby("request_id")["gained"].sum().reindex(req["request_id"], fill_value=0).to_numpy()
    assert (gained + 1 == req["output_tokens"].to_numpy()).all()
    # every round's times are ordered
    rd = r.rounds
    assert (rd["draft_start_s"] <= rd["send_s"]).all() and (rd["send_s"] < rd["target_recv_s"]).all()
    assert (rd["target_recv_s"] <= rd["batch_start_s"]).all() and (rd["batch_start_s"] < rd["batch_end_s"]).all()
    assert (rd["batch_end_s"] < rd["recv_s"]).all()
    # gamma never exceeds what was left
    assert (
        rd["produced"] + rd["gamma"] + 1 <= rd["request_id"].map(dict(zip(req["request_id"], req["output_tokens"])))
    ).all()


def test_deterministic_for_a_seed(tmp_path):
    rows = [(i * 0.1, 50, 200) for i in range(50)]
    trace = write_native_trace(tmp_path / "t.jsonl", rows)
    d = one_edge_spec(trace)
    d["links"][0]["jitter_ms"] = 2.0
    a, b = simulate(scenario(d)), simulate(scenario(d))
    assert a.requests.equals(b.requests) and a.rounds.equals(b.rounds)
    d["seed"] = 8
    c = simulate(scenario(d))
    assert not a.rounds["accepted"].equals(c.rounds["accepted"])
    assert not a.requests["finish_s"].equals(c.requests["finish_s"])


def test_sampling_mode_verify_carries_draft_probabilities(tmp_path):
    """With temperature > 0 a VERIFY carries top-k draft probabilities (more bytes on the wire). On an idle 1 Mbit/s
    link the token bucket's burst covers a VERIFY of either size (wire.link_burst_bytes): the upload leg is the
    same; on a link whose bucket is nearly drained each round (0.02 Mbit/s: 3,028 bytes refill in 1.2 s) every
    round pays most of the extra bytes' serialisation."""
    trace = write_native_trace(tmp_path / "t.jsonl", spaced(10, 50, 1201))

    def run(bw: float, temperature: float):
        d = one_edge_spec(trace, bw_mbps=bw)
        d["models"]["temperature"] = temperature
        return simulate(scenario(d))

    up = [(r.rounds["target_recv_s"] - r.rounds["send_s"]).mean() for r in (run(1.0, 0.0), run(1.0, 0.7))]
    assert up[0] == pytest.approx(0.010, abs=1e-9) and up[1] == pytest.approx(up[0], abs=1e-9)  # delay only
    extra = wire.wire_bytes(wire.payload_bytes("VERIFY", 4, wire.SAMPLING_TOPK)) - wire.wire_bytes(
        wire.payload_bytes("VERIFY", 4)
    )
    greedy, sampling = run(0.02, 0.0), run(0.02, 0.7)
    up = [(r.rounds["target_recv_s"] - r.rounds["send_s"]).median() for r in (greedy, sampling)]
    # the bucket refills a little during the (longer) sampling rounds: at most the extra bytes' time, most of it
    assert 0.5 * extra * 8 / 0.02e6 < up[1] - up[0] <= extra * 8 / 0.02e6 + 1e-9


def test_first_round_pays_the_draft_prefill(tmp_path):
    """A profile with draft_prefill: the first round's first step costs draft_prefill(context) instead of a
    draft step; every later round costs gamma steps."""
    prompt = 200
    trace = write_native_trace(tmp_path / "t.jsonl", spaced(4, prompt, 60))
    d = one_edge_spec(trace, window="static:4", t_draft_ms=10)
    d["profiles"]["edgec"]["draft_prefill"] = {"base_ms": 5.0, "per_token_ms": 0.5}
    r = simulate(scenario(d))
    rounds = r.rounds
    dur = (rounds["send_s"] - rounds["draft_start_s"]) * 1e3
    first = rounds["round"] == rounds.groupby("request_id")["round"].transform("min")
    assert first.sum() == 4
    assert dur[first].to_numpy() == pytest.approx(5.0 + 0.5 * (prompt + 1) + 3 * 10.0, abs=1e-6)
    later = rounds["gamma"][~first] * 10.0
    assert dur[~first].to_numpy() == pytest.approx(later.to_numpy(), abs=1e-6)
    # without the term every round costs gamma steps (the profile default)
    del d["profiles"]["edgec"]["draft_prefill"]
    r0 = simulate(scenario(d)).rounds
    assert ((r0["send_s"] - r0["draft_start_s"]) * 1e3).to_numpy() == pytest.approx(
        (r0["gamma"] * 10.0).to_numpy(), abs=1e-6
    )


def test_packets_are_forwarded_one_by_one_on_a_multi_hop_path(tmp_path):
    """Two rate-limited hops in a row: the message's first packet goes on as soon as it has crossed the first one,
    so the last byte arrives after the slower hop's serialisation (less its bucket's credit), not after the sum of
    both hops' (as store-and-forward of whole messages would have it). The emulated network forwards packets."""
    from testbed.sim.network import SimNetwork

    def path(bw1: float, bw2: float):
        d = one_edge_spec(write_native_trace(tmp_path / "t.jsonl", spaced(1, 50, 10)))
        d["nodes"].append({"name": "sw0", "role": "switch"})
        d["links"] = [
            {"a": "edge0", "b": "sw0", "delay_ms": 3, "bw_mbps": bw1},
            {"a": "sw0", "b": "cloud0", "delay_ms": 2, "bw_mbps": bw2},
        ]
        return SimNetwork(scenario(d), 1).path("edge0", "cloud0")

    n = 40_000
    p = path(2.0, 2.0)
    p.tail = 5.0
    head = p.cross(5.0, n, 0, 2)
    burst = wire.link_burst_bytes(2.0)
    # the bucket of the second hop absorbs the first packets' lead: as one 2 Mbit/s hop
    assert p.tail == pytest.approx(5.0 + (n - burst) * 4e-6 + 0.005, abs=1e-12)
    assert head == pytest.approx(5.005, abs=1e-12)  # the first packet went through on credit
    # the second hop is the bottleneck
    assert path(8.0, 2.0).transfer(5.0, n) == pytest.approx(5.0 + 0.003 + (n - burst) * 4e-6 + 0.002, abs=1e-12)
    # the first hop is: the second forwards each packet as it comes
    assert path(2.0, 8.0).transfer(5.0, n) == pytest.approx(5.0 + (n - burst) * 4e-6 + 0.005, abs=1e-12)
