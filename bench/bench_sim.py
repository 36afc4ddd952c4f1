"""Speed benchmark of DSD-Sim (`make bench`): replay the whole Azure 2023 conversation trace (19,366
requests) on a 32-edge / 4-target topology, its tables streamed to a temporary directory as `testbed sim` does;
print wall time and CPU time, simulated requests per wall-second, events per second and peak RSS. Figures are
for this machine in this run; compare ratios, not absolute times (on a busy machine, CPU time is the steadier
figure). It runs the compiled core when it is built and current (`make compile`; testbed/compiled.py), the pure
modules otherwise or with DSD_PURE=1; `compiled_core` says which."""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

from testbed import compiled
from testbed.sim import simulate
from testbed.spec import load_scenario
from testbed.workload import build_workload

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TOPOLOGY = str(ROOT / "topologies/bench-32edge-4cloud.yaml")
GOAL_WALL_S = 10.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--topology", default=DEFAULT_TOPOLOGY)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    sc = load_scenario(args.topology, args.overrides)
    t0 = time.perf_counter()
    wl = build_workload(sc)
    t_load = time.perf_counter() - t0
    cpu0 = time.process_time()
    with tempfile.TemporaryDirectory(prefix="bench-sim-") as tmp:
        r = simulate(sc, wl, out=Path(tmp))
    cpu = time.process_time() - cpu0
    wall = r.wall_s
    s = r.summary
    out = {
        "scenario": sc.spec.name,
        "compiled_core": compiled.active(),
        "requests": len(wl),
        "rounds": s["rounds"],
        "events": r.events,
        "trace_load_s": round(t_load, 3),
        "sim_wall_s": round(wall, 3),
        "sim_cpu_s": round(cpu, 3),
        "sim_requests_per_wall_s": round(len(wl) / wall, 1),
        "events_per_s": round(r.events / wall),
        "simulated_duration_s": round(s["duration_s"], 1),
        "speedup_vs_real_time": round(s["duration_s"] / wall, 1),
        "requests_completed": s["requests_completed"],
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    for k, v in out.items():
        print(f"{k:>28}: {v}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    met = wall < GOAL_WALL_S
    print(f"goal (issue 14): the whole trace in < {GOAL_WALL_S:.0f} s wall: {'met' if met else 'NOT met'}")
    if not met and args.topology == DEFAULT_TOPOLOGY and not args.overrides:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
