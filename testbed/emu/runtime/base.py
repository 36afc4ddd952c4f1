"""The node runtime: how the emulator starts, signals, watches and collects a node program.

The runtime is one backend choice, like the network's shaping: `process` (a program in the emulated host's
network namespace) or `docker` (a container that *is* the emulated host: the host's interfaces, routes and
shaping live in its network namespace). Node programs are the same in both; only start, stop, limits and log
collection differ.

    with make_runtime(scenario, "docker") as rt:            # engine + image checked, per-host namespaces made
        with make_network(scenario, "mininet", netns=rt.netns_pids()) as net:
            h = rt.start("edge0", argv, env=..., log=path)   # a NodeHandle
            h.poll(); h.signal(signal.SIGTERM); h.exit_info()

Lifecycle as the network's: `__enter__` builds (and tears down again if that fails), `__exit__` tears down in
reverse order, never raises, and is safe to call twice.
"""

from __future__ import annotations

import os
import subprocess
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from testbed.emu.lifecycle import Built
from testbed.spec import Scenario


class NodeHandle(ABC):
    """A started node program: exit status, signals, how it ended."""

    @property
    @abstractmethod
    def pid(self) -> int | None:
        """The program's process id in this machine's pid namespace (None when unknown)."""

    @abstractmethod
    def poll(self) -> int | None:
        """Exit code, or None while it runs."""

    @abstractmethod
    def signal(self, sig: int) -> None:
        """Send `sig` to the program (and whatever it started); no error when it is gone."""

    @abstractmethod
    def wait(self, timeout: float | None = None) -> int | None: ...

    def exit_info(self) -> dict[str, Any]:
        """How it ended beyond the exit code (e.g. {"oom_killed": true}); collected after it ended."""
        return {}


class ProcessHandle(NodeHandle):
    """A node program started as a process in its own session (signals go to its process group)."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc

    @property
    def pid(self) -> int | None:
        return self.proc.pid

    def poll(self) -> int | None:
        return self.proc.poll()

    def signal(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass

    def wait(self, timeout: float | None = None) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None


class NodeRuntime(Built, ABC):
    """Starts node programs on emulated hosts. `net` (a NetworkBackend) is bound with `attach` once built."""

    name: str = "?"

    def __init__(self, scenario: Scenario):
        self.scenario = scenario
        self.net = None

    def check(self) -> None:
        """Everything that can fail before anything is built (an InputError, exit 2)."""

    def build(self) -> None:
        """Create what must exist before the network is built (e.g. the hosts' network namespaces)."""

    @abstractmethod
    def teardown(self) -> None:
        """Remove everything build() and start() created; never raises; safe to call twice."""

    def netns_pids(self) -> dict[str, int] | None:
        """Per host, the pid of a process whose network namespace the network must put the host's interfaces
        in; None = the network creates the namespaces itself."""
        return None

    def attach(self, net: Any) -> None:
        self.net = net

    def bind_run(self, run_dir: Path, trace_source: str | None) -> None:
        """The run directory and the trace the node programs of this run read and write (before start)."""

    @abstractmethod
    def start(self, node: str, argv: list[str], env: dict[str, str], log: Path, cwd: str) -> NodeHandle:
        """Start the node program `argv` (argv[0] is this machine's Python) on the node's host."""

    def describe(self) -> dict[str, Any]:
        """What was used, for meta.json and the report."""
        return {"runtime": self.name}
