"""AWC training labels from DSD-Sim rollouts.

One *configuration* = one topology family (topologies/*.yaml) with sampled link delays and rates, draft
speed, acceptance model, load, draft slots, behaviour policy and seed (`sample_config`). For each
configuration (`label_config`):

1. **Prefix run.** Simulate it with the behaviour policy BASE (static:2/4/6, hf or specdec).
2. **Branch points.** Pick a time t0 in the middle of the arrivals and a class c of drafts (drafts of the
   same edge group: same profile, same link). K = number of window decisions the run asked for before t0
   (round start times come from the rounds table: a round starts when the previous result, or the first
   token, reached the drafter).
3. **Rollouts.** For every candidate window G, re-simulate with `awc-rollout:K/G/...` (testbed/awc/rollout.py):
   identical to the prefix run up to decision K (the simulator is deterministic: same seed, same events,
   same acceptance sequences), then every later decision of class-c requests returns G. This is
   "re-simulation of a warm-up prefix with the same seed followed by a fixed-gamma horizon", chosen over a
   deepcopy of a paused simulation because the simulator has no pause / snapshot API and closures in its
   builder would not copy; the prefix costs a few hundred ms per rollout, and the simulator stays untouched.
   All of class c switches (not one request) because a deployed policy facing the same state takes the same
   decision on every such draft, and the window's externality (target load) is part of what must be learned.
4. **Objective.** Cohort R = class-c requests active at t0 (first token <= t0 < finish) or arriving in
   [t0, t0 + H] (H = 30 % of the arrival span). For each G:
       goodput_R = number of R meeting both SLOs of testbed.metrics (TTFT <= 2 s, TPOT <= 100 ms) / H
       rate_R    = sum of R's output tokens / sum of R's E2E latencies  (tokens/s of request life)
   label = argmax of rate_R (the throughput each request sees, queueing included) among the candidates
   whose goodput_R is within max(1 request, 5 % of |R|) of the best: goodput first, then rate_R as the
   tie-break, with one request's difference in a finite cohort counted as a tie (`best_index`). At light load goodput
   ties (every
   request meets the SLOs) and the tie-break picks the fastest window; at saturation, or near the TPOT
   SLO on slow paths, goodput decides.
5. **Samples.** The features (testbed.policies.features, replayed over each request's feedback before t0,
   exactly what its controller would hold at its next decision) of up to `per_branch` class-c requests
   active at t0, all with the branch's label and per-candidate scores (for regret).
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from testbed.awc.rollout import rollout_form
from testbed.metrics import DEFAULT_SLO_TPOT_MS, DEFAULT_SLO_TTFT_MS, latencies
from testbed.policies.features import FEATURE_NAMES, FeatureState
from testbed.policies.window import RoundFeedback
from testbed.sim import simulate
from testbed.spec import Scenario, TopologySpec, resolve
from testbed.workload import build_workload

TOPOLOGY_DIR = Path(__file__).resolve().parents[2] / "topologies"
FAMILIES = ("star-4edge", "star-16edge", "two-tier", "hetero-edge", "multi-cloud")
CANDIDATES = (1, 2, 3, 4, 6, 8, 12)
BASE_POLICIES = ("static:2", "static:4", "static:6", "hf", "specdec")
GAMMA_MAX = 16


def _loguniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def sample_config(rng: np.random.Generator, family: str, max_requests: int = 200) -> dict[str, Any]:
    """A topology document (dict) of `family` with sampled network, drafts, acceptance, load, policy and seed."""
    data = yaml.safe_load((TOPOLOGY_DIR / f"{family}.yaml").read_text())
    data.pop("description", None)
    delay_scale = _loguniform(rng, 0.1, 4.0)
    bw_scale = _loguniform(rng, 0.05, 1.0)
    for link in data.get("links", []):
        link["delay_ms"] = round(link.get("delay_ms", 0.0) * delay_scale, 3)
    keep_profiles = family == "hetero-edge" and rng.random() < 0.5
    profiles = {}
    slots = 0 if rng.random() < 0.7 else int(rng.integers(1, 3))
    for gi, group in enumerate(data.get("edges", [])):
        link = group["link"]
        link["delay_ms"] = round(link.get("delay_ms", 0.0) * delay_scale, 3)
        if link.get("bw_mbps"):
            link["bw_mbps"] = round(max(1.0, link["bw_mbps"] * bw_scale), 3)
        if not keep_profiles:
            base = _loguniform(rng, 3.0, 40.0)
            profiles[f"dr{gi}"] = {"draft_step": {"base_ms": round(base, 3), "per_kctx_ms": round(base / 25.0, 4)}}
            group["profile"] = f"dr{gi}"
        group["draft_slots"] = slots
    if profiles:
        data["profiles"] = profiles
    if rng.random() < 0.5:
        acc = {"kind": "iid", "alpha": round(float(rng.uniform(0.5, 0.95)), 3)}
    else:
        acc = {
            "kind": "position_decay",
            "alpha": round(float(rng.uniform(0.7, 0.97)), 3),
            "alpha_end": round(float(rng.uniform(0.3, 0.75)), 3),
            "decay_tokens": round(_loguniform(rng, 20, 300), 1),
        }
    data["models"] = {"acceptance": acc}
    n_targets = sum(1 for n in data.get("nodes", []) if n.get("role") == "target")
    rate = _loguniform(rng, 0.5, 30.0) * n_targets
    n_req = int(min(max_requests, max(30, rate * 20.0)))
    data["workload"] = {
        "trace": "synthetic",
        "duration_s": None,
        "mapping": "round_robin",
        "max_output_tokens": 256,
        "synthetic": {"n_requests": n_req, "rate_rps": round(rate, 3)},
    }
    pol = dict(data.get("policy") or {})
    pol["window"] = str(rng.choice(BASE_POLICIES))
    pol["gamma_max"] = GAMMA_MAX
    data["policy"] = pol
    data["seed"] = int(rng.integers(0, 2**31))
    return data


def scenario_of(data: dict[str, Any], window: str | None = None) -> Scenario:
    d = copy.deepcopy(data)
    if window is not None:
        d["policy"]["window"] = window
    return resolve(TopologySpec.model_validate(d), source=f"<awc:{d.get('name', '?')}>")


def draft_classes(scenario: Scenario) -> dict[str, list[int]]:
    """Drafts grouped by edge group (name without its index): {group: [draft indices]}."""
    out: dict[str, list[int]] = {}
    for j, name in enumerate(scenario.drafts):
        out.setdefault(name.rstrip("0123456789"), []).append(j)
    return out


def round_starts(rounds: pd.DataFrame, requests: pd.DataFrame) -> pd.DataFrame:
    """Rounds sorted by (request, round) with `start_s`: when the drafter asked the policy for the window."""
    r = rounds.sort_values(["request_id", "round"]).reset_index(drop=True)
    prev = r.groupby("request_id")["recv_s"].shift(1)
    first = r["request_id"].map(requests.set_index("request_id")["first_token_s"])
    r["start_s"] = prev.fillna(first)
    return r


def replay_features(req_rounds: pd.DataFrame, prompt_tokens: int, gamma_max: int) -> list[float]:
    """The feature vector a request's controller holds after observing these rounds (in order)."""
    st = FeatureState(int(prompt_tokens), gamma_max)
    for row in req_rounds.itertuples(index=False):
        st.update(
            RoundFeedback.of_round(
                int(row.gamma),
                int(row.accepted),
                row.draft_start_s,
                row.send_s,
                row.batch_start_s,
                row.batch_end_s,
                row.recv_s,
                int(row.queue_depth),
            )
        )
    return st.vector()


def cohort_scores(requests: pd.DataFrame, cohort: np.ndarray, horizon_s: float) -> tuple[float, float, float]:
    """(goodput_R in req/s, rate_R in tokens/s, mean TPOT ms) of the cohort's requests."""
    r = requests[requests["request_id"].isin(cohort)]
    lat = latencies(r)
    ok = r["status"] == "ok"
    good = int(
        (ok & (lat["ttft_ms"] <= DEFAULT_SLO_TTFT_MS) & (lat["tpot_ms"].fillna(0.0) <= DEFAULT_SLO_TPOT_MS)).sum()
    )
    e2e = float(lat["e2e_ms"].where(ok).sum()) / 1e3
    rate = float(r.loc[ok, "output_tokens"].sum()) / e2e if e2e > 0 else 0.0
    tpot = float(lat["tpot_ms"].mean()) if lat["tpot_ms"].notna().any() else float("nan")
    return good / horizon_s, rate, tpot


def best_index(scores: list[tuple[float, float, float]], horizon_s: float, cohort_size: int) -> int:
    """The label: among candidates whose goodput is within max(1 request, 5 % of the cohort) of the best
    (differences of one request are noise of a finite cohort), the one with the highest rate_R."""
    goods = [s[0] * horizon_s for s in scores]
    tol = max(1.0, 0.05 * cohort_size) - 1e-9
    top = max(goods)
    ok = [i for i, g in enumerate(goods) if g >= top - tol]
    return max(ok, key=lambda i: scores[i][1])


def label_config(
    data: dict[str, Any],
    seed: int,
    n_branches: int = 2,
    per_branch: int = 4,
    candidates: tuple[int, ...] = CANDIDATES,
    config_id: str = "",
) -> list[dict[str, Any]]:
    """Samples (feature rows with label and per-candidate scores) of one configuration; see module doc."""
    rng = np.random.default_rng(seed)
    base = data["policy"]["window"]
    scenario = scenario_of(data)
    wl = build_workload(scenario)
    n_drafts = len(scenario.drafts)
    if not np.array_equal(wl.edge_index, np.arange(len(wl)) % n_drafts):
        raise ValueError("label_config needs round_robin edge mapping")
    prefix = simulate(scenario, wl)
    reqs = prefix.requests
    starts = round_starts(prefix.rounds, reqs)
    start_sorted = np.sort(starts["start_s"].to_numpy())
    arrivals = reqs["arrival_s"].to_numpy()
    span = float(arrivals.max()) if len(arrivals) else 0.0
    horizon = max(0.3 * span, 1.0)
    classes = draft_classes(scenario)
    prompt_of = reqs.set_index("request_id")["prompt_tokens"]
    edge_of_req = reqs["request_id"].to_numpy() % n_drafts
    rows: list[dict[str, Any]] = []
    b = -1
    for attempt in range(3 * n_branches):
        if b + 1 >= n_branches:
            break
        t0 = float(rng.uniform(0.3, 0.55) * span)
        cname = str(rng.choice(sorted(classes)))
        members = classes[cname]
        in_class = np.isin(edge_of_req, members)
        active = in_class & (reqs["first_token_s"].to_numpy() <= t0) & (reqs["finish_s"].to_numpy() > t0)
        arriving = in_class & (arrivals >= t0) & (arrivals <= t0 + horizon)
        cohort = reqs["request_id"].to_numpy()[
            active | (in_class & (arrivals <= t0) & (reqs["finish_s"].to_numpy() > t0)) | arriving
        ]
        active_ids = reqs["request_id"].to_numpy()[active]
        if len(active_ids) == 0 or len(cohort) == 0:
            continue
        b += 1
        K = int(np.searchsorted(start_sorted, t0, side="left"))
        residues = members if len(members) < n_drafts else [0]
        modulus = n_drafts if len(members) < n_drafts else 1
        scores = []
        for g in candidates:
            res = simulate(scenario_of(data, rollout_form(K, g, modulus, residues, base)), wl)
            scores.append(cohort_scores(res.requests, cohort, horizon))
        best = best_index(scores, horizon, len(cohort))
        chosen = rng.choice(active_ids, size=min(per_branch, len(active_ids)), replace=False)
        for rid in sorted(int(x) for x in chosen):
            rr = starts[(starts["request_id"] == rid) & (starts["start_s"] < t0)]
            feats = replay_features(rr, int(prompt_of[rid]), GAMMA_MAX)
            row: dict[str, Any] = {
                "config": config_id,
                "family": data["name"],
                "branch": b,
                "t0": t0,
                "K": K,
                "cls": cname,
                "request_id": rid,
                "base": base,
                "label": candidates[best],
                "label_idx": best,
                "cohort": int(len(cohort)),
                "horizon_s": horizon,
            }
            row.update({f"f_{n}": v for n, v in zip(FEATURE_NAMES, feats, strict=True)})
            for g, s in zip(candidates, scores, strict=True):
                row[f"good_{g}"], row[f"rate_{g}"], row[f"tpot_{g}"] = s
            rows.append(row)
    return rows


def config_task(
    family: str,
    seed: int,
    n_branches: int = 2,
    per_branch: int = 4,
    max_requests: int = 200,
    candidates: tuple[int, ...] = CANDIDATES,
) -> list[dict[str, Any]]:
    """One unit of data generation (what a Ray task or the serial loop runs): sample, then label."""
    rng = np.random.default_rng([seed, FAMILIES.index(family) if family in FAMILIES else 99])
    data = sample_config(rng, family, max_requests)
    return label_config(data, seed, n_branches, per_branch, candidates, config_id=f"{family}/{seed}")


def tasks(n_configs: int, seed: int, families: tuple[str, ...] = FAMILIES) -> list[tuple[str, int]]:
    """(family, seed) of each configuration: families in turn, seeds derived from the master seed."""
    seeds = np.random.default_rng(seed).integers(0, 2**31, size=n_configs)
    return [(families[i % len(families)], int(s)) for i, s in enumerate(seeds)]


def to_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(rows)
