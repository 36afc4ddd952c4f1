"""Two emulated hosts that share nothing but a VXLAN tunnel (testbed/emu/net/tunnel.py, docs/MULTIHOST.md):
placement errors before anything is built; with root, star-4edge with cloud0 on the second host: the crossing
link's switch port sits on the second host's bridge, packets between the hosts go through the tunnel (its
counters move), the path RTT is still the configured one, and teardown leaves nothing of the run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.errors import InputError
from testbed.spec import load_scenario

from conftest import one_edge_spec, scenario, write_native_trace

ROOT = Path(__file__).resolve().parents[1]
STAR = ROOT / "topologies" / "star-4edge.yaml"


def test_placement_errors(tmp_path):
    from testbed.emu.net.tunnel import crossing_links

    sc = load_scenario(STAR, ["edges.0.count=2"])
    assert crossing_links(sc, frozenset({"cloud0"})) == [(2, "sw0")]
    assert [sw for _, sw in crossing_links(sc, frozenset({"cloud0", "edge1"}))] == ["sw0", "sw0"]
    for bad, what in (
        ({"nope"}, "not nodes"),
        ({n.name for n in sc.nodes}, "not all"),
        ({"sw0"}, "no switch on the first host's side"),
    ):
        with pytest.raises(InputError, match=what):
            crossing_links(sc, frozenset(bad))
    pair = scenario(one_edge_spec(write_native_trace(tmp_path / "t.jsonl", [(0.0, 10, 5)])))
    with pytest.raises(InputError, match="no switch"):
        crossing_links(pair, frozenset({"cloud0"}))


def _why_not() -> str | None:
    if sys.platform != "linux" or os.geteuid() != 0:
        return "needs root on linux"
    from testbed.emu.net.probe import probe_mininet, shaping_support

    if not probe_mininet()[0]:
        return "mininet not installed"
    if not any(ok for ok, _ in shaping_support().values()):
        return "no shaping backend works here"
    return None


_why = _why_not()


@pytest.mark.root
@pytest.mark.skipif(_why is not None, reason=_why or "")
def test_two_hosts_through_the_tunnel():
    from testbed.emu.cleanup import find_leftovers
    from testbed.emu.net import make_network
    from testbed.emu.net.verify import expected_path, measure_rtts, pct

    sc = load_scenario(STAR, ["edges.0.count=2"])
    net = make_network(sc, "mininet", verify="off", second_host=("cloud0",))
    try:
        net.build()
        ns_b = net.split.namespaces[1]
        tun = net.split.tunnels[0]
        master = subprocess.run(
            ["ip", "-o", "link", "show", tun["port"]], capture_output=True, text=True, check=False
        ).stdout
        assert f"master {tun['second_host_bridge']}" in master  # cloud0's switch port is on the second host
        res = measure_rtts(net, {"edge0": ["cloud0"]}, count=40, interval=0.01)[("edge0", "cloud0")]
        stats = subprocess.run(
            ["ip", "-n", ns_b, "-s", "-j", "link", "show", "vx0"], capture_output=True, text=True, check=False
        )
        rx = json.loads(stats.stdout)[0]["stats64"]["rx"]["packets"]
        assert rx >= 40  # the pings (and their ARP) crossed the tunnel
        exp = expected_path(net, "edge0", "cloud0")["rtt_ms"]
        p50 = pct([x / 1e3 for x in res["rtt_us"]], 0.5)
        assert abs(p50 - exp) <= max(2.0, 0.05 * exp), (p50, exp)
        assert net.links_report()["two_hosts"]["inner_mtu"] == 1500
    finally:
        net.teardown()
    left = find_leftovers(include_live=True)
    assert not [n for n in left["netns"] if n.startswith("dsd" + net.tag)]
    assert not [n for n in left["links"] if n.startswith("dsd" + net.tag)]
