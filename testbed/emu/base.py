"""The small interface between the emulator's orchestrator and the network it runs nodes in.

A `NetworkBackend` is built from the resolved scenario, used as a context manager (build on enter,
reverse-order teardown on exit, also on errors), and gives the orchestrator what it needs to start node
programs on emulated hosts and to reach them:

    with make_network(scenario, kind) as net:     # kind: "none" (loopback) or "mininet"
        addr = net.address("cloud0")               # where the node's sockets bind / are reached
        proc = net.popen("cloud0", argv, env=..., stdout=f, stderr=f)   # runs inside the node's host
        net.links_report()                         # as-built, measured link table (emu/links.json)
        net.backends                               # e.g. {"network": "mininet", "shaping": "userspace"}
"""

from __future__ import annotations

import subprocess
from abc import ABC, abstractmethod
from typing import Any

from testbed.emu.lifecycle import Built
from testbed.spec import Scenario


class NetworkBackend(Built, ABC):
    """Where node programs run and how they reach each other."""

    def __init__(self, scenario: Scenario):
        self.scenario = scenario

    @property
    @abstractmethod
    def backends(self) -> dict[str, str]:
        """Chosen backends, recorded in meta.json."""

    @abstractmethod
    def build(self) -> None: ...

    @abstractmethod
    def teardown(self) -> None:
        """Remove everything build() created, in reverse order; must not raise, safe to call twice."""

    @abstractmethod
    def address(self, node: str) -> str:
        """IPv4 address the node binds to and is reached at."""

    @abstractmethod
    def popen(self, node: str, argv: list[str], **kwargs: Any) -> subprocess.Popen:
        """Start a program inside the node's host (kwargs as for subprocess.Popen)."""

    def set_t0(self, t0_monotonic: float) -> None:
        """The run's start: scheduled changes and capacity traces count from it."""

    def prepare_changes(self, groups: list[tuple[float, list]], t0: float) -> None:
        """Optional: every link change of the run ahead of time (apply_changes is then called at each time)."""

    def apply_changes(self, changes: list) -> float:
        """Make scheduled link changes (testbed.schedule.Change) real now; CLOCK_MONOTONIC when they took effect."""
        raise NotImplementedError("this network cannot change links during a run")

    def links_report(self) -> dict[str, Any]:
        """As-built link table with measurements; empty when there is no emulated network."""
        return {}

    def probe_after(self) -> None:
        """Measure the paths once more after the run (into links_report()["after"]); nothing to do without a network."""
