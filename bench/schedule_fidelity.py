"""Emulated vs simulated on topologies with a schedule (`make bench-schedule-fidelity` runs them first).

For each run directory (of `python -m testbed run`): throughput and mean TTFT / TPOT (goal 5 %), p99 TTFT / TPOT
(goal 15 %), requests failed and re-routed (goal: equal), and the lateness of the applied changes in
emu/events.parquet; then the mean TTFT per arrival window between the schedule's changes and, per crash, how long
after it each side's drafts declared the target dead; then each side's verify batches (`batch_view`: why the mean
batch size differs while the rounds see the same batches). Exits 1 when a goal is missed.

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
    cells = []
    for side in ("emu", "sim"):
        v = batch_view(pd.read_parquet(run / side / "batches.parquet"), pd.read_parquet(run / side / "rounds.parquet"))
        cells.append(
            f"{side} {v['batches']} batches, mean size {v['mean_size']:.2f} per batch / {v['round_size']:.2f} per "
            f"round; {v['idle_batches']} started on an idle target, mean size {v['idle_size']:.2f}, "
            f"{v['idle_start_ms']:.3f} ms after their first job arrived (median)"
        )
    print("  verify batches: " + "; ".join(cells))
    return ok


def batch_view(batches: pd.DataFrame, rounds: pd.DataFrame) -> dict[str, float]:
    """A side's verify batches: count, mean size per batch (summary's target_batch_size) and as a round sees it
    (mean of the batch_size column of the rounds table), and those started on an idle target (its first job
    arrived after the target's previous batch of any kind ended): count, mean size, median delay from that
    arrival to the start. The simulator starts such a batch at the first job's arrival event (size 1, delay 0);
    the target node reads every message already in its socket first (see the issue-12 batch note)."""
    b = batches.sort_values("start_s", kind="stable")
    prev_end = b.groupby("target", sort=False).end_s.shift(1, fill_value=float("-inf"))
    v = b[b.kind == "verify"]
    first = rounds.groupby(["target", "batch_start_s"]).target_recv_s.min()
    firsts = first.reindex(pd.MultiIndex.from_arrays([v.target, v.start_s])).to_numpy()
    idle = firsts > prev_end[v.index].to_numpy()
    nan = float("nan")
    return {
        "batches": len(v),
        "mean_size": float(v["size"].mean()) if len(v) else nan,
        "round_size": float(rounds.batch_size.mean()) if len(rounds) else nan,
        "idle_batches": int(idle.sum()),
        "idle_size": float(v["size"].to_numpy()[idle].mean()) if idle.any() else nan,
        "idle_start_ms": float(pd.Series(v.start_s.to_numpy()[idle] - firsts[idle]).median() * 1e3)
        if idle.any()
        else nan,
    }


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
