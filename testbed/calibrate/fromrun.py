"""Compute profiles fitted on what an emulation with real models measured (`testbed run --sim-compute as-built`).

A profile calibrated before a run predicts the compute of a quiet moment; on a shared machine the run itself may
compute at another speed (measured 2026-11-29 on topologies/hf-pair.yaml: a run-specific calibration gave 68 ms
per draft token and 226 ms per verify batch, the run, started seconds later while other jobs compiled, drafted at
152 ms and verified in 409 ms). Like the as-built links and the as-built acceptance, the simulation can then take
the compute times the run had: the same linear cost terms (testbed.compute, fitted by testbed.calibrate.fit) over
the run's own rounds and batches, per profile, so the comparison judges what is under test (network, queues,
processes, node-side costs), not the machine's speed at another moment.

What is fitted from which table (the simulator charges exactly these, testbed/compute.py):
- draft_step: rounds after a request's first, per drafted token: (1, 1, context before the round, ms / gamma)
  with ms = send - draft_start (the draft node's compute, handed to its worker thread and back);
- draft_prefill: a request's first round: (1, its context, 0, ms - (gamma - 1) * draft_step(context));
- prefill: prefill batches (batch size, prompt tokens, 0, end - start) of emu/batches.parquet;
- verify: verify batches from the rounds that shared one (target, batch start): (size, sum of gamma + 1,
  summed context, end - start); batches a released request left incomplete are skipped.
A term with fewer than MIN_POINTS measurements keeps the profile's own.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from testbed.calibrate.fit import Fit, fit_cost
from testbed.compute import Cost
from testbed.spec.schema import CostSpec, ProfileSpec

MIN_POINTS = 3


def _fit(rows: list[tuple[int, int, int, float]]) -> Fit | None:
    rows = [r for r in rows if r[3] > 0]
    if len(rows) < MIN_POINTS:
        return None
    return fit_cost(*zip(*rows), relative=False)  # the run's own range: keep the mean (fit_cost's docstring)


def profiles_from_run(
    scenario, rounds: pd.DataFrame, batches: pd.DataFrame, requests: pd.DataFrame
) -> dict[str, tuple[ProfileSpec, dict[str, Any]]]:
    """Per profile name used by the run's nodes: (the fitted profile, {term: fit quality or 'profile'})."""
    prompt = dict(zip(requests.request_id.astype(int), requests.prompt_tokens.astype(int)))
    r = rounds[rounds.gamma > 0].copy()
    r["ctx"] = r.request_id.map(prompt).astype(float) + r.produced
    r["ms"] = (r.send_s - r.draft_start_s) * 1e3
    first = r["round"] == r.groupby("request_id")["round"].transform("min")
    out: dict[str, tuple[ProfileSpec, dict[str, Any]]] = {}
    by_profile: dict[str, list[str]] = {}
    for n in list(scenario.drafts) + list(scenario.targets):
        by_profile.setdefault(scenario.node(n).profile, []).append(n)
    for name, nodes in by_profile.items():
        base = scenario.spec.profiles[name]  # the resolved spec holds every profile its nodes use
        fits: dict[str, Fit | None] = {}
        mine = r[r.edge.isin(nodes)]
        later, firsts = mine[~first.loc[mine.index]], mine[first.loc[mine.index]]
        fits["draft_step"] = _fit([(1, 1, int(c), m / g) for c, m, g in zip(later.ctx, later.ms, later.gamma)])
        step = Cost.from_spec(CostSpec(**fits["draft_step"].coef) if fits["draft_step"] else base.draft_step)
        first_step = [m - (g - 1) * step(1, 1, c) * 1e3 for c, m, g in zip(firsts.ctx, firsts.ms, firsts.gamma)]
        fits["draft_prefill"] = _fit([(1, int(c), 0, v) for c, v in zip(firsts.ctx, first_step)])
        b = batches[(batches.target.isin(nodes)) & (batches.kind == "prefill")]
        fits["prefill"] = _fit(
            [(int(n), int(t), 0, (e - s) * 1e3) for n, t, s, e in zip(b["size"], b.tokens, b.start_s, b.end_s)]
        )
        v = r[r.target.isin(nodes)].assign(tok=lambda x: x.gamma + 1)
        vrows = []
        for (_, bs), g in v.groupby(["target", "batch_start_s"]):
            if len(g) != int(g.batch_size.iloc[0]):
                continue
            vrows.append((len(g), int(g.tok.sum()), int(g.ctx.sum()), float(g.batch_end_s.iloc[0] - bs) * 1e3))
        fits["verify"] = _fit(vrows)
        terms = {k: (CostSpec(**f.coef) if f else getattr(base, k)) for k, f in fits.items()}
        quality = {k: (f.quality() if f else "profile (too few measurements)") for k, f in fits.items()}
        desc = f"Fitted on the emulation's own rounds and batches (as-built compute), from {name}: " + "; ".join(
            f"{k}: {q}" for k, q in quality.items()
        )
        out[name] = (ProfileSpec(description=desc, **terms), quality)
    return out
