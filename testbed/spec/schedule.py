"""Resolving the spec's `schedule` section against the resolved nodes and links: link names (wildcards) to
link indices, CSV steps inlined, trace files found and parsed, events paired into intervals, times checked
against the run. Returns the resolved section (written into spec.yaml: itself a valid schedule that resolves
to the same thing) and the `testbed.schedule.Schedule` both executors read."""

from __future__ import annotations

import csv
import fnmatch
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from testbed.errors import SpecError
from testbed.spec.loader import format_loc
from testbed.schedule import INF, Change, LinkState, LinkTrace, Schedule
from testbed.spec.schema import LinkScheduleSpec, LinkSpec, LinkStepSpec, NodeSpec, ScheduleSpec, TopologySpec
from traces.errors import TraceError
from traces.nettrace import find_net_trace, load_mahimahi

STEP_FIELDS = ("delay_ms", "jitter_ms", "loss_pct", "bw_mbps")

Fail = Callable[[tuple[Any, ...], str], SpecError]


def run_span_s(spec: TopologySpec) -> float | None:
    """Latest time a schedule may name: the replayed window in run seconds plus the drain timeout (None when
    the window has no end: then only known once the trace is read)."""
    w = spec.workload
    if w.duration_s is None:
        return None
    return w.duration_s * w.time_scale / w.rate_scale + spec.run.drain_timeout_s


def match_links(pattern: str, links: tuple[LinkSpec, ...] | list[LinkSpec]) -> list[tuple[int, bool]]:
    """(link index, written forward = a -> b) of every link 'X-Y' matches (either order, fnmatch on each side)."""
    x, sep, y = pattern.partition("-")
    if not sep or not x or not y:
        return []
    out = []
    for i, l in enumerate(links):
        if fnmatch.fnmatchcase(l.a, x) and fnmatch.fnmatchcase(l.b, y):
            out.append((i, True))
        elif fnmatch.fnmatchcase(l.b, x) and fnmatch.fnmatchcase(l.a, y):
            out.append((i, False))
    return out


def _one_link(pattern: str | None, links, loc, fail: Fail) -> int:
    if not pattern:
        raise fail(loc, "this event needs `link: X-Y`")
    found = match_links(pattern, links)
    if len(found) != 1:
        known = ", ".join(f"{l.a}-{l.b}" for l in links[:12]) + (" ..." if len(links) > 12 else "")
        what = "names no link" if not found else f"names {len(found)} links (an event takes exactly one)"
        raise fail(loc, f"{pattern!r} {what} (links: {known})")
    return found[0][0]


def read_steps_csv(path: Path, where: str) -> list[LinkStepSpec]:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(where, f"cannot read steps CSV {str(path)!r}: {getattr(e, 'strerror', None) or e}") from None
    rows = list(csv.reader(text.splitlines()))
    if not rows:
        raise SpecError(f"{path}:1", "empty steps CSV (header: at_s and any of delay_ms, jitter_ms, loss_pct, bw_mbps)")
    header = [h.strip() for h in rows[0]]
    unknown = [h for h in header if h not in ("at_s", *STEP_FIELDS)]
    if "at_s" not in header or unknown:
        raise SpecError(
            f"{path}:1",
            f"header must have at_s and any of {', '.join(STEP_FIELDS)}"
            + (f"; unknown column(s) {', '.join(unknown)}" if unknown else ""),
        )
    out = []
    for i, row in enumerate(rows[1:], 2):
        if not any(c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise SpecError(f"{path}:{i}", f"{len(row)} cells, the header has {len(header)}")
        vals: dict[str, float] = {}
        for h, c in zip(header, row):
            c = c.strip()
            if c == "":
                continue
            try:
                vals[h] = float(c)
            except ValueError:
                raise SpecError(f"{path}:{i}", f"column {h}: {c!r} is not a number") from None
        try:
            out.append(LinkStepSpec(**vals))
        except ValidationError as e:
            err = e.errors()[0]
            raise SpecError(f"{path}:{i}", f"column {'.'.join(map(str, err['loc']))}: {err['msg']}") from None
    return out


def resolve_schedule(
    spec: TopologySpec, nodes: list[NodeSpec], links: list[LinkSpec], base_dir: Path | None, fail: Fail
) -> tuple[ScheduleSpec, Schedule]:
    sched = spec.schedule
    if not sched.links and not sched.events:
        return sched, Schedule()
    names = {n.name: n for n in nodes}
    span = run_span_s(spec)

    def check_time(t: float, loc) -> None:
        if span is not None and t > span:
            raise fail(
                loc,
                f"{t:g} s is after the end of the run ({span:g} s: workload window "
                f"{spec.workload.duration_s:g} s in run time + run.drain_timeout_s)",
            )

    # 1. Per-link entries: expand wildcards; inline CSV steps; find and parse traces.
    resolved_links: list[LinkScheduleSpec] = []
    traces: dict[tuple[int, bool], LinkTrace] = {}
    steps_of: dict[int, list[tuple[float, LinkStepSpec]]] = {}
    owner: dict[int, int] = {}
    parsed: dict[str, Any] = {}
    for e_i, entry in enumerate(sched.links):
        loc = ("schedule", "links", e_i)
        found = match_links(entry.link, links)
        if not found:
            raise fail(
                loc + ("link",),
                f"{entry.link!r} names no link (write 'X-Y' with the names of its two ends; "
                f"links: {', '.join(f'{l.a}-{l.b}' for l in links[:12])}" + (" ..." if len(links) > 12 else "") + ")",
            )
        steps = list(entry.steps)
        if entry.steps_csv:
            p = Path(entry.steps_csv)
            if not p.is_absolute() and base_dir is not None:
                p = base_dir / p
            steps += read_steps_csv(p, fail(loc + ("steps_csv",), "").where)
        for s_i, st in enumerate(steps):
            check_time(st.at_s, loc + ("steps", min(s_i, max(len(entry.steps) - 1, 0))))
        for tr_field in ("trace_fwd", "trace_rev"):
            name = getattr(entry, tr_field)
            if name and name not in parsed:
                here = fail(loc + (tr_field,), "").where
                try:
                    path = find_net_trace(name, base_dir)
                except TraceError as e:
                    raise SpecError(here, f"{format_loc(loc + (tr_field,))}: {e}") from None
                try:
                    parsed[name] = (str(path), load_mahimahi(path))
                except TraceError as e:  # already 'path:line: what' - the place to fix is in the trace file
                    raise SpecError("", f"{e} (the {format_loc(loc + (tr_field,))} of {here})") from None
        for k, (li, fwd) in enumerate(found):
            if li in owner:
                raise fail(
                    loc + ("link",),
                    f"link {links[li].a}-{links[li].b} is already scheduled by "
                    f"schedule.links[{owner[li]}] (one entry per link)",
                )
            owner[li] = e_i
            offset = entry.trace_offset_s + k * entry.trace_stagger_s
            fwd_name, rev_name = (entry.trace_fwd, entry.trace_rev) if fwd else (entry.trace_rev, entry.trace_fwd)
            ab = {}
            for key, name, forward in (("trace_fwd", fwd_name, True), ("trace_rev", rev_name, False)):
                if name:
                    path, times = parsed[name]
                    traces[(li, forward)] = LinkTrace(path, times, int(round(offset * 1e3)) % int(times[-1]))
                    ab[key] = path
            if steps:
                steps_of[li] = [(st.at_s, st) for st in steps]
            resolved_links.append(
                LinkScheduleSpec(
                    link=f"{links[li].a}-{links[li].b}",
                    trace_offset_s=offset,
                    steps=sorted(steps, key=lambda s: s.at_s),
                    **ab,
                )
            )

    # 2. Events: pair into intervals.
    down: dict[int, list[list[float]]] = {}
    crashed: dict[str, list[list[float]]] = {}
    changes: list[Change] = []
    partitions: list[tuple[frozenset[str], list[int]]] = []

    def open_down(li: int, t: float, loc, cause: str) -> None:
        ivs = down.setdefault(li, [])
        if ivs and ivs[-1][1] == INF:
            raise fail(loc, f"link {links[li].a}-{links[li].b} is already down at {t:g} s")
        ivs.append([t, INF])
        changes.append(Change(t, "link_down", link=li, cause=cause))

    def close_down(li: int, t: float, loc, cause: str) -> None:
        ivs = down.get(li)
        if not ivs or ivs[-1][1] != INF:
            raise fail(loc, f"link {links[li].a}-{links[li].b} is not down at {t:g} s")
        if t <= ivs[-1][0]:
            raise fail(
                loc,
                f"link {links[li].a}-{links[li].b} comes back at {t:g} s, not after it went down ({ivs[-1][0]:g} s)",
            )
        ivs[-1][1] = t
        changes.append(Change(t, "link_up", link=li, cause=cause))

    events = sorted(enumerate(sched.events), key=lambda e: e[1].at_s)
    pending: list[tuple[float, int, str]] = []  # implicit ends (until_s), applied in time order
    for e_i, ev in events:
        loc = ("schedule", "events", e_i)
        check_time(ev.at_s, loc + ("at_s",))
        if ev.until_s is not None:
            check_time(ev.until_s, loc + ("until_s",))
            if ev.until_s <= ev.at_s:
                raise fail(loc + ("until_s",), f"until_s={ev.until_s:g} is not after at_s={ev.at_s:g}")
            if ev.kind not in ("link_down", "partition", "crash"):
                raise fail(loc + ("until_s",), f"until_s applies to link_down, partition and crash, not {ev.kind}")
        # implicit ends due before this event
        pending.sort()
        while pending and pending[0][0] <= ev.at_s:
            _apply_end(pending.pop(0), sched, links, close_down, crashed, changes, partitions, fail)
        if ev.kind in ("link_down", "link_up"):
            li = _one_link(ev.link, links, loc + ("link",), fail)
            (open_down if ev.kind == "link_down" else close_down)(li, ev.at_s, loc, "event")
            if ev.until_s is not None:
                pending.append((ev.until_s, e_i, "link_up"))
        elif ev.kind in ("partition", "heal"):
            group = ev.nodes or []
            if not group:
                raise fail(loc + ("nodes",), f"{ev.kind} needs `nodes`: the set of nodes cut from the rest")
            for n in group:
                if n not in names:
                    raise fail(
                        loc + ("nodes",),
                        f"unknown node {n!r} (known: {', '.join(sorted(names)[:12])}"
                        + (" ..." if len(names) > 12 else "")
                        + ")",
                    )
            gset = frozenset(group)
            cut = [i for i, l in enumerate(links) if (l.a in gset) != (l.b in gset)]
            if not cut:
                raise fail(loc + ("nodes",), "no link crosses the cut between these nodes and the rest")
            cause = "partition " + ",".join(sorted(gset))
            if ev.kind == "partition":
                for li in cut:
                    open_down(li, ev.at_s, loc, cause)
                partitions.append((gset, cut))
                if ev.until_s is not None:
                    pending.append((ev.until_s, e_i, "heal"))
            else:
                match = [p for p in partitions if p[0] == gset]
                if not match:
                    raise fail(loc + ("nodes",), f"no partition of {sorted(gset)} to heal at {ev.at_s:g} s")
                partitions.remove(match[0])
                for li in match[0][1]:
                    close_down(li, ev.at_s, loc, "heal " + ",".join(sorted(gset)))
        else:
            n = ev.node
            if not n or n not in names:
                raise fail(loc + ("node",), f"{ev.kind} needs `node`: a draft or target (got {n!r})")
            if names[n].role == "switch":
                raise fail(
                    loc + ("node",), f"{n!r} is a switch; only drafts and targets crash (use link_down or a partition)"
                )
            ivs = crashed.setdefault(n, [])
            if ev.kind == "crash":
                if ivs and ivs[-1][1] == INF:
                    raise fail(loc, f"{n!r} has already crashed at {ivs[-1][0]:g} s")
                ivs.append([ev.at_s, INF])
                changes.append(Change(ev.at_s, "crash", node=n, cause="event"))
                if ev.until_s is not None:
                    pending.append((ev.until_s, e_i, "restart"))
            else:
                _restart(n, ev.at_s, crashed, changes, fail, loc)
    pending.sort()
    for p in pending:
        _apply_end(p, sched, links, close_down, crashed, changes, partitions, fail)

    # 3. Steps: the full link state from each step on.
    step_states: dict[int, tuple[tuple[float, LinkState], ...]] = {}
    for li, st in steps_of.items():
        l = links[li]
        cur = LinkState(l.delay_ms, l.jitter_ms, l.loss_pct, l.bw_mbps)
        seq = [(0.0, cur)]
        for t, s in sorted(st, key=lambda x: x[0]):
            upd = {f: getattr(s, f) for f in STEP_FIELDS if getattr(s, f) is not None}
            if (
                upd.get("bw_mbps") is not None
                and l.bw_mbps is None
                and not ((li, True) in traces and (li, False) in traces)
            ):
                raise fail(
                    ("schedule", "links", owner[li]),
                    f"a rate step on link {l.a}-{l.b}, which has no bw_mbps "
                    "(an unshaped link cannot get a rate during the run)",
                )
            cur = cur._replace(**upd)
            if t == 0.0:
                seq[0] = (0.0, cur)
            else:
                seq.append((t, cur))
            changes.append(Change(t, "link_params", link=li, state=cur, cause="step"))
        step_states[li] = tuple(seq)

    changes.sort(key=lambda c: c.t)
    schedule = Schedule(
        changes=tuple(changes),
        traces=traces,
        steps=step_states,
        down={k: tuple((a, b) for a, b in v) for k, v in down.items()},
        crashed={k: tuple((a, b) for a, b in v) for k, v in crashed.items()},
    )
    resolved = ScheduleSpec(links=resolved_links, events=list(sched.events))
    return resolved, schedule


def _restart(n: str, t: float, crashed, changes, fail: Fail, loc) -> None:
    ivs = crashed.get(n)
    if not ivs or ivs[-1][1] != INF:
        raise fail(loc, f"{n!r} is not crashed at {t:g} s (restart needs an earlier crash)")
    ivs[-1][1] = t
    changes.append(Change(t, "restart", node=n, cause="event"))


def _apply_end(p, sched: ScheduleSpec, links, close_down, crashed, changes, partitions, fail: Fail) -> None:
    t, e_i, kind = p
    ev = sched.events[e_i]
    loc = ("schedule", "events", e_i, "until_s")
    if kind == "link_up":
        close_down(_one_link(ev.link, links, loc, fail), t, loc, "until_s")
    elif kind == "heal":
        gset = frozenset(ev.nodes or [])
        match = [q for q in partitions if q[0] == gset]
        if match:
            partitions.remove(match[0])
            for li in match[0][1]:
                close_down(li, t, loc, "heal " + ",".join(sorted(gset)))
    else:
        _restart(ev.node, t, crashed, changes, fail, loc)
