"""Emulated networks for the emulator: `make_network(scenario, kind, shaping=...)`.

kind "none": loopback, no shaping (testbed.emu.local.LoopbackNetwork).
kind "mininet": one network namespace per node, Linux-bridge switches, shaped links (netem or userspace,
probed; `shaping` "netem"/"userspace" forces one, None/"auto" probes), verified as built. Needs root.
"""

from __future__ import annotations

from typing import Any

from testbed.emu.base import NetworkBackend
from testbed.errors import InputError
from testbed.spec import Scenario

KINDS = ("none", "mininet")


def make_network(
    scenario: Scenario, kind: str = "mininet", shaping: str | None = None, verify: str = "quick", **options: Any
) -> NetworkBackend:
    """The network a run uses. For "mininet", everything that can be checked before building (root, the
    shaping backend, what the spec asks of it) is checked here: errors come before anything exists."""
    if kind == "none":
        from testbed.emu.local import LoopbackNetwork

        return LoopbackNetwork(scenario)
    if kind == "mininet":
        from testbed.emu.net.mininet_net import MininetNetwork

        if shaping in (None, "", "auto"):
            shaping = None
        net = MininetNetwork(scenario, shaping=shaping, verify=verify, **options)
        net.check()
        return net
    raise InputError("--net", f"unknown network {kind!r} (choose from {', '.join(KINDS)})")


__all__ = ["KINDS", "make_network"]
