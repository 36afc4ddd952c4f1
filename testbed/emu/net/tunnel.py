"""Two emulated machines on one: the nodes of one topology placed on two "hosts" that share nothing but a
VXLAN tunnel, as two machines of a multi-host emulation would (docs/MULTIHOST.md).

After the Mininet network is built, every link that crosses the placement (one end on the first host, the other
on the second) is cut at its first-host switch: that switch port moves to a new bridge, the second host's switch
for this link, and the two bridges are joined only by a VXLAN tunnel (one VNI per crossing link) whose endpoints
live in two namespaces of this run, `dsd<tag>ma` and `dsd<tag>mb` ("the machines' underlay stacks"), connected by
one veth pair with private addresses 10.78.0.1/30 and 10.78.0.2/30 (never an external address, no route off
them). The underlay MTU is 1550 so that the tunnel carries 1500-byte frames (VXLAN over IPv4 adds 50 bytes).

Shaping is untouched: rate limits stay on the (re-mastered, never moved) switch ports and the delay lines in the
receiving hosts, so a crossing path is shaped as on one host plus what the tunnel itself costs (measured by the
as-built verification in links.json). Only VXLAN is used: this kernel has no GRE / gretap / Geneve.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from typing import Any

from testbed.errors import InputError
from testbed.spec import Scenario

from testbed.emu.net.runstate import PREFIX

UNDERLAY = ("10.78.0.1", "10.78.0.2")
UNDERLAY_MTU = 1550
VXLAN_OVERHEAD = 50  # outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8
VXLAN_PORT = 4789
VNI_BASE = 100


def crossing_links(scenario: Scenario, second: frozenset[str]) -> list[tuple[int, str]]:
    """(link index, the first-host switch where it is cut) of every link with ends on both hosts. InputError
    when a name is not a node, or when a crossing link has no switch on the first host's side."""
    names = {n.name: n.role for n in scenario.nodes}
    unknown = sorted(second - set(names))
    if unknown:
        raise InputError("--second-host", f"not nodes of {scenario.spec.name}: {', '.join(unknown)}")
    if not second or set(names) <= second:
        raise InputError("--second-host", "place some nodes, but not all, on the second host")
    out = []
    for i, link in enumerate(scenario.links):
        if (link.a in second) == (link.b in second):
            continue
        a_end = link.b if link.a in second else link.a
        if names[a_end] != "switch":
            raise InputError(
                "--second-host",
                f"link {link.a}-{link.b} crosses the hosts but has no switch on the "
                f"first host's side ({a_end} is a {names[a_end]}): place switches so that it does",
            )
        out.append((i, a_end))
    if not out:
        raise InputError("--second-host", "no link crosses the two hosts")
    return out


@dataclass
class TwoHosts:
    """The split of a built MininetNetwork (`net`) across two emulated hosts; `teardown()` undoes it."""

    second: frozenset[str]
    tag: str
    tunnels: list[dict[str, Any]] = field(default_factory=list)

    @property
    def namespaces(self) -> tuple[str, str]:
        return f"{PREFIX}{self.tag}ma", f"{PREFIX}{self.tag}mb"

    def build(self, net) -> None:
        sc, plan = net.scenario, net.plan
        crossing = crossing_links(sc, self.second)
        ns_a, ns_b = self.namespaces
        t = f"{PREFIX}{self.tag}t"
        cmds = [
            f"netns add {ns_a}",
            f"netns add {ns_b}",
            f"link add {t}ua mtu {UNDERLAY_MTU} type veth peer name {t}ub mtu {UNDERLAY_MTU}",
            f"link set {t}ua netns {ns_a} name u0",
            f"link set {t}ub netns {ns_b} name u0",
        ]
        _ip(cmds)
        for ns, me in ((ns_a, UNDERLAY[0]), (ns_b, UNDERLAY[1])):
            _ip([f"addr add {me}/30 dev u0", "link set u0 up", "link set lo up"], ns)
        for k, (link, sw) in enumerate(crossing):
            port = plan.intf(link, sw, sc)
            bridge_a, bridge_b = plan.switches[sw], f"{t}{k:02d}"
            vni = VNI_BASE + k
            _ip(
                [
                    f"link add {bridge_b} type bridge",
                    f"link set {bridge_b} up",
                    f"link set {port} nomaster",
                    f"link set {port} master {bridge_b}",
                    f"link add {t}{k:02d}a type veth peer name {t}{k:02d}x",
                    f"link set {t}{k:02d}a master {bridge_a} up",
                    f"link set {t}{k:02d}x netns {ns_a} name s{k}",
                    f"link add {t}{k:02d}b type veth peer name {t}{k:02d}y",
                    f"link set {t}{k:02d}b master {bridge_b} up",
                    f"link set {t}{k:02d}y netns {ns_b} name s{k}",
                ]
            )
            for ns, local, remote in ((ns_a, *UNDERLAY), (ns_b, UNDERLAY[1], UNDERLAY[0])):
                _ip(
                    [
                        f"link add br{k} type bridge",
                        f"link set br{k} up",
                        f"link add vx{k} type vxlan id {vni} local {local} remote {remote} dstport {VXLAN_PORT} dev u0",
                        f"link set vx{k} master br{k} up",
                        f"link set s{k} master br{k} up",
                    ],
                    ns,
                )
            self.tunnels.append(
                {
                    "link": f"{sc.links[link].a}-{sc.links[link].b}",
                    "cut_at": sw,
                    "port": port,
                    "first_host_bridge": bridge_a,
                    "second_host_bridge": bridge_b,
                    "vni": vni,
                }
            )

    def describe(self) -> dict[str, Any]:
        return {
            "second_host": sorted(self.second),
            "encapsulation": "vxlan",
            "underlay": list(UNDERLAY),
            "underlay_mtu": UNDERLAY_MTU,
            "inner_mtu": UNDERLAY_MTU - VXLAN_OVERHEAD,
            "overhead_bytes": VXLAN_OVERHEAD,
            "namespaces": list(self.namespaces),
            "tunnels": self.tunnels,
        }

    def teardown(self) -> None:
        """Deleting the two namespaces removes the tunnels, the underlay and the veths into them; the run's
        root-namespace bridges (prefix dsd<tag>) go with cleanup_tag."""
        for ns in self.namespaces:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def _ip(cmds: list[str], ns: str | None = None) -> None:
    r = subprocess.run(
        ["ip", *(["-n", ns] if ns else []), "-batch", "-"],
        input="\n".join(cmds) + "\n",
        capture_output=True,
        text=True,
        check=False,
    )
    if r.returncode != 0:
        raise RuntimeError(f"two-host split: {(r.stderr or r.stdout).strip()[:400]}")
