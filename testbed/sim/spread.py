"""The simulator's own spread over the network's randomness: one scenario and workload simulated with K network
seeds (jitter and loss draws differ; acceptance, routing and faults keep the spec's seed), each run's summary kept.

Why: with loss or jitter, an emulation is one draw of the network's randomness and its simulation another. A
request whose prompt upload loses a segment waits a tail-loss probe or a retransmission timeout (hundreds of ms),
which a run of 20 requests cannot average out. How far the simulated metrics move from one network seed to the
next is how far a single emulated run may be from its simulation when the model is right
(analysis/compare.py, "spread"; `testbed run --sim-spread K`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from testbed.sim.run import simulate
from testbed.spec import Scenario
from testbed.workload import Workload


def has_network_randomness(scenario: Scenario) -> bool:
    """Does any link (or a scheduled step of one) have jitter or loss? Without, every network seed is the same."""
    if any(l.jitter_ms > 0 or l.loss_pct > 0 for l in scenario.links):
        return True
    return any(st.jitter_ms > 0 or st.loss_pct > 0 for steps in scenario.schedule.steps.values() for _, st in steps)


def network_seeds(seed: int, k: int) -> list[int]:
    """K network seeds other than the spec's own (which the main simulation used)."""
    return [seed + 1 + j for j in range(k)]


def network_spread(
    scenario: Scenario, workload: Workload, k: int, progress: Callable[[int, int], None] | None = None
) -> dict[str, Any]:
    """Summaries of K simulations differing only in the network's random draws."""
    if not has_network_randomness(scenario):
        return {"skipped": "no link has jitter or loss: every network seed gives the same simulation"}
    seeds = network_seeds(scenario.spec.seed, k)
    summaries = []
    for j, s in enumerate(seeds):
        summaries.append(simulate(scenario, workload, net_seed=s).summary)
        if progress is not None:
            progress(j + 1, k)
    return {"net_seeds": seeds, "summaries": summaries}
