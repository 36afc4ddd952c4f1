"""Emulated vs simulated on topologies with a schedule (`make bench-schedule-fidelity` runs them first).

For each run directory (of `python -m testbed run`): throughput and mean TTFT / TPOT (goal 5 %), p99 TTFT / TPOT
(goal 15 %), requests failed and re-routed (goal: equal), and the lateness of the applied changes in
emu/events.parquet; then the mean TTFT per arrival window between the schedule's changes and, per crash, how long
after it each side's drafts declared the target dead. Exits 1 when a goal is missed.

usage: python bench/schedule_fidelity.py RUN_DIR ...
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

GOALS = {"request_throughput_rps": 5, "ttft_ms.mean": 5, "tpot_ms.mean": 5, "ttft_ms.p99": 15, "tpot_ms.p99": 15}


def one(run: Path) -> bool:
    cmp = json.loads((run / "compare.json").read_text())
    by = {m["metric"]: m for m in cmp["metrics"]}
    ok = True
    cells = []
    for k, goal in GOALS.items():
        m = by.get(k)
        if m is None or m.get("rel_error") is None:
            cells.append(f"{k} n/a")
            continue
        e = m["rel_error"] * 100
        ok &= abs(e) <= goal
        cells.append(f"{k} {e:+.1f} %" + ("" if abs(e) <= goal else " (miss)"))
    sums = {side: json.loads((run / side / "summary.json").read_text()) for side in ("sim", "emu")}
    failed = {s: sums[s].get("requests_failed", 0) for s in sums}
    rerouted = {s: sums[s].get("requests_rerouted", 0) for s in sums}
    ok &= failed["sim"] == failed["emu"] and rerouted["sim"] == rerouted["emu"]
    late = ""
    ev = run / "emu" / "events.parquet"
    if ev.is_file():
        e = pd.read_parquet(ev)
        applied = e[e.kind.isin(["link_params", "link_down", "link_up", "crash", "restart"])]
        if len(applied):
            late = (
                f"; applied changes: {len(applied)}, lateness median {applied.lateness_ms.median():.2f} ms, max "
                f"{applied.lateness_ms.max():.2f} ms"
            )
    print(
        f"{run.name}: " + ", ".join(cells) + f"; failed sim/emu {failed['sim']}/{failed['emu']}, re-routed "
        f"{rerouted['sim']}/{rerouted['emu']}" + late
    )
    by_window(run)
    return ok


def by_window(run: Path) -> None:
    """Mean TTFT per arrival window between the schedule's changes, and when each side's drafts declared a target
    dead after its crash (emulated / simulated)."""
    ev = {side: pd.read_parquet(run / side / "events.parquet") for side in ("emu", "sim")}
    if not all((run / side / "events.parquet").is_file() for side in ev):
        return
    changes = sorted(
        {float(t) for t in ev["sim"][~ev["sim"].kind.isin(["target_dead", "target_alive", "reroute", "fail"])].t_s}
    )
    edges = [0.0, *changes, float("inf")]
    ttft = {}
    for side in ("emu", "sim"):
        r = pd.read_parquet(run / side / "requests.parquet")
        ttft[side] = (
            ((r.first_token_s - r.arrival_s) * 1e3)
            .groupby(pd.cut(r.arrival_s, edges, right=False), observed=False)
            .mean()
        )
    cells = [
        f"[{iv.left:g}, {iv.right:g}) {ttft['emu'][iv]:.0f} / {ttft['sim'][iv]:.0f}"
        for iv in ttft["sim"].index
        if ttft["sim"][iv] == ttft["sim"][iv]
    ]
    print("  mean TTFT ms by arrival window (s), emu / sim: " + ", ".join(cells))
    req = {side: pd.read_parquet(run / side / "requests.parquet", columns=["request_id", "target"]) for side in ev}
    same = req["emu"].merge(req["sim"], on="request_id", suffixes=("_emu", "_sim"))
    if ev["sim"].kind.isin(["reroute"]).any() or ev["emu"].kind.isin(["reroute"]).any():
        print(f"  requests ending on the same target: {(same.target_emu == same.target_sim).sum()} of {len(same)}")
    crashes = ev["sim"][ev["sim"].kind == "crash"]
    for _, c in crashes.iterrows():
        det = {
            side: (e[(e.kind == "target_dead") & (e.detail == c.node) & (e.t_s >= c.t_s)].t_s - c.t_s).tolist()
            for side, e in ev.items()
        }
        if det["sim"] or det["emu"]:
            span = {k: f"{min(v):.2f}-{max(v):.2f} s" if v else "none" for k, v in det.items()}
            print(f"  {c.node} crashed at {c.t_s:g} s: declared dead after emu {span['emu']}, sim {span['sim']}")


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    ok = all([one(Path(a)) for a in argv])
    print("goals met" if ok else "goal missed")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
