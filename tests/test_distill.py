"""The distillation recipe (testbed/distill.py) and the distilled draft's head (nodes/subset_head.py), on tiny
random models: batched teacher decoding equals one-by-one greedy decoding, the head vocabulary, the subset head,
training that learns, and the saved directory loading back through nodes.models with its head applied."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from nodes import models as M  # noqa: E402
from nodes.subset_head import SubsetHead  # noqa: E402
from testbed import distill as D  # noqa: E402

V = 96


def tiny(seed: int, hidden: int = 32, layers: int = 2, init: float = 0.02):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=V,
        hidden_size=hidden,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        initializer_range=init,
    )
    return LlamaForCausalLM(cfg).eval()


def greedy_alone(model, prompt: list[int], n: int) -> list[int]:
    ids = list(prompt)
    with torch.inference_mode():
        for _ in range(n):
            ids.append(int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[len(prompt) :]


def test_batched_left_padded_teacher_decoding_equals_one_by_one():
    m = tiny(1)
    rng = np.random.default_rng(0)
    prompts = [rng.integers(1, V, size=k).tolist() for k in (3, 9, 5, 12)]
    out, top_i, top_p = D.teacher_decode(m, prompts, 7, pad_id=0, topk=4)
    for b, p in enumerate(prompts):
        assert out[b].tolist() == greedy_alone(m, p, 7)
    assert (top_i[:, :, 0] == out).all()  # the argmax is the most probable token
    assert (np.diff(top_p.astype(np.float32), axis=-1) <= 1e-3).all()


def test_head_vocabulary_is_the_most_frequent_tokens():
    outs = np.array([[5, 5, 5, 7, 7, 9], [9, 9, 9, 9, 1, 2]])
    v = D.head_vocabulary(outs, 2)
    assert v.tolist() == [5, 9]
    assert D.coverage(outs, v) == pytest.approx(8 / 12)
    assert D.head_vocabulary(outs, 100).tolist() == [1, 2, 5, 7, 9]  # never a token the teacher did not emit ...
    ctx = [[3, 3, 4], [3, 0]]
    assert D.head_vocabulary(outs, 6, ctx).tolist() == [1, 2, 3, 5, 7, 9]  # ... but those its prompts had, next
    assert D.head_vocabulary(outs, 100, ctx).tolist() == [0, 1, 2, 3, 4, 5, 7, 9]


def test_subset_head_matches_the_full_head_on_its_tokens_and_excludes_the_rest():
    m = tiny(2)
    ids = [3, 10, 40, 95]
    head = SubsetHead.of(m, ids)
    h = torch.randn(2, 5, 32)
    full = m.get_output_embeddings()(h)
    sub = head(h)
    assert sub.shape == full.shape
    assert torch.allclose(sub[..., ids], full[..., ids], atol=1e-6)
    rest = [i for i in range(V) if i not in ids]
    assert torch.isneginf(sub[..., rest]).all()
    assert set(sub.argmax(-1).flatten().tolist()) <= set(ids)
    with pytest.raises(ValueError):
        SubsetHead.of(m, [V])


def test_training_learns_the_teachers_greedy_tokens():
    teacher = tiny(3, hidden=48, init=0.3)  # (at 0.02 a random tied model repeats its last token: trivial)
    rng = np.random.default_rng(1)
    prompts = [rng.integers(1, V, size=int(rng.integers(3, 8))).tolist() for _ in range(48)]
    out, top_i, top_p = D.teacher_decode(teacher, prompts, 6, pad_id=0, topk=4)
    t = {"out": out, "top_i": top_i, "top_p": top_p}
    vocab = D.head_vocabulary(out, 64)
    cfg = replace(
        D.DistillConfig(epochs=25, batch=8, lr=1e-2),
        arch=D.DraftArch(teacher_layers=0, hidden=32, layers=1, heads=4, kv_heads=2, intermediate=64),
    )
    student = D.make_student(teacher, cfg.arch, vocab, seed=0)
    full2sub = np.full(V, -1, np.int64)
    full2sub[vocab] = np.arange(len(vocab))
    rows = list(range(len(prompts)))
    ex = D._examples(prompts, t, rows)
    before = D.agreement(student, ex, t, full2sub, torch.as_tensor(vocab), 6)
    log = D.train_student(student, prompts, t, vocab, rows, rows, cfg)
    after = log["holdout"][-1][1]
    assert np.mean(log["loss"][-5:]) < np.mean(log["loss"][:5])
    assert before < 0.5 and after > before + 0.2, (before, after)  # learnt (on its own training sequences)


def test_stdlib_docstrings_skip_tests_and_the_evaluation_corpus(tmp_path):
    (tmp_path / "pydoc_data").mkdir()
    (tmp_path / "test").mkdir()
    body = '"""' + "word " * 80 + '"""\n'
    (tmp_path / "pydoc_data" / "topics.py").write_text(body)
    (tmp_path / "test" / "t.py").write_text(body)
    (tmp_path / "mod.py").write_text(body + "def f():\n    " + body.replace("word", "other") + "\n")
    (tmp_path / "broken.py").write_text("def (:\n")
    docs = D.stdlib_docstrings(min_chars=100, root=tmp_path)
    assert len(docs) == 2 and docs[0].startswith("word") and docs[1].startswith("other")


def _word_tokenizer():
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(V)}
    tk = Tokenizer(WordLevel(vocab, unk_token="w0"))
    tk.pre_tokenizer = Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="w0", pad_token="w0")


def test_saved_draft_loads_with_its_head_vocabulary(tmp_path):
    teacher = tiny(4)
    vocab = np.array([2, 5, 7, 11])
    student = D.make_student(
        teacher, D.DraftArch(teacher_layers=0, hidden=32, layers=1, heads=4, kv_heads=2, intermediate=64), vocab, 0
    )
    d = tmp_path / "draft"
    M.save_distilled(student, _word_tokenizer(), d, vocab.tolist(), {"teacher": "tiny"})
    model, _, ref = M.load_model(str(d))
    assert isinstance(model.get_output_embeddings(), SubsetHead)
    assert json.loads((d / "distill.json").read_text())["teacher"] == "tiny"
    with torch.inference_mode():
        lg = model(input_ids=torch.tensor([[1, 2, 3]])).logits[0, -1]
    assert int(lg.argmax()) in set(vocab.tolist())
    (d / M.HEAD_VOCAB_FILE).write_text("[1, -2]")
    with pytest.raises(M.ModelError, match="head_vocab.json: bad head vocabulary"):
        M.load_model(str(d))


def test_the_distilled_draft_not_built_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("DSD_MODEL_CACHE", str(tmp_path))
    with pytest.raises(M.ModelError, match="make draft"):
        M.resolve(M.TINY_NAME)


def test_a_subset_head_draft_in_sampling_mode_drafts_only_its_tokens_and_stays_in_step(tmp_path):
    """Speculative sampling with a distilled draft: q is zero outside its head vocabulary (the exactness of the
    output distribution for such a q is test_hf_backend's chi-square test with a top-k draft); the draft proposes
    only head tokens and follows the target's committed tokens round after round."""
    from nodes.backends import DraftItem, TargetRequest, hf

    teacher = tiny(5, init=0.3)
    vocab = np.arange(0, V, 3)
    student = D.make_student(teacher, D.DraftArch(teacher_layers=1), vocab, 0)
    d = tmp_path / "draft"
    M.save_distilled(student, _word_tokenizer(), d, vocab.tolist(), {"teacher": "tiny"})
    dm, dtok, _ = M.load_model(str(d))
    t = hf.HFTarget(teacher, temperature=0.8, seed=3)
    dr = hf.HFDraft(dm, dtok, temperature=0.8, seed=3, topk=5)
    prompt = [3, 4, 5, 6]
    raw = np.asarray(prompt, dtype="<i4").tobytes()
    dr.start(7, raw, 40)
    r = TargetRequest(7, b"x", raw, 40)
    tok0 = t.prefill_batch([r]).tokens[0]
    r.produced = 1
    dr.observe(7, 0, tok0)
    for _ in range(5):
        out = dr.draft([DraftItem(7, r.produced, 3, 0)])
        assert set(out.tokens[0]) <= set(vocab.tolist())
        r.draft, r.topk, r.probs = out.tokens[0], out.topk, out.probs[0]
        res = t.verify_batch([r])
        r.produced += res.accepted[0] + 1
        dr.observe(7, res.accepted[0], res.tokens[0])
        assert dr.reqs[7].tokens == t.reqs[7].tokens


def test_a_student_from_the_teachers_first_layers_freezes_embedding_and_head():
    teacher = tiny(6)
    s = D.make_student(teacher, D.DraftArch(teacher_layers=1), np.arange(V), 0)
    assert s.config.num_hidden_layers == 1
    assert not s.get_input_embeddings().weight.requires_grad
    assert torch.equal(s.get_input_embeddings().weight, teacher.get_input_embeddings().weight)
    assert torch.equal(s.model.layers[0].mlp.up_proj.weight, teacher.model.layers[0].mlp.up_proj.weight)
    with pytest.raises(ValueError, match="teacher_layers"):
        D.make_student(teacher, D.DraftArch(teacher_layers=2), np.arange(V), 0)


def test_prompt_lookup_copies_what_followed_the_last_n_tokens_most_recently():
    from nodes.prompt_lookup import lookup_next

    assert lookup_next([1, 2, 3, 9, 1, 2, 3, 7, 5, 1, 2, 3], 3) == 7  # the most recent earlier occurrence
    assert lookup_next([1, 2, 3, 9, 1, 2], 2) == 3
    assert lookup_next([1, 2, 3, 4], 2) is None
    assert lookup_next([5, 5, 5], 2) == 5  # overlapping occurrence
    assert lookup_next([1, 2], 0) is None and lookup_next([1], 3) is None


def test_a_draft_with_prompt_lookup_copies_and_keeps_its_cache_consistent(tmp_path):
    """Lookup tokens skip the model; the cache catches up with the next model step or round, so drafting after a
    rollback equals drafting from scratch with the same context."""
    from nodes.backends import DraftItem, hf

    teacher = tiny(7, init=0.3)
    d = tmp_path / "m"
    M.save_distilled(teacher, _word_tokenizer(), d, list(range(V)), {"teacher": "tiny"})
    dm, dtok, _ = M.load_model(str(d))
    prompt = [5, 6, 7, 8, 9, 5, 6, 7]
    raw = np.asarray(prompt, dtype="<i4").tobytes()
    with pytest.raises(ValueError, match="temperature 0"):
        hf.HFDraft(dm, dtok, temperature=0.5, lookup_ngram=3)
    a = hf.HFDraft(dm, dtok, lookup_ngram=3)
    a.start(1, raw, 50)
    a.observe(1, 0, 8)  # context ... 5 6 7 8: "6 7 8" occurred before, followed by 9
    out = a.draft([DraftItem(1, 1, 4, 0)]).tokens[0]
    first = np.frombuffer(out, "<i4").tolist()
    assert first[:2] == [9, 5]  # copied: 6 7 8 -> 9, then 7 8 9 -> 5
    a.observe(1, 1, 40)  # one accepted, then the target's token
    again = np.frombuffer(a.draft([DraftItem(1, 3, 4, 0)]).tokens[0], "<i4").tolist()
    b = hf.HFDraft(dm, dtok, lookup_ngram=3)
    b.start(2, np.asarray(prompt + [8, 9, 40], dtype="<i4").tobytes(), 50)
    b.observe(2, 0, 40)  # same context (the last token enters through observe)
    b.reqs[2].tokens = prompt + [8, 9, 40]
    fresh = np.frombuffer(b.draft([DraftItem(2, 3, 4, 0)]).tokens[0], "<i4").tolist()
    assert again == fresh
