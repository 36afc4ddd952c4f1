"""The documented synthetic request generator (see FORMATS.md, "synthetic")."""

from __future__ import annotations

import math

import numpy as np

from .errors import TraceError
from .model import ParsedRows, Trace, Window, build_trace

ARRIVALS = ("poisson", "uniform")


def synthetic_rows(
    *,
    n_requests: int,
    rate_rps: float,
    prompt_mean: float,
    output_mean: float,
    arrival: str = "poisson",
    seed: int = 0,
    prompt_sigma: float = 1.0,
    output_sigma: float = 1.0,
    prompt_max: int = 32768,
    output_max: int = 8192,
) -> tuple[ParsedRows, str]:
    """The generated rows and a ``synthetic:...`` description of them (the Trace's ``source``)."""
    source = (
        f"synthetic:{arrival} n_requests={n_requests} rate_rps={rate_rps:g} prompt_mean={prompt_mean:g} "
        f"prompt_sigma={prompt_sigma:g} prompt_max={prompt_max} output_mean={output_mean:g} "
        f"output_sigma={output_sigma:g} output_max={output_max} seed={seed}"
    )
    problems = []
    if isinstance(n_requests, bool) or not isinstance(n_requests, (int, np.integer)) or n_requests < 1:
        problems.append(f"n_requests must be an integer >= 1, got {n_requests!r}")
    if not (math.isfinite(rate_rps) and rate_rps > 0):
        problems.append(f"rate_rps must be > 0, got {rate_rps!r}")
    if arrival not in ARRIVALS:
        problems.append(f"arrival must be one of {', '.join(ARRIVALS)}, got {arrival!r}")
    for name, mean, sigma, cap in (
        ("prompt", prompt_mean, prompt_sigma, prompt_max),
        ("output", output_mean, output_sigma, output_max),
    ):
        if not (math.isfinite(mean) and mean >= 1):
            problems.append(f"{name}_mean must be >= 1, got {mean!r}")
        if not (math.isfinite(sigma) and sigma >= 0):
            problems.append(f"{name}_sigma must be >= 0, got {sigma!r}")
        if not (isinstance(cap, (int, np.integer)) and 1 <= cap <= 2**31 - 1):
            problems.append(f"{name}_max must be an integer >= 1, got {cap!r}")
    if problems:
        raise TraceError("synthetic: " + "; ".join(problems))

    rng = np.random.default_rng(seed)
    n = int(n_requests)
    if arrival == "poisson":
        gaps = rng.exponential(1.0 / rate_rps, size=n - 1)
    else:
        gaps = np.full(n - 1, 1.0 / rate_rps)
    t = np.concatenate(([0.0], np.cumsum(gaps)))
    prompt = _lognormal_tokens(rng, n, prompt_mean, prompt_sigma, prompt_max)
    output = _lognormal_tokens(rng, n, output_mean, output_sigma, output_max)
    rows = ParsedRows(
        t_s=t, t0_s=0.0, prompt_tokens=prompt, output_tokens=output, field=None, skipped_rows=0, excluded_rows=0
    )
    return rows, source


def _lognormal_tokens(rng: np.random.Generator, n: int, mean: float, sigma: float, cap: int) -> np.ndarray:
    """Lognormal with the given mean (mu = ln(mean) - sigma^2/2), rounded, clipped to [1, cap]."""
    mu = math.log(mean) - sigma * sigma / 2.0
    return np.clip(np.rint(rng.lognormal(mu, sigma, size=n)), 1, cap).astype(np.int64)


def generate_synthetic(
    *,
    n_requests: int,
    rate_rps: float,
    prompt_mean: float,
    output_mean: float,
    arrival: str = "poisson",
    seed: int = 0,
    prompt_sigma: float = 1.0,
    output_sigma: float = 1.0,
    prompt_max: int = 32768,
    output_max: int = 8192,
) -> Trace:
    """A synthetic trace: Poisson (or evenly spaced, ``"uniform"``) arrivals at ``rate_rps``, first at 0 s;
    prompt and output lengths lognormal with the given means and sigmas (of the underlying normal), rounded
    and clipped to [1, max]. Deterministic from ``seed`` (numpy ``default_rng``; draws: gaps, prompts, outputs)."""
    rows, source = synthetic_rows(
        n_requests=n_requests,
        rate_rps=rate_rps,
        prompt_mean=prompt_mean,
        output_mean=output_mean,
        arrival=arrival,
        seed=seed,
        prompt_sigma=prompt_sigma,
        output_sigma=output_sigma,
        prompt_max=prompt_max,
        output_max=output_max,
    )
    return build_trace(rows, source, Window())
