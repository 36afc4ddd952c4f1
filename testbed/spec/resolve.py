"""Load, validate and resolve a topology file into a `Scenario` (the one object both executors read)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from testbed.compute import ComputeModel, resolve_profile
from testbed.errors import InputError, SpecError
from testbed.spec.loader import apply_overrides, format_loc, locator, read_yaml, validate
from testbed.spec.paths import DraftRoutes, PathTable, RouteFinder
from testbed.spec.scenario import Scenario
from testbed.spec.schedule import resolve_schedule
from testbed.spec.schema import LinkSpec, NodeSpec, ProfileSpec, TopologySpec

DEFAULT_PROFILE = {"draft": "edge-cpu", "target": "cloud-gpu"}


def load_scenario(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Scenario:
    """Read a topology YAML, apply `--set` overrides, validate and resolve. SpecError (exit 2) on bad input."""
    path = Path(path)
    data, tree = read_yaml(path)
    data = apply_overrides(data, list(overrides))

    where = locator(tree, path)
    spec = validate(TopologySpec, data, where, "testbed/spec/schema.py")
    return resolve(spec, str(path), where)


Fail = Callable[[tuple[Any, ...], str], SpecError]  # (location in the file, message) -> the error to raise


def resolve(spec: TopologySpec, source: str = "<spec>", where=None) -> Scenario:
    """A validated spec -> the Scenario: edge groups expanded, defaults filled, links checked, compute models,
    routes, the recorded acceptance file and the schedule resolved. SpecError naming the place on bad input."""
    where = where or (lambda loc: source)

    def fail(loc: tuple[Any, ...], msg: str) -> SpecError:
        return SpecError(where(loc), f"{format_loc(loc)}: {msg}")

    nodes, node_loc, links, link_loc = _expand(spec, fail)
    filled, by_name = _fill_defaults(spec, nodes)
    drafts = tuple(n.name for n in filled if n.role == "draft")
    targets = tuple(n.name for n in filled if n.role == "target")
    if not targets:
        raise fail(("nodes",), "no node with role 'target'")
    if not drafts:
        raise fail(("nodes",), "no node with role 'draft' (declare nodes or an `edges` group)")
    _check_links(links, link_loc, by_name, fail)
    compute, used_profiles = _compute_models(spec, filled, node_loc, fail)
    paths, reachable = _routes(filled, links, by_name, drafts, targets, node_loc, fail)
    models = _recorded_acceptance(spec, source, fail)
    # the schedule: what changes during the run (testbed/spec/schedule.py)
    base_dir = Path(source).parent if source not in ("<spec>", "<test>") else None
    sched_spec, schedule = resolve_schedule(spec, filled, links, base_dir, fail)

    resolved = spec.model_copy(
        update={
            "nodes": filled,
            "edges": [],
            "links": links,
            "profiles": used_profiles,
            "models": models,
            "schedule": sched_spec,
        }
    )
    return Scenario(
        spec=resolved,
        source=source,
        nodes=tuple(filled),
        links=tuple(links),
        drafts=drafts,
        targets=targets,
        paths=paths,
        compute=compute,
        reachable=reachable,
        schedule=schedule,
    )


def _expand(spec: TopologySpec, fail: Fail):
    """Edge groups expanded into nodes and links, remembering where each came from in the file."""
    nodes: list[NodeSpec] = []
    node_loc: dict[str, tuple[Any, ...]] = {}
    links: list[LinkSpec] = []
    link_loc: list[tuple[Any, ...]] = []
    for i, n in enumerate(spec.nodes):
        if n.name in node_loc:
            raise fail(("nodes", i, "name"), f"duplicate node name {n.name!r}")
        nodes.append(n)
        node_loc[n.name] = ("nodes", i)
    for g_i, g in enumerate(spec.edges):
        for k in range(g.count):
            name = f"{g.prefix}{k}"
            if len(name) > 10:
                raise fail(
                    ("edges", g_i, "count"),
                    f"generated name {name!r} is longer than 10 characters; use a shorter prefix",
                )
            if name in node_loc:
                raise fail(("edges", g_i, "prefix"), f"generated node {name!r} collides with an existing node")
            nodes.append(
                NodeSpec(
                    name=name,
                    role=g.role,
                    profile=g.profile,
                    model=g.model,
                    cpu_share=g.cpu_share,
                    memory_mb=g.memory_mb,
                    draft_slots=g.draft_slots,
                )
            )
            node_loc[name] = ("edges", g_i)
            params = g.link.model_dump(exclude={"to"})
            links.append(LinkSpec(a=name, b=g.link.to, **params))
            link_loc.append(("edges", g_i, "link", "to"))
    for i, l in enumerate(spec.links):
        links.append(l)
        link_loc.append(("links", i))
    return nodes, node_loc, links, link_loc


def _fill_defaults(spec: TopologySpec, nodes: list[NodeSpec]) -> tuple[list[NodeSpec], dict[str, NodeSpec]]:
    """Per-node defaults: profile by role, the spec's models, one draft slot for real models."""
    by_name: dict[str, NodeSpec] = {}
    filled: list[NodeSpec] = []
    for n in nodes:
        upd: dict[str, Any] = {}
        if n.role != "switch":
            if n.profile is None:
                upd["profile"] = DEFAULT_PROFILE[n.role]
            if n.model is None:
                upd["model"] = spec.models.draft if n.role == "draft" else spec.models.target
            if n.role == "draft" and n.draft_slots == 0 and spec.models.backend != "profiled":
                upd["draft_slots"] = 1  # a real model computes one draft at a time (nodes/worker.py)
        n = n.model_copy(update=upd) if upd else n
        filled.append(n)
        by_name[n.name] = n
    return filled, by_name


def _check_links(
    links: list[LinkSpec], link_loc: list[tuple[Any, ...]], by_name: dict[str, NodeSpec], fail: Fail
) -> None:
    """Known ends, no self-links, no duplicates."""
    seen: set[frozenset[str]] = set()
    for i, l in enumerate(links):
        for end in ("a", "b"):
            name = getattr(l, end)
            if name not in by_name:
                field_loc = link_loc[i] if link_loc[i][-1] == "to" else link_loc[i] + (end,)
                raise fail(field_loc, f"link to unknown node {name!r} (known: {', '.join(sorted(by_name))})")
        if l.a == l.b:
            raise fail(link_loc[i], f"link from {l.a!r} to itself")
        pair = frozenset((l.a, l.b))
        if pair in seen:
            raise fail(link_loc[i], f"second link between {l.a!r} and {l.b!r}")
        seen.add(pair)


def _compute_models(
    spec: TopologySpec, filled: list[NodeSpec], node_loc: dict[str, tuple[Any, ...]], fail: Fail
) -> tuple[dict[str, ComputeModel], dict[str, ProfileSpec]]:
    """Each draft's and target's compute model, and the profiles used (written into the resolved spec)."""
    compute: dict[str, ComputeModel] = {}
    used_profiles: dict[str, ProfileSpec] = {}
    models_by_profile: dict[str, ComputeModel] = {}  # one (immutable) model per profile, shared by its nodes
    for n in filled:
        if n.role == "switch":
            continue
        if n.profile not in models_by_profile:
            try:
                prof = resolve_profile(n.profile, spec.profiles)
            except KeyError as e:
                raise fail(node_loc[n.name] + ("profile",), e.args[0]) from None
            except InputError as e:
                raise fail(node_loc[n.name] + ("profile",), str(e)) from None
            used_profiles[n.profile] = prof
            models_by_profile[n.profile] = ComputeModel.from_spec(n.profile, prof)
        compute[n.name] = models_by_profile[n.profile]
    return compute, used_profiles


def _routes(
    filled: list[NodeSpec],
    links: list[LinkSpec],
    by_name: dict[str, NodeSpec],
    drafts: tuple[str, ...],
    targets: tuple[str, ...],
    node_loc: dict[str, tuple[Any, ...]],
    fail: Fail,
) -> tuple[PathTable, dict[str, tuple[str, ...]]]:
    """Paths between every draft and every target it can reach (switches forward; hosts do not)."""
    adj: dict[str, list[tuple[str, int, bool]]] = {n.name: [] for n in filled}
    for i, l in enumerate(links):
        adj[l.a].append((l.b, i, True))
        adj[l.b].append((l.a, i, False))
    drafts_routes: dict[str, DraftRoutes] = {}
    reachable: dict[str, tuple[str, ...]] = {}
    finder = RouteFinder(adj, by_name, links, targets)
    for d in drafts:
        if not adj[d]:
            raise fail(node_loc[d], f"draft {d!r} has no link")
        dr = finder.from_draft(d)
        if not dr.routes.reach:
            raise fail(node_loc[d], f"draft {d!r} reaches no target (paths may cross switches only)")
        reachable[d] = dr.routes.reach
        drafts_routes[d] = dr
    return PathTable(drafts_routes), reachable


def _recorded_acceptance(spec: TopologySpec, source: str, fail: Fail):
    """The models section, with a recorded acceptance file (relative to the topology file) checked to exist and
    load, and its path made absolute."""
    models = spec.models
    acc = models.acceptance
    if acc.kind != "recorded":
        return models
    if not acc.path:
        raise fail(
            ("models", "acceptance", "path"),
            "kind 'recorded' needs a path (an .acceptance.npz from `testbed calibrate`)",
        )
    p = Path(acc.path)
    if not p.is_absolute() and source not in ("<spec>", "<test>"):
        p = Path(source).parent / p
    if not p.is_file():
        raise fail(("models", "acceptance", "path"), f"recorded acceptance file {str(p)!r} does not exist")
    from testbed.acceptance_recorded import load_recorded

    try:
        load_recorded(str(p.resolve()))
    except InputError as e:
        raise fail(("models", "acceptance", "path"), str(e)) from None
    return models.model_copy(update={"acceptance": acc.model_copy(update={"path": str(p.resolve())})})


def spec_to_yaml(spec: TopologySpec) -> str:
    """The resolved spec as YAML: itself a valid topology file that resolves to the same scenario."""
    return yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False, default_flow_style=None, width=110)
