"""Node runtimes: `make_runtime(scenario, kind)` is the one place the runtime is chosen (`run.runtime` in the
spec, `--runtime` on emulate / run, RUNTIME= on make experiment).

kind "process": node programs are processes on their emulated hosts (testbed.emu.runtime.process).
kind "docker": each node in its own container that is its emulated host (testbed.emu.runtime.docker).
"""

from __future__ import annotations

from testbed.emu.runtime.base import NodeHandle, NodeRuntime, ProcessHandle
from testbed.errors import InputError
from testbed.spec import Scenario

RUNTIMES = ("process", "docker")


def make_runtime(
    scenario: Scenario, kind: str | None = None, network: str = "mininet", build_image: bool = True
) -> NodeRuntime:
    """The runtime a run uses (kind None: the spec's run.runtime). Checks what can fail before anything is built."""
    kind = kind or scenario.spec.run.runtime
    if kind == "process":
        from testbed.emu.runtime.process import ProcessRuntime

        return ProcessRuntime(scenario)
    if kind == "docker":
        from testbed.emu.runtime.docker import DockerRuntime

        rt = DockerRuntime(scenario, network=network, build_image=build_image)
        rt.check()
        return rt
    raise InputError("--runtime", f"unknown runtime {kind!r} (choose from {', '.join(RUNTIMES)})")


__all__ = ["RUNTIMES", "NodeHandle", "NodeRuntime", "ProcessHandle", "make_runtime"]
