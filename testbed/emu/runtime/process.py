"""`runtime: process`: every node program is a plain process on its emulated host (the network backend's
popen: inside the host's network namespace, with its CPU limit), as before containers existed."""

from __future__ import annotations

import subprocess
from pathlib import Path

from testbed.emu.runtime.base import NodeHandle, NodeRuntime, ProcessHandle


class ProcessRuntime(NodeRuntime):
    name = "process"

    def teardown(self) -> None:
        pass  # the network stops what its popen started

    def start(self, node: str, argv: list[str], env: dict[str, str], log: Path, cwd: str) -> NodeHandle:
        assert self.net is not None, "attach(net) first"
        with open(log, "wb") as f:
            p = self.net.popen(
                node,
                argv,
                stdout=f,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=cwd,
                start_new_session=True,
            )
        return ProcessHandle(p)
