"""The emulated hosts of a run: the node runtime and the network, chosen and checked at one point, built in
order (the runtime first: with docker its containers own the hosts' network namespaces) and torn down in reverse.

    emu = make_emulator(scenario, net="mininet", shaping=None, runtime=None)   # checks only; nothing built
    with emu:                                   # runtime.build(), then network.build() in its namespaces
        emulate(scenario, emu.net, out, spec_path, opts, workload, runtime=emu.runtime)
"""

from __future__ import annotations

from testbed.emu.base import NetworkBackend
from testbed.emu.net import make_network
from testbed.emu.runtime import NodeRuntime, make_runtime
from testbed.spec import Scenario


class Emulator:
    def __init__(self, net: NetworkBackend, runtime: NodeRuntime):
        self.net = net
        self.runtime = runtime

    @property
    def backends(self) -> dict[str, str]:
        return {**self.net.backends, "runtime": self.runtime.name}

    def __enter__(self) -> "Emulator":
        self.runtime.__enter__()
        try:
            netns = self.runtime.netns_pids()
            if netns is not None:
                self.net.netns = netns
            self.net.__enter__()
        except BaseException:
            self.runtime.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.net.__exit__(*exc)
        finally:
            self.runtime.__exit__(*exc)


def make_emulator(
    scenario: Scenario,
    net: str = "mininet",
    shaping: str | None = None,
    runtime: str | None = None,
    build_image: bool = True,
    **net_options,
) -> Emulator:
    """Network and runtime for a run; everything that can fail before building (root, shaping backend, engine,
    node image, limits) fails here."""
    network = make_network(scenario, net, shaping=shaping, **net_options)
    rt = make_runtime(scenario, runtime, network=net, build_image=build_image)
    return Emulator(network, rt)
