"""Scale benchmark of DSD-Sim (`make bench-scale`): scenario resolution of 1,000 and 10,000 edges x 100
verifiers, then whole simulations on stars of 10 / 100 / 1,000 edges (1 / 10 / 100 verifiers behind one
switch, the links of bench-32edge-4cloud) over 1 h of the Azure 2023 conversation trace, and with --day over
24 h built by time-tiling that hour (workload.tile_s = 86400; --rate-scale 2.2 makes it >= 1 M requests).
Each simulation is a `testbed sim` child process (its progress bar shows the ETA), streaming its tables;
printed per run: wall time, simulated requests per wall-second and the child's peak RSS.

Goals checked (exit 1 when one is missed): resolution of 1,000 x 100 in < 1 s; every run's peak RSS < 500 MB.
Figures are for this machine in this run (a shared, busy 2-core machine where the project is developed):
compare sizes and lengths with each other, not with absolute times elsewhere.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from testbed.sim.network import SimNetwork
from testbed.spec import TopologySpec, resolve
from testbed.spec.families import star

SIZES = ((10, 1), (100, 10), (1000, 100))
RESOLVE_GOAL_S = 1.0
RSS_GOAL_MB = 500.0


def resolve_time(edges: int, targets: int) -> float:
    spec = TopologySpec.model_validate(star(edges, targets))
    t0 = time.perf_counter()
    sc = resolve(spec, "<bench>")
    SimNetwork(sc, 1)  # what the simulator builds from it before the first event
    return time.perf_counter() - t0


def simulate(edges: int, targets: int, hours: int, rate_scale: float, work: Path, quiet: bool) -> dict:
    spec = star(edges, targets)
    spec.update(
        seed=1,
        policy={"window": "static:4", "routing": "jsq"},
        models={"acceptance": {"kind": "iid", "alpha": 0.8}},
        workload={
            "trace": "azure-conv",
            "duration_s": 3600,
            "rate_scale": rate_scale,
            **({"tile_s": hours * 3600.0} if hours > 1 else {}),
        },
    )
    topo = work / f"{spec['name']}-{hours}h.yaml"
    topo.write_text(yaml.safe_dump(spec, sort_keys=False))
    out = work / topo.stem
    cmd = [sys.executable, "-m", "testbed", "sim", str(topo), "--out", str(out)] + (["--quiet"] if quiet else [])
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"bench-scale: `{' '.join(cmd)}` failed")
    s = json.loads((out / "sim" / "summary.json").read_text())
    return {
        "edges": edges,
        "targets": targets,
        "hours": hours,
        "requests": s["requests_total"],
        "rounds": s["rounds"],
        "wall_s": round(wall, 1),
        "sim_requests_per_wall_s": round(s["requests_total"] / wall, 1),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "completed": s["requests_completed"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default=",".join(str(e) for e, _ in SIZES), help="edge counts to simulate (10,100,1000)")
    ap.add_argument("--day", action="store_true", help="also 24 h runs (time-tiled; hours on a small machine)")
    ap.add_argument("--rate-scale", type=float, default=1.0, help="arrival-rate multiplier of the trace")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")

    res = {f"{e}x{t}": round(resolve_time(e, t), 3) for e, t in ((1000, 100), (10_000, 100))}
    print(f"{'resolve + network (s)':>28}: " + ", ".join(f"{k} edges x verifiers {v}" for k, v in res.items()))
    wanted = {int(x) for x in args.sizes.split(",")}
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        for hours in (1, 24) if args.day else (1,):
            for edges, targets in SIZES:
                if edges not in wanted:
                    continue
                r = simulate(edges, targets, hours, args.rate_scale, Path(tmp), args.quiet)
                runs.append(r)
                print(
                    f"{edges:>5} edges x {targets:>3} verifiers, {hours:>2} h: {r['requests']:>9,} requests "
                    f"{r['rounds']:>11,} rounds  wall {r['wall_s']:>8.1f} s  {r['sim_requests_per_wall_s']:>8.1f} "
                    "req/wall-s"
                    f"  peak RSS {r['peak_rss_mb']:>6.1f} MB",
                    flush=True,
                )
    missed = []
    if res["1000x100"] >= RESOLVE_GOAL_S:
        missed.append(f"resolution of 1,000 x 100 took {res['1000x100']} s (goal < {RESOLVE_GOAL_S} s)")
    missed += [
        f"{r['edges']} edges, {r['hours']} h: peak RSS {r['peak_rss_mb']} MB (goal < {RSS_GOAL_MB:g} MB)"
        for r in runs
        if r["peak_rss_mb"] >= RSS_GOAL_MB
    ]
    if args.json:
        args.json.write_text(json.dumps({"resolve_s": res, "runs": runs, "missed": missed}, indent=2) + "\n")
    for m in missed:
        print(f"goal missed: {m}")
    sys.exit(1 if missed else 0)


if __name__ == "__main__":
    main()
