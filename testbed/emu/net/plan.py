"""The as-built plan of an emulated network, computed from the scenario alone (no root, no side effects).

- Every draft/target node is a host (a network namespace) with one node address 10.77.H.L/32 on its first
  interface. Every switch is a Linux bridge in the root namespace; connected switches form one L2 segment.
- Connectivity is explicit: for each (src, dst) path of the scenario, src gets a static host route
  `dst/32 dev <interface of the path's first hop> src <src address>`. No default route, no route off the
  machine; pairs without a path in the spec cannot talk.
- Interface names: hosts `eth<k>` (inside their namespace); switch ports `dsd<tag>s<NN>e<k>` (root namespace).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from testbed.errors import InputError
from testbed.spec import Scenario

from testbed.emu.net.runstate import bridge_name, host_label

SUBNET = "10.77.0.0/16"
MAX_SWITCHES = 100
MAX_HOSTS = 200 * 250


@dataclass
class NetPlan:
    tag: str
    hosts: list[str]  # scenario node names that are hosts, in spec order
    switches: dict[str, str]  # switch node -> bridge name
    labels: dict[str, str]  # host node -> Mininet host name (prefixed)
    addresses: dict[str, str]  # host node -> IPv4 address (no prefix length)
    link_intfs: list[tuple[str, str]]  # per link index: (interface at link.a, interface at link.b)
    routes: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # host -> [(dst address, dev)]

    def intf(self, link: int, node: str, scenario: Scenario) -> str:
        l = scenario.links[link]
        return self.link_intfs[link][0] if node == l.a else self.link_intfs[link][1]


def address_of(index: int) -> str:
    return f"10.77.{index // 250}.{index % 250 + 1}"


def make_plan(scenario: Scenario, tag: str) -> NetPlan:
    roles = {n.name: n.role for n in scenario.nodes}
    hosts = [n.name for n in scenario.nodes if n.role != "switch"]
    switch_nodes = [n.name for n in scenario.nodes if n.role == "switch"]
    if len(switch_nodes) > MAX_SWITCHES:
        raise InputError(
            scenario.source, f"{len(switch_nodes)} switches: the mininet network supports at most {MAX_SWITCHES}"
        )
    if len(hosts) > MAX_HOSTS:
        raise InputError(scenario.source, f"{len(hosts)} hosts: at most {MAX_HOSTS} fit the 10.77.0.0/16 plan")
    _check_switch_forest(scenario, roles)
    switches = {s: bridge_name(tag, i) for i, s in enumerate(switch_nodes)}
    counters: dict[str, int] = {}
    link_intfs: list[tuple[str, str]] = []
    for l in scenario.links:
        names = []
        for end in (l.a, l.b):
            k = counters.get(end, 0)
            counters[end] = k + 1
            names.append(f"{switches[end]}e{k}" if end in switches else f"eth{k}")
        link_intfs.append((names[0], names[1]))
    addresses = {h: address_of(i) for i, h in enumerate(hosts)}
    plan = NetPlan(
        tag=tag,
        hosts=hosts,
        switches=switches,
        labels={h: host_label(tag, h) for h in hosts},
        addresses=addresses,
        link_intfs=link_intfs,
    )
    for (src, dst), hops in scenario.paths.items():
        if not hops:
            continue
        dev = plan.intf(hops[0].link, src, scenario)
        plan.routes.setdefault(src, []).append((addresses[dst], dev))
    return plan


def _check_switch_forest(scenario: Scenario, roles: dict[str, str]) -> None:
    """Bridged switches must not form a loop (no spanning tree here: the spec's paths would not be the ones used)."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for l in scenario.links:
        if roles[l.a] == "switch" and roles[l.b] == "switch":
            ra, rb = find(l.a), find(l.b)
            if ra == rb:
                raise InputError(
                    scenario.source,
                    f"links between switches form a loop (closed by {l.a}-{l.b}): "
                    "the Linux-bridge network needs the switches to form a tree",
                )
            parent[ra] = rb
