"""Does a calibrated compute profile still describe this machine? (real models, `testbed run`, issue 17)

A profile fitted on one machine (or on this one at a quieter hour) predicts compute times the nodes do not have:
the simulated side of the comparison is then off by that much, whatever the network. Before a run with real
models this times a few draft steps and verify batches of the run's own model pair, with the torch threads a
node of this run gets, at a context the run has (reps: median), and compares them with the profile's prediction.

    --profile-check warn         (default) a warning when a ratio measured / predicted is outside 1 ± tolerance
    --profile-check recalibrate  the same, then a calibration over the run's own operating points (`grid_for`:
                                 its contexts, prompt lengths, batch sizes and windows; median of 3) into
                                 DIR/profile-recalibrated.yaml, used by the simulation for the checked profiles
    --profile-check off

The record goes to meta.json ("profile_check"). About 10-20 s with the shipped pair on 2 cores; recalibrating
about a minute more. Why the run's own grid and not the quick generic one (`calibrate --quick`, one repetition at
contexts 128 / 512, prompts 64 / 256): on topologies/hf-pair.yaml (prompts ~40, contexts 40-110) its linear fit
extrapolated to the run's short prompts charged target prefills 407 ms where the run measured 343 ms (+19 %) and
first drafts +11 %, and one repetition per point left a draft step 20 % off the check's median (measured
2026-11-29, notes/issue-17-s2.md): the simulator can only be as right as the profile is where the run operates.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

TOLERANCE = 0.10  # the real-model fidelity goal: within 10 %
CTX = 128  # when the workload has no requests
GAMMA = 4


def _threads(scenario) -> int:
    """What a node of this run gets (nodes/backends/hf.py: DSD_TORCH_THREADS, else the orchestrator's share)."""
    env = os.environ.get("DSD_TORCH_THREADS")
    if env:
        return int(env)
    return max(1, (os.cpu_count() or 1) // max(1, len(scenario.drafts) + len(scenario.targets)))


def _quantiles(x, qs=(0.1, 0.5, 0.9)) -> list[int]:
    import numpy as np

    return sorted({max(2, int(round(v))) for v in np.quantile(np.asarray(x, dtype=float), qs)}) if len(x) else [CTX]


def grid_for(scenario) -> dict[str, Any]:
    """The calibration grid of this run's operating points (testbed calibrate --grid-json): prompt lengths and
    contexts at the 10 / 50 / 90 % quantiles of the workload's requests (a round's context runs from the prompt +
    1 to the prompt + output), the window(s) its policy uses, and verify batches up to what its drafts can send
    at once (at least 1 and 2, so the per-request term is fitted); median of 3 repetitions. Windows include 0 (one
    token: without it the fit cannot tell the step from one row to several, `multi_token_ms`, and charged an
    autoregressive run's one-token steps 171 ms where 103 ms were measured); an autoregressive run's are 0 and 1."""
    import numpy as np

    from testbed.policies.window import parse_window_policy
    from testbed.workload import build_workload

    wl = build_workload(scenario)
    prompt = np.asarray(wl.trace.prompt_tokens, dtype=float)
    out = np.asarray(wl.output_tokens, dtype=float)
    spec = scenario.spec
    gmax = spec.policy.gamma_max
    fixed = getattr(parse_window_policy(spec.policy.window), "gamma", None)
    if spec.run.mode == "autoregressive":  # every verify is one token (gamma 0); 1 fits the step to several rows
        gammas = [0, 1]
    else:  # gamma 0 too: a round clamped at the last token, and the one-token baseline of multi_token_ms
        gammas = sorted({0, 1, min(fixed, gmax)}) if fixed else sorted({0, 1, max(1, gmax // 2), gmax})
    t = scenario.reachable[scenario.drafts[0]][0]
    slots = [scenario.node(d).draft_slots for d in scenario.drafts if t in scenario.reachable.get(d, ())]
    most = 4 if any(s == 0 for s in slots) else sum(slots)
    return {
        "draft_ctx": _quantiles(np.concatenate([prompt + 1, prompt + out / 2, prompt + out])),
        "draft_prefill_L": _quantiles(prompt + 1),
        "prefill_B": [1, 2],
        "prefill_L": _quantiles(prompt),
        "verify_B": sorted({1, 2, max(1, min(4, most))}),
        "verify_gamma": gammas,
        "verify_ctx": _quantiles(np.concatenate([prompt + 1, prompt + out])),
        "reps": 3,
    }


def check_profiles(scenario, reps: int = 5, tolerance: float = TOLERANCE) -> dict[str, Any] | None:
    """Measured vs predicted ms of draft steps and verify batches (B = 1, 2, window 4; 0 in an autoregressive
    run) and a one-token verify (the step multi_token_ms is measured from) of the first draft / target pair, at the
    run's median context."""
    if scenario.spec.models.backend != "hf" or not scenario.drafts:
        return None
    ctxs = grid_for(scenario)["verify_ctx"]
    ctx = ctxs[len(ctxs) // 2]
    from nodes import models as M  # before torch: it loads MKL's vendor library (nodes/blas.py)
    from nodes.backends.hf_bench import Bench

    import torch

    d = scenario.drafts[0]
    t = scenario.reachable[d][0]
    threads = _threads(scenario)
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    try:
        tm, ttok, _ = M.load_model(scenario.node(t).model, threads)
        dm, _, _ = M.load_model(scenario.node(d).model, threads)
        b = Bench(tm, dm, ttok, reps=reps)
        draft = b.draft_steps([ctx], GAMMA)
        gamma = 0 if scenario.spec.run.mode == "autoregressive" else GAMMA
        verify = b.verify([1, 2], [gamma], [ctx]) + (b.verify([1], [0], [ctx]) if gamma else [])
    finally:
        torch.set_num_threads(prev)
    cd, ct = scenario.compute[d], scenario.compute[t]
    rows = [
        {
            "what": f"draft step, context {ctx}",
            "node": d,
            "profile": scenario.node(d).profile,
            "measured_ms": draft[0][3],
            "predicted_ms": cd.draft_step(1, 1, ctx) * 1e3,
        }
    ]
    for B, tokens, summed_ctx, ms in verify:
        rows.append(
            {
                "what": f"verify batch {B}, gamma {tokens // B - 1}, context {ctx}",
                "node": t,
                "profile": scenario.node(t).profile,
                "measured_ms": ms,
                "predicted_ms": ct.verify(B, tokens, summed_ctx) * 1e3,
            }
        )
    warnings = []
    for r in rows:
        r["ratio"] = r["measured_ms"] / r["predicted_ms"] if r["predicted_ms"] > 0 else None
        if r["ratio"] is None or abs(r["ratio"] - 1) > tolerance:
            ratio = "–" if r["ratio"] is None else f"{r['ratio']:.2f}"
            warnings.append(
                f"{r['what']} on {r['node']}: {r['measured_ms']:.1f} ms measured vs {r['predicted_ms']:.1f} ms "
                f"predicted by profile {r['profile']} ({ratio}x)"
            )
    return {
        "threads": threads,
        **M.kernel_states(),
        "context": ctx,
        "reps": reps,
        "tolerance": tolerance,
        "rows": rows,
        "warnings": warnings,
        "matches": not warnings,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def recalibrate(scenario, out: Path, threads: int):
    """A calibration of the run's pair over the run's own grid (grid_for) into out/profile-recalibrated.yaml; the
    scenario with the checked profiles (first draft's and its first target's) replaced by it, for the simulation."""
    from testbed.compute import load_profile_file
    from testbed.spec import resolve

    d = scenario.drafts[0]
    t = scenario.reachable[d][0]
    path = out / "profile-recalibrated.yaml"
    cmd = [
        sys.executable,
        "-m",
        "testbed",
        "calibrate",
        "--grid-json",
        json.dumps(grid_for(scenario)),
        "--record",
        "0",
        "--threads",
        str(threads),
        "--draft",
        str(scenario.node(d).model),
        "--target",
        str(scenario.node(t).model),
        "--out",
        str(path),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"recalibration failed (exit {r.returncode}): {r.stderr.strip()[-500:]}")
    new = load_profile_file(path)
    names = {scenario.node(d).profile, scenario.node(t).profile}
    spec = scenario.spec
    profiles = {**(spec.profiles or {}), **{n: new for n in names}}
    return resolve(spec.model_copy(update={"profiles": profiles}), f"{scenario.source} (recalibrated profile)"), path
