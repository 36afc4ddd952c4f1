"""`--net none`: no emulated network; every node runs as a plain local process on 127.0.0.1 (loopback)."""

from __future__ import annotations

import subprocess
from typing import Any

from testbed.emu.base import NetworkBackend


class LoopbackNetwork(NetworkBackend):
    """Every node on 127.0.0.1; popen = subprocess.Popen. Nothing to build or tear down."""

    @property
    def backends(self) -> dict[str, str]:
        return {"network": "none", "shaping": "none"}

    def build(self) -> None:
        pass

    def teardown(self) -> None:
        pass

    def address(self, node: str) -> str:
        self.scenario.node(node)  # KeyError for an unknown node
        return "127.0.0.1"

    def popen(self, node: str, argv: list[str], **kwargs: Any) -> subprocess.Popen:
        self.scenario.node(node)
        return subprocess.Popen(argv, **kwargs)
