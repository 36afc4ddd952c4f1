"""Scenario resolution at scale: routes shared by edge groups equal a search from every draft (random
topologies), the path table answers like a dict of every pair, and 10,000 edges resolve."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from testbed.spec import TopologySpec, resolve
from testbed.spec.families import star
from testbed.spec.paths import shortest_paths


def random_topology(seed: int) -> dict:
    """Switches in a random tree plus cross links, targets on one or two switches (some also linked to
    an edge directly), edge groups behind switches or a target, multi-homed drafts."""
    rng = random.Random(seed)
    n_sw = rng.randint(1, 6)
    n_t = rng.randint(1, 5)
    nodes = [{"name": f"sw{i}", "role": "switch"} for i in range(n_sw)]
    nodes += [{"name": f"cloud{i}", "role": "target"} for i in range(n_t)]
    links = []
    pairs = set()

    def link(a, b, **kw):
        if a != b and frozenset((a, b)) not in pairs:
            pairs.add(frozenset((a, b)))
            links.append({"a": a, "b": b, "delay_ms": rng.choice([0.5, 1, 2, 5]), **kw})

    for i in range(1, n_sw):
        link(f"sw{rng.randrange(i)}", f"sw{i}")
    for _ in range(rng.randint(0, 3)):
        link(f"sw{rng.randrange(n_sw)}", f"sw{rng.randrange(n_sw)}")
    for t in range(n_t):
        for s in rng.sample(range(n_sw), rng.randint(1, min(2, n_sw))):
            link(f"sw{s}", f"cloud{t}", bw_mbps=1000)
    for k in range(rng.randint(0, 3)):  # multi-homed drafts
        nodes.append({"name": f"mh{k}", "role": "draft"})
        for s in rng.sample(range(n_sw), rng.randint(1, min(2, n_sw))):
            link(f"mh{k}", f"sw{s}")
        if rng.random() < 0.3:
            link(f"mh{k}", f"cloud{rng.randrange(n_t)}")
    edges = []
    for g in range(rng.randint(1, 4)):
        to = f"cloud{rng.randrange(n_t)}" if rng.random() < 0.2 else f"sw{rng.randrange(n_sw)}"
        edges.append(
            {
                "prefix": f"g{g}e",
                "count": rng.randint(1, 12),
                "link": {"to": to, "bw_mbps": 100, "delay_ms": rng.choice([1, 10])},
            }
        )
    return {"name": f"random{seed}", "seed": seed, "nodes": nodes, "edges": edges, "links": links}


def reference_paths(sc) -> dict:
    """A search from every draft: the all-pairs definition the shared routes must equal."""
    by_name = {n.name: n for n in sc.nodes}
    adj = {n.name: [] for n in sc.nodes}
    for i, l in enumerate(sc.links):
        adj[l.a].append((l.b, i, True))
        adj[l.b].append((l.a, i, False))
    out = {}
    for d in sc.drafts:
        for t, hops in shortest_paths(d, adj, by_name, sc.links).items():
            out[(d, t)] = hops
            out[(t, d)] = tuple(type(h)(h.link, not h.forward) for h in reversed(hops))
    return out


@pytest.mark.parametrize("seed", range(40))
def test_shared_routes_equal_a_search_from_every_draft(seed):
    sc = resolve(TopologySpec.model_validate(random_topology(seed)), "<test>")
    ref = reference_paths(sc)
    assert dict(sc.paths.items()) == ref
    assert len(sc.paths) == len(ref) and set(sc.paths) == set(ref)
    for key in ref:
        assert key in sc.paths
    assert ("nobody", sc.targets[0]) not in sc.paths
    with pytest.raises(KeyError):
        sc.paths[(sc.targets[0], sc.targets[0])]
    for d in sc.drafts:
        assert sc.reachable[d] == tuple(t for t in sc.targets if (d, t) in ref)
    users = Counter((h.link, h.forward) for hops in ref.values() for h in hops)
    assert sc.paths.hop_users() == users


def test_ten_thousand_edges_resolve():
    sc = resolve(TopologySpec.model_validate(star(10_000, 100)), "<test>")
    assert len(sc.drafts) == 10_000 and len(sc.targets) == 100
    assert len(sc.paths) == 2 * 10_000 * 100
    assert all(len(sc.reachable[d]) == 100 for d in sc.drafts)
    up = sc.paths[("e9999", "cloud42")]
    assert [sc.links[h.link].b for h in up] == ["sw0", "cloud42"] and all(h.forward for h in up)
    assert [sc.links[h.link].a for h in sc.paths[("cloud42", "e9999")]] == ["sw0", "e9999"]
    assert sc.compute["e0"] is sc.compute["e9999"]  # one compute model per profile
    assert sc.node("e9999").role == "draft"
    users = sc.paths.hop_users()
    link = {(l.a, l.b): i for i, l in enumerate(sc.links)}
    assert users[(link[("e5", "sw0")], True)] == 100  # an edge's uplink: its 100 paths up
    assert users[(link[("sw0", "cloud5")], True)] == 10_000  # a target's downlink from the switch: every edge
