"""The `hf` backend: real HuggingFace transformers models on torch (CPU), see nodes/backends/HF.md.

Target
- state per request: its token ids (prompt + committed output) and the KV cache of all of them but the last
  (the last committed token is the next forward's first input);
- `prefill_batch`: the prompts right-padded into one forward (causal attention keeps padding invisible to
  real tokens), each request's first token from the logits at its last prompt position;
- `verify_batch`: ONE forward for the whole batch. Row b feeds [last token] + its gamma_b draft tokens
  (right-padded to the longest), on top of the per-request caches stacked into one batched cache,
  left-padded to the longest context; an explicit 4-D boolean mask hides the padding and position ids
  are each request's true positions, so each row computes exactly what it would alone. The accepted part
  of each row's new KV is cut out of the batched cache again (views, no copy) and kept as its cache.
- acceptance: temperature 0: greedy (longest prefix where draft == target argmax, then the target's token
  there: the correction, or the bonus token when all were accepted); temperature > 0: speculative sampling
  (Leviathan et al.): accept draft token x with probability min(1, p(x) / q(x)), on rejection sample from
  norm(max(0, p - q)), bonus token from p when all were accepted. q is the draft's top-k distribution as
  sent (TOPK entries per token); without probabilities the draft counts as deterministic (q = one-hot),
  which is still exact. Random numbers: counter-based (testbed.acceptance.uniforms) keyed by (seed,
  request, position, stream), so a run is reproducible and independent of batching.

Draft
- state per request: token ids and a DynamicCache; a round feeds the not-yet-cached committed tokens, then
  drafts gamma tokens one step at a time (greedy argmax; temperature > 0: a sample from the top-k
  renormalised distribution, whose float16 probabilities travel with the draft); `observe` crops the cache
  to the accepted prefix (rollback) and appends the target's token.
- `prompt` builds a real prompt of the trace's length (nodes.prompts.PromptSource).

Wire format of draft probabilities (VERIFY `pr`): gamma*k int32 token ids, then gamma*k float16
probabilities, both little-endian, row-major (token position, rank): 6 bytes per entry as testbed/wire.py
counts (TOPK_ENTRY_BYTES).

Every call computes synchronously: outcomes carry wait_s = 0 (the time has already passed).
"""

from __future__ import annotations

import inspect
import logging
import os
from typing import Any

import numpy as np

from nodes import models as M  # before torch: it loads MKL's vendor library (nodes/blas.py)
from nodes.backends import (
    DraftBackend,
    DraftItem,
    DraftOutcome,
    TargetBackend,
    TargetOutcome,
    TargetRequest,
    tokens_array,
)
from nodes.prompt_lookup import lookup_next
from nodes.prompts import PromptSource
from nodes.protocol import TOKEN_DTYPE
from testbed import wire
from testbed.acceptance import uniforms

import torch  # after nodes.models (above)

log = logging.getLogger("nodes.hf")

TOPK = int(
    os.environ.get("DSD_HF_TOPK", str(wire.SAMPLING_TOPK))
)  # draft probabilities per drafted token (sampling mode)
STREAM_DRAFT, STREAM_ACCEPT, STREAM_TARGET = 1, 2, 3  # uniforms streams (0 is the acceptance model's)


# -- model plumbing ----------------------------------------------------------------------------------------


class Runner:
    """A causal LM split into decoder + LM head, so logits are computed only where needed."""

    def __init__(self, model):
        self.model = model
        self.decoder = model.get_decoder()
        self.head = model.get_output_embeddings()
        params = inspect.signature(self.decoder.forward).parameters
        self.cache_kw = "cache" if "cache" in params else "past_key_values"
        self.vocab = model.config.vocab_size
        self.max_pos = getattr(model.config, "max_position_embeddings", None) or 1 << 30

    @torch.inference_mode()
    def hidden(self, ids: torch.Tensor, cache, mask=None, positions=None) -> torch.Tensor:
        kw = {self.cache_kw: cache, "use_cache": True}
        out = self.decoder(input_ids=ids, attention_mask=mask, position_ids=positions, **kw)
        return out.last_hidden_state

    @torch.inference_mode()
    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.head(h).float()


def new_cache():
    from transformers import DynamicCache

    return DynamicCache()


def cache_kv(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    if hasattr(cache, "layers"):
        return [(l.keys, l.values) for l in cache.layers]
    return list(zip(cache.key_cache, cache.value_cache))  # older transformers


def cache_from(kv: list[tuple[torch.Tensor, torch.Tensor]]):
    """A DynamicCache holding these tensors without copying them (DynamicCache(kv) would concatenate them
    onto empty tensors: one more copy of the whole batch's KV per verify)."""
    from transformers import DynamicCache

    try:
        from transformers.cache_utils import DynamicLayer

        layers = []
        for k, v in kv:
            layer = DynamicLayer()
            layer.lazy_initialization(k, v)
            layer.keys, layer.values = k, v
            layers.append(layer)
        cache = DynamicCache()
        cache.layers = layers
        return cache
    except (ImportError, AttributeError, TypeError):  # other transformers versions
        return DynamicCache(kv)


def cache_len(cache) -> int:
    return int(cache.get_seq_length()) if cache is not None else 0


def crop(cache, length: int) -> None:
    """Keep the first `length` positions (transformers v5: negative crop = tokens to remove)."""
    extra = cache_len(cache) - length
    if extra > 0:
        cache.crop(-extra)


def softmax_t(logits: torch.Tensor, temperature: float) -> np.ndarray:
    return torch.softmax(logits.double() / temperature, dim=-1).numpy()


def sample(p: np.ndarray, u: float) -> int:
    c = np.cumsum(p)
    return int(min(np.searchsorted(c, u * c[-1], side="right"), len(p) - 1))


def topk_dist(logits: torch.Tensor, temperature: float, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The draft's distribution as sent: top-k ids and float16 probabilities (renormalised by the receiver)."""
    p = torch.softmax(logits.double() / temperature, dim=-1)
    v, i = torch.topk(p, min(k, p.shape[-1]))
    return i.numpy().astype(np.int32), v.numpy().astype(np.float16)


def draft_q(ids: np.ndarray, probs16: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The exact q both sides use: float16 probabilities renormalised in float64."""
    q = probs16.astype(np.float64)
    s = q.sum()
    return ids, (q / s if s > 0 else np.full(len(q), 1.0 / len(q)))


def encode_probs(ids: list[np.ndarray], probs: list[np.ndarray]) -> bytes:
    return np.concatenate(ids).astype("<i4").tobytes() + np.concatenate(probs).astype("<f2").tobytes()


def decode_probs(b: bytes, gamma: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    n = gamma * k
    if len(b) != n * 6:
        raise ValueError(f"draft probabilities: {len(b)} bytes for gamma {gamma} x top-{k}")
    ids = np.frombuffer(b[: 4 * n], dtype="<i4").reshape(gamma, k)
    pr = np.frombuffer(b[4 * n :], dtype="<f2").reshape(gamma, k)
    return ids, pr


def acceptance_decision(
    draft: list[int],
    logits: torch.Tensor,
    temperature: float,
    seed: int,
    rid: int,
    position: int,
    q: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[int, int]:
    """(accepted, next token) for draft tokens at output positions position.. given the target's logits
    (gamma+1 rows: row i predicts the token at position + i). q: (ids, probs) rows of the draft's top-k."""
    g = len(draft)
    if temperature <= 0:
        pred = logits[: g + 1].argmax(-1).tolist()
        a = 0
        while a < g and draft[a] == pred[a]:
            a += 1
        return a, pred[a]
    n = position + g + 1
    u_acc = uniforms(seed, rid, n, STREAM_ACCEPT)[position:]
    u_tok = uniforms(seed, rid, n, STREAM_TARGET)[position:]
    for i, x in enumerate(draft):
        p = softmax_t(logits[i], temperature)
        if q is None:
            qi = np.zeros_like(p)
            qi[x] = 1.0
        else:
            qi = np.zeros_like(p)
            ids, pr = draft_q(q[0][i], q[1][i])
            np.add.at(qi, ids, pr)
        if qi[x] > 0 and u_acc[i] < min(1.0, p[x] / qi[x]):
            continue
        r = np.maximum(p - qi, 0.0)
        if r.sum() <= 0:  # p == q: any rejection is measure-zero; fall back to p
            r = p
        return i, sample(r, u_tok[i])
    return g, sample(softmax_t(logits[g], temperature), u_tok[g])


# -- target ------------------------------------------------------------------------------------------------


class _TReq:
    __slots__ = ("tokens", "kv")

    def __init__(self, tokens: list[int]):
        self.tokens = tokens
        self.kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # KV of tokens[:-1]


class HFTarget(TargetBackend):
    name = "hf"
    blocking = True

    def __init__(self, model, temperature: float = 0.0, seed: int = 0):
        self.run = Runner(model)
        self.temperature = temperature
        self.seed = seed
        self.reqs: dict[int, _TReq] = {}

    # prefill: prompts right-padded into one forward
    def prefill_batch(self, items: list[TargetRequest]) -> TargetOutcome:
        prompts = [tokens_array(r.prompt).tolist() or [0] for r in items]
        lens = [len(p) for p in prompts]
        L = max(lens)
        ids = torch.zeros((len(items), L), dtype=torch.long)
        for b, p in enumerate(prompts):
            ids[b, : len(p)] = torch.tensor(p)
        cache = new_cache()
        h = self.run.hidden(ids, cache)
        last = h[torch.arange(len(items)), torch.tensor(lens) - 1]
        logits = self.run.logits(last)
        kv = cache_kv(cache)
        toks = []
        for b, r in enumerate(items):
            if self.temperature > 0:
                u = uniforms(self.seed, r.rid, 1, STREAM_TARGET)[0]
                t = sample(softmax_t(logits[b], self.temperature), u)
            else:
                t = int(logits[b].argmax())
            st = _TReq(prompts[b] + [t])
            st.kv = [(k[b : b + 1, :, : lens[b]], v[b : b + 1, :, : lens[b]]) for k, v in kv]
            self.reqs[r.rid] = st
            toks.append(t)
        return TargetOutcome(toks, [], 0.0)

    def verify_batch(self, items: list[TargetRequest]) -> TargetOutcome:
        states = [self.reqs[r.rid] for r in items]
        drafts = [tokens_array(r.draft).tolist() for r in items]
        logits_rows, new_kv = self.forward_batch(states, drafts)
        accepted, toks = [], []
        for b, (r, st, d) in enumerate(zip(items, states, drafts)):
            q = None
            if self.temperature > 0 and r.probs and r.topk:
                q = decode_probs(r.probs, len(d), r.topk)
            a, t = acceptance_decision(d, logits_rows[b], self.temperature, self.seed, r.rid, r.produced, q)
            keep = len(st.tokens) + a  # KV of tokens (all, the last one included now) + the accepted drafts
            st.kv = [(k[..., :keep, :], v[..., :keep, :]) for k, v in new_kv[b]]
            st.tokens.extend(d[:a])
            st.tokens.append(t)
            accepted.append(a)
            toks.append(t)
        return TargetOutcome(toks, accepted, 0.0)

    def forward_batch(self, states: list[_TReq], drafts: list[list[int]]):
        """One forward over every row's [last token] + draft: (logits per row (g+1, V), per-row KV lists)."""
        B = len(states)
        ctx = [len(s.tokens) - 1 for s in states]
        inp = [[s.tokens[-1]] + d for s, d in zip(states, drafts)]
        T = max(len(x) for x in inp)
        Lmax = max(ctx)
        ids = torch.zeros((B, T), dtype=torch.long)
        pos = torch.zeros((B, T), dtype=torch.long)
        for b, x in enumerate(inp):
            ids[b, : len(x)] = torch.tensor(x)
            pos[b] = ctx[b] + torch.arange(T)
        if B == 1:
            cache = cache_from([(k, v) for k, v in states[0].kv])
            mask = None
        else:
            layers = []
            for li, (k0, v0) in enumerate(states[0].kv):
                shape = (B, k0.shape[1], Lmax, k0.shape[3])
                K = k0.new_zeros(shape)
                V = v0.new_zeros((B, v0.shape[1], Lmax, v0.shape[3]))
                for b, s in enumerate(states):
                    k, v = s.kv[li]
                    if ctx[b]:
                        K[b, :, Lmax - ctx[b] :] = k[0]
                        V[b, :, Lmax - ctx[b] :] = v[0]
                layers.append((K, V))
            cache = cache_from(layers)
            # row b, query i attends to its own context and its own new tokens up to i
            kvpos = torch.arange(Lmax + T)
            start = torch.tensor([Lmax - c for c in ctx])[:, None, None]
            qpos = (Lmax + torch.arange(T))[None, :, None]
            mask = ((kvpos[None, None, :] >= start) & (kvpos[None, None, :] <= qpos))[:, None]
        h = self.run.hidden(ids, cache, mask, pos)
        logits = self.run.logits(h)
        kv = cache_kv(cache)
        out_kv = []
        for b in range(B):
            off = Lmax - ctx[b] if B > 1 else 0
            out_kv.append([(k[b : b + 1, :, off:], v[b : b + 1, :, off:]) for k, v in kv])
        return [logits[b, : len(inp[b])] for b in range(B)], out_kv

    def release(self, rid: int) -> None:
        self.reqs.pop(rid, None)

    def warmup(self) -> None:
        """One prefill and one verify before the node reports ready: a process's first forward pays one-off
        costs (allocator, kernels; 494 ms for a 41-token prefill that takes 195 ms later) that no request should."""
        r = TargetRequest(-1, b"", np.arange(1, 17, dtype=TOKEN_DTYPE).tobytes(), 8)
        self.prefill_batch([r])
        r.produced, r.draft = 1, np.arange(5, 9, dtype=TOKEN_DTYPE).tobytes()
        self.verify_batch([r])
        self.release(r.rid)

    def tokens(self, rid: int) -> list[int] | None:
        st = self.reqs.get(rid)
        return st.tokens if st is not None else None

    def snapshot(self, rid: int) -> tuple[list[int], Any]:
        """Request `rid`'s state (committed tokens, KV cache), for `restore`: a measurement repeats one round on
        the same context (nodes.backends.hf_bench). The KV tensors are shared, not copied: a round replaces
        them (`forward_batch` slices new ones), never writes into them."""
        st = self.reqs[rid]
        return list(st.tokens), st.kv

    def restore(self, rid: int, snap: tuple[list[int], Any]) -> None:
        st = self.reqs[rid]
        st.tokens[:] = snap[0]
        st.kv = snap[1]


# -- draft -------------------------------------------------------------------------------------------------


class _DReq:
    __slots__ = ("tokens", "cache", "drafted", "output_tokens")

    def __init__(self, output_tokens: int):
        self.tokens: list[int] = []
        self.cache = None
        self.drafted: list[int] = []
        self.output_tokens = output_tokens


class HFDraft(DraftBackend):
    name = "hf"
    blocking = True

    def __init__(
        self,
        model,
        tokenizer,
        temperature: float = 0.0,
        seed: int = 0,
        topk: int = TOPK,
        context_of=None,
        lookup_ngram: int = 0,
    ):
        if lookup_ngram and temperature > 0:  # (the spec refuses it: models.lookup_ngram)
            raise ValueError("prompt lookup drafts deterministic copies: it needs temperature 0 (greedy)")
        self.run = Runner(model)
        self.lookup_ngram = lookup_ngram
        self.tok = tokenizer
        self.temperature = temperature
        self.seed = seed
        self.topk = topk
        self.reqs: dict[int, _DReq] = {}
        self._prompts = None
        self.context_of = context_of  # co-located: rid -> the target's committed tokens (same process)

    def prompt_source(self) -> PromptSource:
        if self._prompts is None:
            self._prompts = PromptSource(self.tok)
        return self._prompts

    def start(self, rid: int, prompt: bytes, output_tokens: int) -> None:
        st = self.reqs[rid] = _DReq(output_tokens)
        if prompt:
            st.tokens = tokens_array(prompt).tolist()

    def prompt(self, rid: int, prompt_tokens: int) -> bytes:
        n = min(prompt_tokens, max(1, self.run.max_pos - 1 - (self.reqs[rid].output_tokens if rid in self.reqs else 0)))
        toks = self.prompt_source().tokens(rid, n)
        st = self.reqs.setdefault(rid, _DReq(0))
        st.tokens = list(toks)
        return np.asarray(toks, dtype=TOKEN_DTYPE).tobytes()

    def _state(self, it: DraftItem) -> _DReq:
        st = self.reqs.get(it.rid)
        if self.context_of is not None:
            toks = self.context_of(it.rid)
            if toks is not None:
                if st is None:
                    st = self.reqs[it.rid] = _DReq(0)
                # co-located: the target's committed tokens are the truth; keep the cache's valid prefix
                ref = st.tokens + st.drafted  # what the cache's positions hold
                n = 0
                lim = min(len(ref), len(toks))
                while n < lim and ref[n] == toks[n]:
                    n += 1
                if st.cache is not None:
                    crop(st.cache, min(n, cache_len(st.cache)))
                st.tokens = list(toks)
                st.drafted = []
        if st is None or not st.tokens:
            raise KeyError(f"hf draft: request {it.rid} has no context (prompt() / observe() not called)")
        return st

    def draft(self, items: list[DraftItem]) -> DraftOutcome:
        out, probs = [], []
        for it in items:
            toks, pr = self.draft_one(self._state(it), it)
            out.append(np.asarray(toks, dtype=TOKEN_DTYPE).tobytes())
            probs.append(pr)
        if self.temperature > 0:
            return DraftOutcome(out, 0.0, self.topk, probs)
        return DraftOutcome(out, 0.0)

    def draft_one(self, st: _DReq, it: DraftItem) -> tuple[list[int], bytes | None]:
        if st.cache is None:
            st.cache = new_cache()
        c = cache_len(st.cache)
        if c >= len(st.tokens):  # never: the last committed token is always fed
            crop(st.cache, len(st.tokens) - 1)
            c = len(st.tokens) - 1
        feed = st.tokens[c:]
        drafted: list[int] = []
        ids_l, pr_l = [], []
        if self.temperature > 0:
            u = uniforms(self.seed, it.rid, it.position + it.gamma + 1, STREAM_DRAFT)[it.position :]
        ctx = st.tokens + drafted if self.lookup_ngram else None
        for i in range(it.gamma):
            if ctx is not None:
                x = lookup_next(ctx, self.lookup_ngram)
                if x is not None:  # a copy: enters the cache with the next model step (or the next round's feed)
                    drafted.append(x)
                    ctx.append(x)
                    feed = feed + [x]
                    continue
            h = self.run.hidden(torch.tensor([feed]), st.cache)
            lg = self.run.logits(h[0, -1])
            if self.temperature > 0:
                ids, p16 = topk_dist(lg, self.temperature, self.topk)
                ids_q, q = draft_q(ids, p16)
                x = int(ids_q[sample(q, u[i])])
                ids_l.append(ids)
                pr_l.append(p16)
            else:
                x = int(lg.argmax())
            drafted.append(x)
            if ctx is not None:
                ctx.append(x)
            feed = [x]
        st.drafted = drafted
        pr = encode_probs(ids_l, pr_l) if (self.temperature > 0 and drafted) else None
        return drafted, pr

    def observe(self, rid: int, accepted: int, token: int) -> None:
        st = self.reqs.get(rid)
        if st is None:
            return
        d = st.drafted[:accepted]
        if st.cache is not None:
            # the cache holds the committed tokens + the first gamma-1 drafts: keep the accepted ones
            crop(st.cache, min(cache_len(st.cache), len(st.tokens) + len(d)))
        st.tokens.extend(d)
        st.tokens.append(int(token))
        st.drafted = []

    def release(self, rid: int) -> None:
        self.reqs.pop(rid, None)

    def snapshot(self, rid: int) -> tuple[list[int], int | None]:
        """Request `rid`'s state (committed tokens, cache length; None: no cache yet), for `restore`."""
        st = self.reqs[rid]
        return list(st.tokens), (None if st.cache is None else cache_len(st.cache))

    def restore(self, rid: int, snap: tuple[list[int], int | None]) -> None:
        """Back to a snapshot taken earlier in the request's life: the tokens it had, the cache cut back to the
        length it had (a cache of positions it has not seen is dropped: the next draft starts a fresh one)."""
        st = self.reqs[rid]
        tokens, n = snap
        st.tokens[:] = tokens
        st.drafted = []
        if n is None:
            st.cache = None
        elif st.cache is not None:
            crop(st.cache, n)

    def warmup(self) -> None:
        """Build the prompt source and draft once before the node reports ready (a first request paid 305 ms
        for both in a real run)."""
        rid = -1
        self.start(rid, b"", 8)
        self.prompt(rid, 16)
        self.observe(rid, 0, 1)
        self.draft([DraftItem(rid, 1, 2, 17)])
        self.release(rid)


# -- factories ---------------------------------------------------------------------------------------------

_TARGETS: dict[str, HFTarget] = {}  # per node in this process: the co-located drafter reads its context


def _threads(scenario, node: str) -> int | None:
    """torch threads of this node: DSD_TORCH_THREADS (the user's), else the node's cpu_share, else the
    orchestrator's share of the machine (DSD_TORCH_THREADS_DEFAULT), so nodes do not oversubscribe the cores."""
    env = os.environ.get("DSD_TORCH_THREADS")
    if env:
        return int(env)
    share = scenario.node(node).cpu_share
    if share:
        return max(1, int(round(share)))
    default = os.environ.get("DSD_TORCH_THREADS_DEFAULT")
    return int(default) if default else None


def make_target(scenario, node: str) -> HFTarget:
    try:
        model, _, _ = M.load_model(scenario.node(node).model, _threads(scenario, node))
    except M.ModelError as e:
        raise ValueError(str(e)) from None
    log.info("%s: kernels %s", node, M.kernel_states())
    t = HFTarget(model, scenario.spec.models.temperature, scenario.spec.seed)
    t.warmup()
    _TARGETS[node] = t
    return t


def make_draft(scenario, node: str) -> HFDraft:
    role = scenario.node(node).role
    # a draft node runs its own model (resolve() filled it in); a fused target drafts with models.draft
    name = scenario.spec.models.draft if role == "target" else scenario.node(node).model
    try:
        model, tok, _ = M.load_model(name, _threads(scenario, node))
    except M.ModelError as e:
        raise ValueError(str(e)) from None
    log.info("%s: kernels %s", node, M.kernel_states())
    colocated = _TARGETS.get(node) if role == "target" else None
    d = HFDraft(
        model,
        tok,
        scenario.spec.models.temperature,
        scenario.spec.seed,
        context_of=colocated.tokens if colocated is not None else None,
        lookup_ngram=scenario.spec.models.lookup_ngram,
    )
    if colocated is None:
        d.warmup()
    return d
