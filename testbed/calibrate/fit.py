"""Fitting the linear cost terms of testbed.compute to measured latencies.

    cost_ms = base_ms + per_req_ms * n_req + per_token_ms * n_tokens + per_kctx_ms * ctx_tokens / 1000
              + multi_token_ms * (n_tokens > 1)

Least squares on relative errors (each row weighted by 1 / measured latency): the grid spans 40 ms to seconds,
and an absolute fit let the largest batches decide everything (a verify fit that was 150 % off at small
contexts, where real runs live). Non-negative (a negative coefficient would make the simulator predict negative
latencies
somewhere): with at most five coefficients the exact NNLS solution is found by solving the unconstrained
problem on every subset of free coefficients (the others held at 0) and keeping the best feasible one.
Columns that are constant in the data (e.g. n_req = 1 for draft steps) cannot be told apart from base_ms
and are fixed at 0.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

TERMS = ("base_ms", "per_req_ms", "per_token_ms", "per_kctx_ms", "multi_token_ms")


@dataclass(frozen=True)
class Fit:
    coef: dict[str, float]  # the CostSpec fields (TERMS), ms
    r2: float
    max_abs_ms: float
    max_rel: float
    n: int

    def quality(self) -> str:
        return f"R2 {self.r2:.3f}, max error {self.max_abs_ms:.1f} ms ({100 * self.max_rel:.0f} %), {self.n} points"


def design(n_req, n_tokens, ctx_tokens) -> np.ndarray:
    n_req, n_tokens, ctx = (np.asarray(x, dtype=np.float64) for x in (n_req, n_tokens, ctx_tokens))
    return np.column_stack([np.ones_like(n_req), n_req, n_tokens, ctx / 1000.0, (n_tokens > 1).astype(np.float64)])


def nnls(A: np.ndarray, y: np.ndarray, free: list[int]) -> np.ndarray:
    best, best_err = np.zeros(A.shape[1]), float(np.sum(y**2))
    for k in range(1, len(free) + 1):
        for sub in itertools.combinations(free, k):
            x, *_ = np.linalg.lstsq(A[:, sub], y, rcond=None)
            if np.any(x < 0):
                continue
            err = float(np.sum((A[:, sub] @ x - y) ** 2))
            if err < best_err - 1e-12:
                best_err = err
                best = np.zeros(A.shape[1])
                best[list(sub)] = x
    return best


def fit_cost(n_req, n_tokens, ctx_tokens, ms, relative: bool = True) -> Fit:
    """Fit the cost term to measurements (arrays of equal length; latency in ms). relative=False: plain least
    squares (for repeated noisy measurements in one narrow range, as a run's own rounds: the fit then keeps their
    mean, which a relative fit pulls down by ~ the noise's relative variance)."""
    A = design(n_req, n_tokens, ctx_tokens)
    y = np.asarray(ms, dtype=np.float64)
    if len(y) == 0:
        raise ValueError("no measurements to fit")
    free = [0] + [j for j in range(1, A.shape[1]) if np.ptp(A[:, j]) > 0]
    # columns proportional to another free one (e.g. n_tokens = n_req when each request has one token) are
    # indistinguishable: keep the first
    kept: list[int] = []
    for j in free:
        if any(np.linalg.matrix_rank(A[:, [i, j]]) < 2 for i in kept):
            continue
        kept.append(j)
    w = 1.0 / np.maximum(y, 1e-9) if relative else np.ones_like(y)  # relative errors, see the module docstring
    x = nnls(A * w[:, None], y * w, kept)
    pred = A @ x
    ss_res = float(np.sum((y - pred) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else (1.0 if ss_res < 1e-12 else 0.0)
    err = np.abs(y - pred)
    rel = err / np.maximum(np.abs(y), 1e-9)
    return Fit({t: float(v) for t, v in zip(TERMS, x)}, r2, float(err.max()), float(rel.max()), len(y))


def write_profile(path: Path, fits: dict[str, Fit], description: str, extra: dict | None = None) -> Path:
    """A ProfileSpec YAML (draft_step / draft_prefill / prefill / verify) with the fit quality in its description,
    plus a side
    file PATH.fit.json holding the quality figures and whatever `extra` says (grid, machine, models)."""
    import json

    quality = "; ".join(f"{k}: {f.quality()}" for k, f in fits.items())
    doc = {"description": f"{description} Fit: {quality}."}
    for k in ("draft_step", "draft_prefill", "prefill", "verify"):
        if k in fits:
            doc[k] = {t: round(v, 6) for t, v in fits[k].coef.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False, width=120))
    side = {
        k: {"coef": f.coef, "r2": f.r2, "max_abs_ms": f.max_abs_ms, "max_rel": f.max_rel, "n": f.n}
        for k, f in fits.items()
    }
    side.update(extra or {})
    path.with_suffix(".fit.json").write_text(json.dumps(side, indent=1))
    return path
