"""The as-built spec: the configured spec with link delays corrected by what the emulated network measured.

`python -m testbed run` simulates, by default, the network that was actually built: each draft -> target
path's measured RTT p50 (emu/links.json) minus its configured RTT is the residual of that path (network
stack, delay line, bridges). Half of it per direction is added to the draft's access link (the first hop of
its paths), averaged over the targets the draft reaches; links shared by several drafts keep their
configured delay. Rates, jitter and loss stay as configured (verification checks them within tolerance).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from testbed.spec.scenario import Scenario
from testbed.spec.schema import TopologySpec


def as_built_spec(scenario: Scenario, links_report: dict[str, Any]) -> tuple[TopologySpec, list[dict[str, Any]]]:
    """(spec with measured delays, list of the adjustments made: link, configured, as-built, residual)."""
    residuals: dict[str, list[float]] = defaultdict(list)
    for p in links_report.get("paths", []):
        meas = p.get("measured") or {}
        conf = p.get("configured") or {}
        if meas.get("rtt_p50_ms") is None or conf.get("rtt_ms") is None:
            continue
        residuals[p["src"]].append((meas["rtt_p50_ms"] - conf["rtt_ms"]) / 2.0)
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
        old = links[li]
        new_delay = max(0.0, old.delay_ms + res)
        links[li] = old.model_copy(update={"delay_ms": round(new_delay, 4)})
        changes.append({"link": li, "a": old.a, "b": old.b, "configured_delay_ms": old.delay_ms,
                        "as_built_delay_ms": links[li].delay_ms, "residual_ms": res})
    return scenario.spec.model_copy(update={"links": links}), changes


def loopback_spec(scenario: Scenario) -> TopologySpec:
    """The network `--net none` actually has: every link unshaped (no delay, rate, jitter or loss)."""
    links = [l.model_copy(update={"delay_ms": 0.0, "bw_mbps": None, "jitter_ms": 0.0, "loss_pct": 0.0})
             for l in scenario.spec.links]
    return scenario.spec.model_copy(update={"links": links})
