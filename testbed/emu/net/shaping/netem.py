"""`netem` shaping: tbf rate + netem delay/jitter/loss/limit on the egress of both ends of every link (as TCLink).

Jitter uses netem's `distribution normal` (so jitter_ms is the standard deviation, as in the spec) and a
pfifo child under netem so that jittered packets keep their order (netem's own tfifo would reorder them).
As in TCLink, netem's `limit` (the link's queue_pkts) also counts packets being delayed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from testbed.errors import InputError
from testbed.spec import Scenario
from testbed.spec.schema import LinkSpec

from testbed.emu.net.shaping import ShapingBackend, apply_rate_limits, rate_lines

if TYPE_CHECKING:
    from testbed.emu.net.mininet_net import MininetNetwork


def netem_args(link: LinkSpec) -> str | None:
    if link.delay_ms <= 0 and link.jitter_ms <= 0 and link.loss_pct <= 0:
        return None
    args = f"netem limit {link.queue_pkts} delay {link.delay_ms:.6f}ms"
    if link.jitter_ms > 0:
        args += f" {link.jitter_ms:.6f}ms distribution normal"
    if link.loss_pct > 0:
        args += f" loss {link.loss_pct:.6f}%"
    return args


def netem_lines(dev: str, link: LinkSpec) -> list[str]:
    netem = netem_args(link)
    lines: list[str] = []
    if link.bw_mbps is not None:
        lines += rate_lines(dev, link, leaf=netem)
        parent = "10:"
    elif netem:
        lines.append(f"qdisc add dev {dev} root handle 10: {netem}")
        parent = "10:"
    else:
        return lines
    if netem and link.jitter_ms > 0:
        lines.append(f"qdisc add dev {dev} parent {parent}1 handle 20: pfifo limit {link.queue_pkts}")
    return lines


class NetemShaping(ShapingBackend):
    name = "netem"

    def __init__(self, **_: Any):
        pass

    def check(self, scenario: Scenario) -> list[str]:
        warnings = super().check(scenario)
        sched = scenario.schedule
        if sched.traces or sched.steps or sched.down:
            raise InputError(
                scenario.source,
                "schedule: the netem backend does not change links during a run yet; use --shaping userspace",
            )
        for i, l in enumerate(scenario.links):
            if l.bw_mbps and l.delay_ms > 0:
                bdp_pkts = l.bw_mbps * 1e6 / 8 * l.delay_ms / 1e3 / 1514
                if bdp_pkts > l.queue_pkts:
                    warnings.append(
                        f"link {i} ({l.a}-{l.b}): netem's limit counts delayed packets; rate x delay needs "
                        f"~{bdp_pkts:.0f} packets > queue_pkts={l.queue_pkts}: the link cannot reach its rate"
                    )
        return warnings

    def apply(self, net: "MininetNetwork") -> None:
        apply_rate_limits(net, leaf_for=netem_lines)
