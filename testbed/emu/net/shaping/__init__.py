"""Link shaping backends: how a link's rate, delay, jitter, loss and queue limit are made real.

- `netem`: per interface egress, tbf (rate) + netem (delay, jitter as a normal distribution, loss, limit),
  the way Mininet's TCLink does it; delay applies in each direction of each link. Needs the sch_netem module.
- `userspace`: tbf for rate on each interface's egress (both ends of every shaped link); delay, jitter and
  loss in a user-space delay line (`dsd-delayline`, C, NFQUEUE) on the receiving host's ingress
  (mangle/PREROUTING). The delay line of host H holds packets from source S for the sum of the one-way
  delays along S's path to H, jitter sqrt(sum of variances), loss 1 - prod(1 - p); since per-link delays
  are constant the resulting arrival times equal per-hop delays except for how flows with different
  access delays interleave in a shared queue. Jitter never reorders packets of one source.

A backend checks a scenario before anything is built (`check`: InputError for what it cannot do,
returns warnings for what it can do only approximately), then `apply`s itself to a built network and
`teardown`s (never raises).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

from testbed import wire
from testbed.errors import InputError
from testbed.spec import Scenario
from testbed.spec.schema import LinkSpec

if TYPE_CHECKING:
    from testbed.emu.net.mininet_net import MininetNetwork

BACKENDS = ("netem", "userspace")


class ShapingBackend(ABC):
    name: str = ""

    def check(self, scenario: Scenario) -> list[str]:
        """Raise InputError for what this backend cannot emulate; return warnings for approximations."""
        warnings: list[str] = []
        for i, l in enumerate(scenario.links):
            if l.jitter_ms > 0 and l.jitter_ms * 2 > l.delay_ms:
                raise InputError(
                    scenario.source,
                    f"link {i} ({l.a}-{l.b}): jitter_ms={l.jitter_ms:g} is more than half of "
                    f"delay_ms={l.delay_ms:g}; the per-packet delay would be cut at zero and the jitter "
                    f"would not be the configured standard deviation ({self.name} backend)",
                )
        return warnings

    @abstractmethod
    def apply(self, net: "MininetNetwork") -> None: ...

    def set_t0(self, t0_monotonic: float) -> None:
        """The run's start (schedule times and capacity traces count from it)."""

    def prepare_changes(self, net: "MininetNetwork", groups: list[tuple[float, list]], t0: float) -> None:
        """Optional: learn every change of the run (time from T0, changes at that time) ahead of time."""

    def apply_changes(self, net: "MininetNetwork", changes: list) -> float:
        """Make scheduled link changes (testbed.schedule.Change) real now; return CLOCK_MONOTONIC when they took
        effect. Backends that cannot change links live refuse schedules in check()."""
        raise NotImplementedError(f"the {self.name} shaping backend cannot change links during a run")

    def teardown(self) -> None:
        """Stop what apply() started outside the namespaces (qdiscs and rules go with interfaces and namespaces)."""

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}


def get_backend(name: str, **options: Any) -> ShapingBackend:
    if name == "netem":
        from testbed.emu.net.shaping.netem import NetemShaping

        return NetemShaping(**options)
    if name == "userspace":
        from testbed.emu.net.shaping.userspace import UserspaceShaping

        return UserspaceShaping(**options)
    raise InputError("--shaping", f"unknown shaping backend {name!r} (choose from {', '.join(BACKENDS)})")


def _tbf(link: LinkSpec) -> str:
    """tbf's parameters for the link's rate; its burst is testbed.wire.link_burst_bytes, the simulator's credit after
    idle. `limit` only sizes the byte fifo tbf creates by default; the pfifo (or netem) leaf replaces it."""
    assert link.bw_mbps is not None
    burst = wire.link_burst_bytes(link.bw_mbps)
    return f"tbf rate {link.bw_mbps * 1e3:.3f}kbit burst {burst} limit {link.queue_pkts * 1514}"


def _leaf(link: LinkSpec, leaf: str | None = None) -> str:
    """The queue under tbf: `leaf` (netem), or a pfifo of the link's queue_pkts."""
    return "parent 1:1 handle 10: " + (leaf or f"pfifo limit {link.queue_pkts}")


def rate_lines(dev: str, link: LinkSpec, leaf: str | None = None) -> list[str]:
    """`tc -batch` lines for a token-bucket rate limit (tbf) on dev's egress; `leaf` replaces the pfifo leaf.

    Why tbf, not htb (as Mininet's TCLink): on this project's kernel (6.18) an htb class lets a burst that follows
    an idle period through at line rate, far beyond its configured burst: on a 2.7 Mbit/s veth, 17 KB arrived in
    0.3 ms and 80 KB in 117 ms (248 ms at the rate), while tbf with the same 3 KB burst held the rate (80 KB in
    240 ms). A prompt upload after an idle moment is exactly such a burst: uploads were up to ~5x faster than
    the configured rate, and TTFT on slow links below the simulator's."""
    return [f"qdisc add dev {dev} root handle 1: {_tbf(link)}", f"qdisc add dev {dev} {_leaf(link, leaf)}"]


def rate_change_lines(dev: str, link: LinkSpec) -> list[str]:
    """The link's new rate on dev in place: queued packets are kept (tbf's change keeps its child qdisc; the
    pfifo limit is restated since tbf's change passes its own limit on to a fifo child)."""
    return [f"qdisc change dev {dev} root handle 1: {_tbf(link)}", f"qdisc change dev {dev} {_leaf(link)}"]


GSO_OFF_BELOW_MBPS = 100.0


def offload_cmds(dev: str, link: LinkSpec) -> list[str]:
    """Below ~100 Mbit/s a 64 KB TSO/GSO super-packet is a long burst: send MTU-sized packets instead."""
    if link.bw_mbps is not None and link.bw_mbps < GSO_OFF_BELOW_MBPS:
        return [f"ethtool -K {dev} tso off gso off >/dev/null 2>&1 || true"]
    return []


def apply_rate_limits(net, leaf_for=None) -> None:
    """tbf (leaf: pfifo, or `leaf_for(link)`) on the egress of both ends of every shaped link, as tc batches."""
    tc: dict[str, list[str]] = {}
    sh: dict[str, list[str]] = {}
    for i, l in enumerate(net.scenario.links):
        for node in (l.a, l.b):
            dev = net.plan.intf(i, node, net.scenario)
            key = net.ns_key(node)
            lines = leaf_for(dev, l) if leaf_for else (rate_lines(dev, l) if l.bw_mbps is not None else [])
            if lines:
                tc.setdefault(key, []).extend(lines)
                sh.setdefault(key, []).extend(offload_cmds(dev, l))
    for key, cmds in sh.items():
        if cmds:
            net.run_in(key, ["sh", "-c", "\n".join(cmds)])
    net.tc_batches(tc)


def path_params(scenario: Scenario, src: str, dst: str, states: dict | None = None) -> tuple[float, float, float]:
    """(one-way delay ms, jitter std ms, loss probability) of the path src -> dst; `states`: link index ->
    testbed.schedule.LinkState in force now (links not in it: as configured)."""
    hops = scenario.paths[(src, dst)]
    links = [(states or {}).get(h.link) or scenario.links[h.link] for h in hops]
    delay = sum(l.delay_ms for l in links)
    jitter = math.sqrt(sum(l.jitter_ms**2 for l in links))
    keep = 1.0
    for l in links:
        keep *= 1 - l.loss_pct / 100
    return delay, jitter, 1 - keep
