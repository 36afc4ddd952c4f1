"""Generated topology families (as spec dicts, for `TopologySpec.model_validate` or a YAML file)."""

from __future__ import annotations

from typing import Any


def star(
    edges: int,
    targets: int,
    *,
    edge_link: dict[str, Any] | None = None,
    core_link: dict[str, Any] | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """`edges` drafts (e0 ..) and `targets` cloud-gpu verifiers (cloud0 ..) behind one switch; the links of
    bench-32edge-4cloud by default (edges: 100 Mbit/s, 10 ms, 1 ms jitter; targets: 10 Gbit/s, 1 ms)."""
    edge_link = edge_link or {"bw_mbps": 100, "delay_ms": 10, "jitter_ms": 1}
    core_link = core_link or {"bw_mbps": 10000, "delay_ms": 1}
    nodes = [{"name": f"cloud{i}", "role": "target", "profile": "cloud-gpu"} for i in range(targets)]
    nodes.append({"name": "sw0", "role": "switch"})
    return {
        "name": name or f"star-{edges}edge-{targets}cloud",
        "nodes": nodes,
        "edges": [{"prefix": "e", "count": edges, "profile": "edge-cpu", "link": {"to": "sw0", **edge_link}}],
        "links": [{"a": "sw0", "b": f"cloud{i}", **core_link} for i in range(targets)],
    }
