"""Distil a small draft from the target's own greedy outputs, on CPU, offline (`python -m testbed distill`,
`make draft`).

Why: a draft made from the target's weights costs nearly what the target costs per token on a CPU (issue 16:
DSD at 0.43-0.53x the target alone). Speculative decoding pays with drafts many times cheaper than their target;
this builds one for the shipped target (`smollm2-135m`) in about an hour of two cores.

Steps (each deterministic given --seed; stages cached in the work directory, so an interrupted run resumes):
1. Prompts. Docstrings of the Python standard library's own source files (read with `ast`, never imported;
   PSF licence, installed with every CPython) wrapped exactly as the testbed's prompts are (nodes.prompts: the
   chat template around "Explain the following excerpt ..."). The evaluation prompts of the testbed come from
   `pydoc_data.topics`, which is excluded here: acceptance is measured on text the draft never saw.
2. Teacher outputs. The target decodes every prompt greedily with its KV cache, in batches (left-padded), and
   never stops at EOS (as the testbed's generation). Kept per output position: the target's top-k next-token
   probabilities (k = TEACHER_TOPK), so the draft learns the distribution (speculative sampling), not only the
   argmax (greedy acceptance).
3. Head vocabulary. The draft's LM head covers only the HEAD_VOCAB token ids the target emits most often in
   those outputs (stored in the model directory's recipe; nodes.models applies it at load time): on a CPU the
   LM head over SmolLM2's 49,152 tokens is most of a small model's per-token cost. A token outside it can never
   be drafted (the target then corrects it: a rejection, never a wrong output).
4. Student. A Llama-architecture causal LM (DraftArch: hidden 256, 4 layers by default) with the target's
   tokenizer; its input embedding is initialised by projecting the target's onto its top principal directions
   and the head rows from the same projection. Trained with AdamW on the teacher's top-k soft labels (cross
   entropy over the head vocabulary) at the output positions, prompt positions as context only.
5. Saved as a plain transformers directory (float32 safetensors + tokenizer + `dsd_recipe.json`) into the model
   cache as `smollm2-135m-tiny`, with `distill.json` (settings, data sizes, losses, held-out agreement, times).

Licences: SmolLM2-135M-Instruct is Apache-2.0 (the target and so the distilled draft); the prompt text is the
CPython standard library's (PSF License).
"""

from __future__ import annotations

import ast
import json
import math
import os
import random
import sysconfig
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

TEACHER_TOPK = 16
HEAD_VOCAB = 8192


@dataclass(frozen=True)
class DraftArch:
    """The student's shape: the teacher's first `teacher_layers` decoder layers (its embedding, final norm and LM head
    rows, frozen: only the layers and the norm are trained), or with teacher_layers 0 a new LlamaForCausalLM of the
    sizes below (embedding projected from the teacher's)."""

    teacher_layers: int = field(default=4, metadata={"help": "keep the teacher's first K layers (0: a new model)"})
    hidden: int = field(default=256, metadata={"help": "hidden size"})
    layers: int = field(default=4, metadata={"help": "decoder layers"})
    heads: int = field(default=4, metadata={"help": "attention heads (head dim = hidden / heads)"})
    kv_heads: int = field(default=2, metadata={"help": "key/value heads (grouped-query attention)"})
    intermediate: int = field(default=704, metadata={"help": "MLP width"})


@dataclass(frozen=True)
class DistillConfig:
    """Everything that decides the distilled draft (written to distill.json next to its weights)."""

    target: str = field(default="smollm2-135m", metadata={"help": "teacher model (shipped name or directory)"})
    name: str = field(default="smollm2-135m-tiny", metadata={"help": "model cache name of the result"})
    prompts: int = field(default=480, metadata={"help": "teacher prompts (docstring excerpts)"})
    prompt_min: int = field(default=24, metadata={"help": "shortest excerpt, tokens (before the chat template)"})
    prompt_max: int = field(default=128, metadata={"help": "longest excerpt, tokens"})
    output_tokens: int = field(default=128, metadata={"help": "greedy teacher tokens per prompt"})
    teacher_batch: int = field(default=48, metadata={"help": "prompts decoded together by the teacher"})
    head_vocab: int = field(default=HEAD_VOCAB, metadata={"help": "token ids the draft's LM head covers"})
    arch: DraftArch = field(default_factory=DraftArch, metadata={"help": "the student's shape"})
    epochs: float = field(default=5.0, metadata={"help": "passes over the teacher's outputs"})
    batch: int = field(default=16, metadata={"help": "sequences per optimiser step"})
    lr: float = field(default=2e-3, metadata={"help": "peak learning rate (AdamW, warm-up then cosine)"})
    holdout: float = field(default=0.05, metadata={"help": "fraction of teacher sequences held out for agreement"})
    threads: int = field(default=2, metadata={"help": "torch threads (0: torch's default)"})
    seed: int = field(default=0, metadata={"help": "prompt choice, split and initialisation"})


# -- 1. prompts ----------------------------------------------------------------------------------------------


def stdlib_docstrings(min_chars: int = 300, root: Path | None = None) -> list[str]:
    """Module, class and function docstrings of the standard library's .py files (no tests, no pydoc_data),
    sorted by path then position: deterministic for one CPython version."""
    root = root or Path(sysconfig.get_paths()["stdlib"])
    out: list[str] = []
    for f in sorted(root.rglob("*.py")):
        rel = f.relative_to(root).parts
        if any(p in ("test", "tests", "idle_test", "pydoc_data", "site-packages", "dist-packages") for p in rel):
            continue
        try:
            tree = ast.parse(f.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                d = ast.get_docstring(node)
                if d and len(d) >= min_chars:
                    out.append(d)
    return out


def build_prompts(tok, cfg: DistillConfig) -> list[list[int]]:
    """cfg.prompts prompts in the testbed's own chat format (nodes.prompts.PromptSource's prefix / suffix)."""
    from nodes.prompts import PromptSource

    ps = PromptSource(tok)
    docs = stdlib_docstrings()
    rng = random.Random(cfg.seed)
    rng.shuffle(docs)
    prompts = []
    for d in docs:
        ids = tok(d, add_special_tokens=False)["input_ids"]
        n = rng.randint(cfg.prompt_min, cfg.prompt_max)
        if len(ids) < cfg.prompt_min:
            continue
        start = rng.randint(0, max(0, len(ids) - n))
        prompts.append(ps.prefix + ids[start : start + n] + ps.suffix)
        if len(prompts) == cfg.prompts:
            break
    return prompts


# -- 2. teacher ----------------------------------------------------------------------------------------------


def teacher_decode(model, prompts: list[list[int]], n_out: int, pad_id: int, topk: int = TEACHER_TOPK):
    """Greedy decoding of a batch (left-padded, never stopping at EOS). Returns (outputs (B, n_out) int32,
    top-k ids (B, n_out, k) int32, top-k probabilities (B, n_out, k) float16): row t is the target's next-token
    distribution after prompt + outputs[:t]."""
    import torch
    from transformers import DynamicCache

    B, L = len(prompts), max(len(p) for p in prompts)
    ids = torch.full((B, L), pad_id, dtype=torch.long)
    mask = torch.zeros((B, L), dtype=torch.long)
    for b, p in enumerate(prompts):
        ids[b, L - len(p) :] = torch.tensor(p)
        mask[b, L - len(p) :] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    out = np.zeros((B, n_out), np.int32)
    top_i = np.zeros((B, n_out, topk), np.int32)
    top_p = np.zeros((B, n_out, topk), np.float16)
    cache = DynamicCache()
    with torch.inference_mode():
        r = model(input_ids=ids, attention_mask=mask, position_ids=pos, cache=cache, use_cache=True, logits_to_keep=1)
        for t in range(n_out):
            lg = r.logits[:, -1].float()
            p = torch.softmax(lg, -1)
            v, i = torch.topk(p, topk)
            nxt = lg.argmax(-1)
            out[:, t] = nxt.numpy()
            top_i[:, t] = i.numpy()
            top_p[:, t] = v.numpy().astype(np.float16)
            if t == n_out - 1:
                break
            mask = torch.cat([mask, torch.ones((B, 1), dtype=torch.long)], 1)
            pos = pos[:, -1:] + 1
            r = model(input_ids=nxt[:, None], attention_mask=mask, position_ids=pos, cache=cache, use_cache=True)
    return out, top_i, top_p


def teacher_outputs(model, tok, prompts: list[list[int]], cfg: DistillConfig, work: Path, progress=None) -> dict:
    """Stage 2, cached per batch in work/teacher-NNNN.npz (an interrupted run resumes)."""
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    work.mkdir(parents=True, exist_ok=True)
    outs, tis, tps = [], [], []
    n = cfg.teacher_batch
    for k in range(0, len(prompts), n):
        f = work / f"teacher-{k // n:04d}.npz"
        key = _digest(prompts[k : k + n])
        z = np.load(f) if f.is_file() else None
        if z is not None and ("key" not in z or str(z["key"]) == key):  # (batches of the first run had no key)
            o, ti, tp = z["out"], z["top_i"], z["top_p"]
        else:
            o, ti, tp = teacher_decode(model, prompts[k : k + n], cfg.output_tokens, pad)
            tmp = f.with_name(f.stem + ".tmp.npz")
            np.savez(tmp, out=o, top_i=ti, top_p=tp, key=np.array(key))
            os.replace(tmp, f)
        outs.append(o)
        tis.append(ti)
        tps.append(tp)
        if progress:
            progress(min(k + n, len(prompts)), len(prompts))
    return {"out": np.concatenate(outs), "top_i": np.concatenate(tis), "top_p": np.concatenate(tps)}


def _digest(obj) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(obj).encode()).hexdigest()[:16]


# -- 3. head vocabulary --------------------------------------------------------------------------------------


def head_vocabulary(outputs: np.ndarray, size: int, context: list[list[int]] | None = None) -> np.ndarray:
    """`size` token ids, sorted by id: those the teacher emits, most frequent first, then (the teacher copies from
    its prompt: names, code) the most frequent in `context` (the prompts' tokens); ties by id."""
    n = int(outputs.max(initial=0)) + 1
    if context:
        n = max(n, max((max(c) for c in context if c), default=0) + 1)
    emitted = np.bincount(outputs.ravel(), minlength=n)
    seen = (
        np.bincount(np.concatenate([np.asarray(c, np.int64) for c in context]), minlength=n) if context else 0 * emitted
    )
    order = sorted(range(n), key=lambda i: (-int(emitted[i]), -int(seen[i]), i))
    keep = [i for i in order[:size] if emitted[i] > 0 or seen[i] > 0]
    return np.array(sorted(keep), dtype=np.int64)


def coverage(outputs: np.ndarray, vocab: np.ndarray) -> float:
    return float(np.isin(outputs, vocab).mean()) if outputs.size else 0.0


# -- 4. student ----------------------------------------------------------------------------------------------


def make_student(teacher, arch: DraftArch, vocab: np.ndarray, seed: int):
    """The student of `arch` (see DraftArch) with the teacher's vocabulary and tokenizer. A new model's embedding is
    the teacher's projected onto its top `hidden` principal directions, its head rows (only `vocab`'s are used) from
    the same projection."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    if arch.teacher_layers > 0:
        from nodes.models import plain_copy

        n = teacher.config.num_hidden_layers
        if arch.teacher_layers >= n:
            raise ValueError(f"teacher_layers {arch.teacher_layers} >= the teacher's {n} layers")
        m = plain_copy(teacher, list(range(arch.teacher_layers)))
        m.get_input_embeddings().weight.requires_grad_(False)
        m.get_output_embeddings().weight.requires_grad_(False)
        return m
    tc = teacher.config
    cfg = LlamaConfig(
        vocab_size=tc.vocab_size,
        hidden_size=arch.hidden,
        intermediate_size=arch.intermediate,
        num_hidden_layers=arch.layers,
        num_attention_heads=arch.heads,
        num_key_value_heads=arch.kv_heads,
        max_position_embeddings=tc.max_position_embeddings,
        rope_theta=getattr(tc, "rope_theta", 10000.0),
        rms_norm_eps=tc.rms_norm_eps,
        bos_token_id=tc.bos_token_id,
        eos_token_id=tc.eos_token_id,
        pad_token_id=getattr(tc, "pad_token_id", None),
        tie_word_embeddings=False,
    )
    m = LlamaForCausalLM(cfg)
    with torch.no_grad():
        e = teacher.get_input_embeddings().weight.float()
        _, vecs = torch.linalg.eigh(e.T @ e)  # ascending eigenvalues
        proj = e @ vecs[:, -arch.hidden :].flip(-1)
        proj *= 0.02 / proj.std()
        m.get_input_embeddings().weight.copy_(proj)
        head = torch.zeros_like(m.get_output_embeddings().weight)
        idx = torch.as_tensor(vocab)
        head[idx] = proj[idx]
        m.get_output_embeddings().weight.copy_(head)
    return m


def _examples(prompts: list[list[int]], t: dict, rows: list[int]) -> list[tuple[list[int], int, int]]:
    """(input ids = prompt + outputs[:-1], first output position, row) per sequence."""
    return [(prompts[r] + t["out"][r, :-1].tolist(), len(prompts[r]) - 1, r) for r in rows]


def _batch(examples, t: dict, full2sub: np.ndarray, n_out: int):
    """Right-padded inputs, the output positions' soft targets over the head vocabulary (B, n_out, H) and the
    teacher's argmax as head-vocabulary index (-1 outside it)."""
    import torch

    B = len(examples)
    L = max(len(x) for x, _, _ in examples)
    ids = torch.zeros((B, L), dtype=torch.long)
    for b, (x, _, _) in enumerate(examples):
        ids[b, : len(x)] = torch.tensor(x)
    H = int(full2sub.max()) + 1
    target = torch.zeros((B, n_out, H))
    arg = torch.full((B, n_out), -1, dtype=torch.long)
    starts = []
    for b, (_, s, r) in enumerate(examples):
        starts.append(s)
        ti = full2sub[t["top_i"][r]]  # (n_out, k)
        tp = t["top_p"][r].astype(np.float32)
        ok = ti >= 0
        pos, kk = np.nonzero(ok)
        target[b, torch.as_tensor(pos), torch.as_tensor(ti[pos, kk])] = torch.as_tensor(tp[pos, kk])
        arg[b] = torch.as_tensor(full2sub[t["out"][r]])
    target /= target.sum(-1, keepdim=True).clamp(min=1e-6)
    return ids, starts, target, arg


def _output_logits(student, ids, starts: list[int], vocab_t, n_out: int):
    """The student's logits over the head vocabulary at each sequence's n_out output positions (B, n_out, H)."""
    import torch

    h = student.get_decoder()(input_ids=ids).last_hidden_state
    hs = torch.stack([h[b, s : s + n_out] for b, s in enumerate(starts)])
    return hs @ student.get_output_embeddings().weight[vocab_t].T


def train_student(
    student, prompts, t: dict, vocab: np.ndarray, train_rows, hold_rows, cfg: DistillConfig, progress=None
) -> dict:
    """AdamW on soft cross entropy over the head vocabulary at the output positions. Returns the log."""
    import torch

    n_out = t["out"].shape[1]
    full2sub = np.full(student.config.vocab_size, -1, np.int64)
    full2sub[vocab] = np.arange(len(vocab))
    vocab_t = torch.as_tensor(vocab)
    train = _examples(prompts, t, train_rows)
    hold = _examples(prompts, t, hold_rows)
    rng = random.Random(cfg.seed)
    steps = max(1, int(math.ceil(len(train) / cfg.batch) * cfg.epochs))
    warm = max(1, steps // 20)
    decay, no_decay = [], []
    for n, p in student.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if ("embed" in n or "norm" in n or "lm_head" in n) else decay).append(p)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.98),
    )
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps)))
    )
    log: dict = {"steps": steps, "loss": [], "holdout": []}
    order: list = []
    student.train()
    for step in range(steps):
        if not order:
            order = list(range(len(train)))
            rng.shuffle(order)
        pick, order = order[: cfg.batch], order[cfg.batch :]
        ids, starts, target, _ = _batch([train[i] for i in pick], t, full2sub, n_out)
        lp = torch.log_softmax(_output_logits(student, ids, starts, vocab_t, n_out), -1)
        loss = -(target * lp).sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()
        sched.step()
        value = float(loss.detach())
        log["loss"].append(round(value, 4))
        if progress:
            progress(step + 1, steps, value)
        if (step + 1) % max(1, steps // 8) == 0 or step + 1 == steps:
            log["holdout"].append((step + 1, agreement(student, hold, t, full2sub, vocab_t, n_out)))
            student.train()
    student.eval()
    return log


def agreement(student, examples, t: dict, full2sub: np.ndarray, vocab_t, n_out: int) -> float:
    """Teacher-forced agreement: the student's argmax equals the teacher's greedy token, over output positions."""
    import torch

    student.eval()
    hit = tot = 0
    with torch.inference_mode():
        for k in range(0, len(examples), 16):
            ids, starts, _, arg = _batch(examples[k : k + 16], t, full2sub, n_out)
            pred = _output_logits(student, ids, starts, vocab_t, n_out).argmax(-1)
            hit += int((pred == arg).sum())
            tot += arg.numel()
    return round(hit / max(1, tot), 4)


# -- the whole recipe ----------------------------------------------------------------------------------------


def work_dir(cfg: DistillConfig, root: Path) -> Path:
    """Teacher outputs depend on the teacher and the prompt settings only: one cache directory per such set. The
    prompt list is prefix-stable in `prompts` (build_prompts), so batch k's file serves any larger run too."""
    import hashlib

    key = {k: getattr(cfg, k) for k in ("target", "prompt_min", "prompt_max", "output_tokens", "teacher_batch", "seed")}
    return root / ("teacher-" + hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12])


def distill(cfg: DistillConfig, work_root: Path, out: Path, log=print) -> dict:
    """Run the five steps; write the model directory `out` atomically. Returns the report (also distill.json)."""
    import torch

    from nodes import models as M

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    teacher, tok, tref = M.load_model(cfg.target)
    work = work_dir(cfg, work_root)
    work.mkdir(parents=True, exist_ok=True)
    pf = work / f"prompts-{cfg.prompts}.json"
    if pf.is_file():
        prompts = json.loads(pf.read_text())
    else:
        prompts = build_prompts(tok, cfg)
        pf.write_text(json.dumps(prompts))
    log(f"distill: {len(prompts)} prompts (stdlib docstrings), teacher outputs cached in {work}")
    t1 = time.perf_counter()
    t = teacher_outputs(teacher, tok, prompts, cfg, work, progress=_bar("teacher", log))
    t2 = time.perf_counter()
    rows = list(range(len(prompts)))
    random.Random(cfg.seed).shuffle(rows)
    n_hold = max(1, int(len(rows) * cfg.holdout))
    hold_rows, train_rows = sorted(rows[:n_hold]), sorted(rows[n_hold:])
    vocab = head_vocabulary(t["out"][train_rows], cfg.head_vocab, [prompts[r] for r in train_rows])
    cov = coverage(t["out"][hold_rows], vocab)
    log(f"distill: head vocabulary {len(vocab)} tokens, covering {cov:.1%} of held-out teacher tokens")
    student = make_student(teacher, cfg.arch, vocab, cfg.seed)
    del teacher
    trained = train_student(student, prompts, t, vocab, train_rows, hold_rows, cfg, progress=_bar("train", log))
    t3 = time.perf_counter()
    report = {
        "config": asdict(cfg),
        "teacher": str(tref.path),
        "prompts": len(prompts),
        "train_sequences": len(train_rows),
        "holdout_sequences": len(hold_rows),
        "teacher_tokens": int(t["out"].size),
        "head_vocab": len(vocab),
        "holdout_coverage": round(cov, 4),
        "holdout_agreement": trained["holdout"][-1][1],
        "params_m": round(sum(p.numel() for p in student.parameters()) / 1e6, 2),
        "seconds": {"load": round(t1 - t0, 1), "teacher": round(t2 - t1, 1), "train": round(t3 - t2, 1)},
        "training": trained,
        "licences": {"weights": "Apache-2.0 (SmolLM2-135M-Instruct, distilled)", "prompts": "PSF (CPython stdlib)"},
    }
    M.save_distilled(student, tok, out, vocab.tolist(), report)
    log(
        f"distill: wrote {out}: held-out agreement {report['holdout_agreement']:.1%}, "
        f"{report['params_m']} M parameters, teacher {t2 - t1:.0f} s, training {t3 - t2:.0f} s"
    )
    return report


def _bar(what: str, log):
    """A progress callback (testbed.progress.JobProgress: a bar on a terminal, lines in a log)."""
    from testbed.progress import JobProgress

    state: dict = {}

    def update(i: int, n: int, loss: float | None = None) -> None:
        if "p" not in state:
            state["p"] = JobProgress(f"distill {what}", n)
            state["p"].start()
        state["p"].update(i, total=n)
        if i == n:
            state["p"].stop()

    return update
