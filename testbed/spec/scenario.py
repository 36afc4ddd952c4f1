"""The resolved scenario: nodes with defaults filled in, edge groups expanded, links numbered, the path of
every draft -> target pair, compute models loaded. Built by `testbed.spec.resolve`; read-only afterwards,
by the simulator and the emulator alike."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from testbed.compute import ComputeModel
from testbed.schedule import Schedule
from testbed.spec.schema import LinkSpec, NodeSpec, TopologySpec


@dataclass(frozen=True, slots=True)
class Hop:
    """One link crossed in one direction: forward = from link.a to link.b."""

    link: int
    forward: bool


@dataclass(frozen=True)
class Scenario:
    spec: TopologySpec  # the resolved spec: edge groups expanded into nodes and links, defaults filled
    source: str  # the file it came from
    nodes: tuple[NodeSpec, ...]
    links: tuple[LinkSpec, ...]
    drafts: tuple[str, ...]
    targets: tuple[str, ...]
    paths: Mapping[tuple[str, str], tuple[Hop, ...]]  # (draft, target) and (target, draft) -> hops in order
    # (a testbed.spec.paths.PathTable: built on demand from routes shared by edge groups)
    compute: dict[str, ComputeModel]  # node name -> its compute model (drafts and targets)
    reachable: dict[str, tuple[str, ...]] = field(default_factory=dict)  # draft -> targets it can reach
    schedule: Schedule = field(default_factory=Schedule)  # what changes during the run (empty: nothing)
    _node_index: dict[str, NodeSpec] | None = field(default=None, init=False, repr=False, compare=False)

    def node(self, name: str) -> NodeSpec:
        index = self._node_index
        if index is None:
            index = {n.name: n for n in self.nodes}
            object.__setattr__(self, "_node_index", index)
        return index[name]

    def path_delay_s(self, src: str, dst: str) -> float:
        """Sum of configured one-way delays along the path (no queueing, no serialisation)."""
        return sum(self.links[h.link].delay_ms for h in self.paths[(src, dst)]) / 1e3
