"""The as-built spec: the configured spec with link delays corrected by what the emulated network measured.

`python -m testbed run` simulates, by default, the network that was actually built: each draft -> target
path's measured RTT p50 (emu/links.json) minus its configured RTT is the residual of that path (network
stack, delay line, bridges). Half of it per direction is added to the draft's access link (the first hop of
its paths), averaged over the targets the draft reaches; links shared by several drafts keep their
configured delay. Rates, jitter and loss stay as configured (verification checks them within tolerance).

The rule against a moment of contention (issue 17): the paths are probed before the run (verification) and
after it (links.json "after"). A path's residual is the part both probes agree on: the one of smaller
magnitude when both have the same sign, none when they disagree in sign (a residual that the network really
has shows in both; host contention during one probe shows in that one only, and is never baked into the
simulated links). Without an after-probe (an older run, or verification off) the before-probe's residual is
used alone, as before. And a residual within the verification tolerance (`rtt_tolerance_ms`: max(0.6 ms, 3 % of
the RTT, twice the standard error of the measured median)) is taken as none: the network is as configured within
what a probe can tell, and baking a fraction of a millisecond of probe noise into the links only perturbs the
simulation (JSQ routing races turn it into different request placements) without information. Measured on random
scenarios (make validate-random), the agreement rule alone left corrections of 0.01-0.25 ms that moved mean TTFT by
up to 9 points either way in routing-sensitive scenarios; with the tolerance the as-built prediction is the
configured one unless the network really is off. The expected RTT is the simulator's for a probe after idle
(testbed.wire.idle_serialisation_s: a shaped hop's token bucket passes it whole); expecting its serialisation made
every slow path look 0.7-1 ms faster than configured and shortened its access link.
Why not "what the run itself measured": the run's message times include queueing at shared links and the receivers'
wake-ups, which the simulator models or which are not a property of the links.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from testbed.spec.scenario import Scenario
from testbed.spec.schema import TopologySpec


def median_se_ms(std_ms: float | None, samples: int | None) -> float:
    """Standard error of the median of n probes of an RTT with that std (1.2533 x std / sqrt(n)); 0 when unknown."""
    return 1.2533 * std_ms / math.sqrt(samples) if std_ms and samples else 0.0


def rtt_tolerance_ms(expected_ms: float, se_ms: float = 0.0) -> float:
    """What path verification accepts as "as configured": max(0.3 ms, 3 %) per direction, a round trip being two,
    and at least twice the standard error of what is compared (se_ms: median_se_ms of the probes): with a few ms of
    jitter a median of 100 probes is only known to ~1 ms, and a residual it cannot tell from zero is not the
    network's (random scenario r001 of generator seed 1: 5 ms of jitter, residuals of 0.6-0.8 ms either side of zero
    from one probe to the next, standard error 0.8-1.0 ms)."""
    return max(0.6, 0.03 * expected_ms, 2.0 * se_ms)


def agreed(before: float, after: float | None) -> float:
    """The residual both probes agree on: the smaller in magnitude when of the same sign, else 0."""
    if after is None:
        return before
    if before * after <= 0:
        return 0.0
    return before if abs(before) <= abs(after) else after


def path_residuals(links_report: dict[str, Any]) -> list[tuple[str, str, float]]:
    """(draft, target, RTT residual in ms) per measured path, by the rule in the module docstring."""
    after = {(p["src"], p["dst"]): p.get("rtt_error_ms") for p in (links_report.get("after") or {}).get("paths", [])}
    out = []
    for p in links_report.get("paths", []):
        meas = p.get("measured") or {}
        conf = p.get("configured") or {}
        if meas.get("rtt_p50_ms") is None or conf.get("rtt_ms") is None:
            continue
        before = meas["rtt_p50_ms"] - conf["rtt_ms"]
        key = (p["src"], p["dst"])
        r = agreed(before, after.get(key)) if key in after else before
        tol = rtt_tolerance_ms(conf["rtt_ms"], median_se_ms(meas.get("rtt_std_ms"), meas.get("samples")))
        out.append((p["src"], p["dst"], r if abs(r) > tol else 0.0))
    return out


def as_built_spec(scenario: Scenario, links_report: dict[str, Any]) -> tuple[TopologySpec, list[dict[str, Any]]]:
    """(spec with measured delays, list of the adjustments made: link, configured, as-built, residual)."""
    residuals: dict[str, list[float]] = defaultdict(list)
    for src, _dst, r in path_residuals(links_report):
        residuals[src].append(r / 2.0)
    access_users: dict[int, list[str]] = defaultdict(list)
    for d in scenario.drafts:
        firsts = {scenario.paths[(d, t)][0].link for t in scenario.reachable[d]}
        for li in firsts:
            access_users[li].append(d)
    links = list(scenario.spec.links)
    changes = []
    for li, drafts in sorted(access_users.items()):
        if len(drafts) != 1 or not residuals.get(drafts[0]):
            continue
        r = residuals[drafts[0]]
        res = sum(r) / len(r)
        if res == 0:
            continue
        old = links[li]
        new_delay = max(0.0, old.delay_ms + res)
        links[li] = old.model_copy(update={"delay_ms": round(new_delay, 4)})
        changes.append(
            {
                "link": li,
                "a": old.a,
                "b": old.b,
                "configured_delay_ms": old.delay_ms,
                "as_built_delay_ms": links[li].delay_ms,
                "residual_ms": res,
            }
        )
    return scenario.spec.model_copy(update={"links": links}), changes


def loopback_spec(scenario: Scenario) -> TopologySpec:
    """The network `--net none` actually has: every link unshaped (no delay, rate, jitter or loss)."""
    links = [
        l.model_copy(update={"delay_ms": 0.0, "bw_mbps": None, "jitter_ms": 0.0, "loss_pct": 0.0})
        for l in scenario.spec.links
    ]
    return scenario.spec.model_copy(update={"links": links})
