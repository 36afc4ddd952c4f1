"""Does a calibrated compute profile still describe this machine? (real models, `testbed run`, issue 17)

A profile fitted on one machine (or on this one at a quieter hour) predicts compute times the nodes do not have:
the simulated side of the comparison is then off by that much, whatever the network. Before a run with real
models this times a few draft steps and verify batches of the run's own model pair, with the torch threads a
node of this run gets, at a context the run has (reps: median), and compares them with the profile's prediction.

    --profile-check warn         (default) a warning when a ratio measured / predicted is outside 1 ± tolerance
    --profile-check recalibrate  the same, then a quick calibration (`testbed calibrate --quick --record 0`) into
                                 DIR/profile-recalibrated.yaml, used by the simulation for the checked profiles
    --profile-check off

The record goes to meta.json ("profile_check"). About 10-20 s with the shipped pair on 2 cores.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

TOLERANCE = 0.10  # the real-model fidelity goal: within 10 %
CTX = 128
GAMMA = 4


def _threads(scenario) -> int:
    """What a node of this run gets (nodes/backends/hf.py: DSD_TORCH_THREADS, else the orchestrator's share)."""
    env = os.environ.get("DSD_TORCH_THREADS")
    if env:
        return int(env)
    return max(1, (os.cpu_count() or 1) // max(1, len(scenario.drafts) + len(scenario.targets)))


def check_profiles(scenario, reps: int = 5, tolerance: float = TOLERANCE) -> dict[str, Any] | None:
    """Measured vs predicted ms of draft steps and verify batches (B = 1, 2) of the first draft / target pair."""
    if scenario.spec.models.backend != "hf" or not scenario.drafts:
        return None
    import torch

    from nodes import models as M
    from nodes.backends.hf_bench import Bench

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
        draft = b.draft_steps([CTX], GAMMA)
        verify = b.verify([1, 2], [GAMMA], [CTX])
    finally:
        torch.set_num_threads(prev)
    cd, ct = scenario.compute[d], scenario.compute[t]
    rows = [
        {
            "what": f"draft step, context {CTX}",
            "node": d,
            "profile": scenario.node(d).profile,
            "measured_ms": draft[0][3],
            "predicted_ms": cd.draft_step(1, 1, CTX) * 1e3,
        }
    ]
    for B, tokens, ctx, ms in verify:
        rows.append(
            {
                "what": f"verify batch {B}, gamma {GAMMA}, context {CTX}",
                "node": t,
                "profile": scenario.node(t).profile,
                "measured_ms": ms,
                "predicted_ms": ct.verify(B, tokens, ctx) * 1e3,
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
        "reps": reps,
        "tolerance": tolerance,
        "rows": rows,
        "warnings": warnings,
        "matches": not warnings,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def recalibrate(scenario, out: Path, threads: int):
    """A quick calibration of the run's pair into out/profile-recalibrated.yaml; the scenario with the checked
    profiles (first draft's and its first target's) replaced by it, for the simulation."""
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
        "--quick",
        "--record",
        "0",
        "--threads",
        str(threads),
        "--max-ctx",
        "256",
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
