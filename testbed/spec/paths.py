"""Routes between drafts and targets: fewest hops, then least configured delay; only switches forward.

Nothing here is all-pairs unless asked for. A draft does not forward, so a single-homed draft's routes are its
link followed by the routes from the node at its other end, searched as if the search had started at the
draft: one search per distinct (neighbour, first-hop delay) serves every draft of an edge group (1,000 edges
behind one switch: one search, not 1,000). Multi-homed drafts get a search of their own. `PathTable` then
gives a pair's hops when asked, from those shared routes, instead of holding a tuple per pair.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from testbed.spec.scenario import Hop


@dataclass(frozen=True, slots=True)
class Routes:
    """Routes from one node (a draft, or a switch / target next to drafts) to the targets it reaches."""

    reach: tuple[str, ...]  # targets, in the scenario's target order
    there: tuple[tuple[Hop, ...], ...]  # hops to reach[i]
    back: tuple[tuple[Hop, ...], ...]  # hops from reach[i]
    index: dict[str, int]  # target -> i


@dataclass(frozen=True, slots=True)
class DraftRoutes:
    """A draft's routes: `first` (its one link, outward), then `routes` from its neighbour; `last` = `first`
    inward. Multi-homed drafts: first = last = None and `routes` start at the draft."""

    first: Hop | None
    last: Hop | None
    routes: Routes


class PathTable(Mapping[tuple[str, str], tuple[Hop, ...]]):
    """(draft, target) and (target, draft) -> the hops in order, built on demand."""

    def __init__(self, drafts: dict[str, DraftRoutes]):
        self._drafts = drafts

    def __getitem__(self, key: tuple[str, str]) -> tuple[Hop, ...]:
        a, b = key
        dr = self._drafts.get(a)
        if dr is not None:
            hops = dr.routes.there[dr.routes.index[b]]
            return hops if dr.first is None else (dr.first, *hops)
        dr = self._drafts.get(b)
        if dr is None:
            raise KeyError(key)
        hops = dr.routes.back[dr.routes.index[a]]
        return hops if dr.last is None else (*hops, dr.last)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, tuple) or len(key) != 2:
            return False
        a, b = key
        if a in self._drafts:
            return b in self._drafts[a].routes.index
        return b in self._drafts and a in self._drafts[b].routes.index

    def __iter__(self) -> Iterator[tuple[str, str]]:
        for d, dr in self._drafts.items():
            for t in dr.routes.reach:
                yield (d, t)
                yield (t, d)

    def __len__(self) -> int:
        return 2 * sum(len(dr.routes.reach) for dr in self._drafts.values())

    def hop_users(self) -> Counter[tuple[int, bool]]:
        """How many paths cross each link direction (link, forward), counted per shared route table."""
        users: Counter[tuple[int, bool]] = Counter()
        sharing: Counter[int] = Counter()
        tables: dict[int, Routes] = {}
        for dr in self._drafts.values():
            r = dr.routes
            sharing[id(r)] += 1
            tables[id(r)] = r
            if dr.first is not None and dr.last is not None:
                users[(dr.first.link, dr.first.forward)] += len(r.reach)
                users[(dr.last.link, dr.last.forward)] += len(r.reach)
        for key, r in tables.items():
            k = sharing[key]
            for hops in (*r.there, *r.back):
                for h in hops:
                    users[(h.link, h.forward)] += k
        return users


class RouteFinder:
    """Searches routes for drafts, sharing them between drafts with the same neighbour and first-hop delay."""

    def __init__(self, adj, by_name, links, targets: tuple[str, ...]):
        self.adj, self.by_name, self.links, self.targets = adj, by_name, links, targets
        self.hops: dict[tuple[int, bool], Hop] = {}
        self.via: dict[tuple[str, float], Routes] = {}

    def hop(self, link: int, forward: bool) -> Hop:
        h = self.hops.get((link, forward))
        if h is None:
            h = self.hops[(link, forward)] = Hop(link, forward)
        return h

    def _routes(self, found: dict[str, tuple[Hop, ...]]) -> Routes:
        reach = tuple(t for t in self.targets if t in found)
        there = tuple(found[t] for t in reach)
        back = tuple(tuple(self.hop(h.link, not h.forward) for h in reversed(hops)) for hops in there)
        return Routes(reach, there, back, {t: i for i, t in enumerate(reach)})

    def from_draft(self, d: str) -> DraftRoutes:
        links = self.adj[d]
        if len(links) != 1:
            return DraftRoutes(
                None, None, self._routes(shortest_paths(d, self.adj, self.by_name, self.links, self.hop))
            )
        v, li, fwd = links[0]
        first, last = self.hop(li, fwd), self.hop(li, not fwd)
        if self.by_name[v].role == "target":  # linked to a target directly: that is its one route
            return DraftRoutes(first, last, Routes((v,), ((),), ((),), {v: 0}))
        delay = self.links[li].delay_ms
        key = (v, delay)
        if key not in self.via:
            self.via[key] = self._routes(
                shortest_paths(v, self.adj, self.by_name, self.links, self.hop, reached=(1, delay))
            )
        return DraftRoutes(first, last, self.via[key])


def shortest_paths(
    src: str, adj, by_name, links, hop=Hop, reached: tuple[int, float] | None = None
) -> dict[str, tuple[Hop, ...]]:
    """Routes from `src` to every target it reaches. With `reached` = (hops, delay), the search is the
    continuation of one from a draft that reached `src` so: routes start at `src` (drafts are leaves of every
    search, so which draft it started from does not matter)."""
    start = reached or (0, 0.0)
    best: dict[str, tuple[int, float]] = {src: start}
    route: dict[str, tuple[Hop, ...]] = {src: ()}
    heap = [(start[0], start[1], src)]
    out: dict[str, tuple[Hop, ...]] = {}
    while heap:
        hops, delay, u = heapq.heappop(heap)
        if (hops, delay) > best[u]:
            continue
        if u != src or reached is not None:
            if by_name[u].role == "target":
                out[u] = route[u]
            if by_name[u].role != "switch":
                continue
        for v, li, fwd in adj[u]:
            cand = (hops + 1, delay + links[li].delay_ms)
            if v not in best or cand < best[v]:
                best[v] = cand
                route[v] = route[u] + (hop(li, fwd),)
                heapq.heappush(heap, (cand[0], cand[1], v))
    return out
