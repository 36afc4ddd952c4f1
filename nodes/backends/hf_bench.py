"""Timings of the real models through the hf backend (nodes.backends.hf), over a grid (used by
`testbed calibrate`, testbed/calibrate). It drives the backend through its public API only (start, prompt,
draft, observe, prefill_batch, verify_batch, snapshot / restore, release).

Each measurement is the median (default) or the minimum of `reps` repetitions (wall clock,
time.perf_counter). The median estimates the typical time a run will see; the minimum the best case, which
live runs beat rarely: on the hf-pair runs, verify batches that overlapped nothing took 3-6 % longer than
a minimum-of-3 calibration predicted. The minimum is the choice on a machine busy with other jobs
(interference only ever adds time; single outliers of several seconds were seen there with the median of 3). Rows are
(n_req, n_tokens, ctx_tokens, ms) as testbed.calibrate.fit expects:
- draft step: one request, one token, context ctx: a draft() call of gamma tokens divided by gamma, after
  a first call that prefilled the draft's cache (not timed);
- draft prefill: a request's first draft call of gamma 1 (a fresh cache fed prompt + first token, L tokens in
  one forward): (1, L, 0);
- prefill: B prompts of length L in one batch: (B, B*L, 0);
- verify: B requests of context ctx, gamma drafts each, one batch: (B, B*(gamma+1), B*ctx). States are
  restored after every repetition, so all repetitions see the same contexts.
"""

from __future__ import annotations

import time

import numpy as np


def _tb(xs) -> bytes:
    return np.asarray(xs, dtype="<i4").tobytes()


class Bench:
    def __init__(self, target_model, draft_model, tokenizer, reps: int = 3, estimator: str = "median"):
        from nodes.backends.hf import HFDraft, HFTarget
        from nodes.prompts import PromptSource

        self.target = HFTarget(target_model)
        self.draft = HFDraft(draft_model, tokenizer)
        self.ps = PromptSource(tokenizer)
        self.reps = reps
        if estimator not in ("median", "min"):
            raise ValueError(f"estimator must be median or min, not {estimator!r}")
        self.estimator = np.median if estimator == "median" else min
        self.rng = np.random.default_rng(0)
        self.tok_id = min(42, self.draft.run.vocab - 1)  # a token the draft's vocabulary has (tiny test models too)

    def _best(self, fn) -> float:  # median or minimum, see the module docstring
        ts = []
        for _ in range(self.reps):
            t = time.perf_counter()
            fn()
            ts.append((time.perf_counter() - t) * 1e3)
        return float(self.estimator(ts))

    def draft_steps(self, ctxs: list[int], gamma: int = 4) -> list[tuple]:
        from nodes.backends import DraftItem

        rows = []
        for i, ctx in enumerate(ctxs):
            rid = 10_000 + i
            self.draft.start(rid, _tb(self.ps.tokens(rid, ctx)), 1 << 20)
            self.draft.draft([DraftItem(rid, 0, 1, ctx)])  # prefill the draft's cache (untimed)
            self.draft.observe(rid, 0, self.tok_id)
            base = self.draft.snapshot(rid)

            def once():
                self.draft.draft([DraftItem(rid, 1, gamma, ctx)])
                self.draft.observe(rid, 0, self.tok_id)
                self.draft.restore(rid, base)  # back to the same context: drop the round's token again

            once()  # warm-up
            rows.append((1, 1, ctx, self._best(once) / gamma))
            self.draft.release(rid)
        return rows

    def draft_prefill(self, lengths: list[int]) -> list[tuple]:
        from nodes.backends import DraftItem

        rows = []
        for i, L in enumerate(lengths):
            rid = 15_000 + i
            self.draft.start(rid, _tb(self.ps.tokens(rid, max(1, L - 1))), 1 << 20)
            self.draft.observe(rid, 0, self.tok_id)  # the prefill's token: the context is now L tokens
            fresh = self.draft.snapshot(rid)  # no cache yet

            def once():
                self.draft.restore(rid, fresh)  # a fresh cache, as at a request's first round
                self.draft.draft([DraftItem(rid, 1, 1, L)])

            once()  # warm-up
            rows.append((1, L, 0, self._best(once)))
            self.draft.release(rid)
        return rows

    def prefill(self, batches: list[int], lengths: list[int]) -> list[tuple]:
        from nodes.backends import TargetRequest

        rows = []
        for L in lengths:
            for B in batches:
                items = [TargetRequest(20_000 + b, b"x", _tb(self.ps.tokens(b, L)), 1 << 20) for b in range(B)]
                ms = self._best(lambda: self.target.prefill_batch(items))
                rows.append((B, B * L, 0, ms))
                for r in items:
                    self.target.release(r.rid)
        return rows

    def _pool(self, ctx: int, n: int) -> list:
        from nodes.backends import TargetRequest

        items = [
            TargetRequest(30_000 + ctx * 16 + b, b"x", _tb(self.ps.tokens(ctx + b, ctx - 1)), 1 << 20) for b in range(n)
        ]
        self.target.prefill_batch(items)  # contexts are ctx - 1 prompt + 1 token
        for r in items:
            r.produced = 1
        return items

    def verify(self, batches: list[int], gammas: list[int], ctxs: list[int], one_by_one: bool = False) -> list[tuple]:
        """Rows (B, tokens, ctx, ms); with one_by_one also the time of verifying the same B requests
        separately (row[4])."""
        rows = []
        V = self.target.run.vocab
        for ctx in ctxs:
            pool = self._pool(ctx, max(batches))
            for g in gammas:
                for B in batches:
                    items = pool[:B]
                    for r in items:
                        r.draft = _tb(self.rng.integers(0, V, g))
                    saved = [self.target.snapshot(r.rid) for r in items]

                    def restore():
                        for r, snap in zip(items, saved):
                            self.target.restore(r.rid, snap)

                    def batched():
                        self.target.verify_batch(items)
                        restore()

                    def single():
                        for r in items:
                            self.target.verify_batch([r])
                        restore()

                    batched()  # warm-up
                    row = (B, B * (g + 1), B * ctx, self._best(batched))
                    if one_by_one:
                        row = row + (self._best(single),)
                    rows.append(row)
            for r in pool:
                self.target.release(r.rid)
        return rows
