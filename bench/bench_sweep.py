"""Sweep throughput (`make bench-sweep`): the same simulation sweep serially (--workers 0, in this process) and on
a private local Ray cluster (--workers N), for light trials (~0.3 s of simulation) and heavier ones (~2 s).

Prints, per trial size and mode: trials per minute, the mean time a trial's own command took (wall_s of its
record), the per-trial overhead (wall time x parallel slots / trials - mean trial time: dispatch, result
transfer, records; Ray's start-up is reported apart) and the Ray / serial throughput ratio. Exit 1 when Ray is
not at least --goal times faster than serial on the heavy trials. Figures are for this machine in this run
(2 shared cores: compare ratios, not absolute times).

    python bench/bench_sweep.py [--workers 2] [--trials 24] [--json runs/bench-sweep.json]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
SIZES = {"light": 150, "heavy": 1500}  # synthetic requests per trial


def sweep_file(d: Path, n_requests: int, trials: int) -> Path:
    delays = list(range(1, trials + 1))
    p = d / f"bench-{n_requests}.yaml"
    p.write_text(
        f"name: bench-{n_requests}\ntopology: {ROOT / 'topologies/star-4edge.yaml'}\nset:\n"
        f"  workload.trace: synthetic\n  workload.synthetic.n_requests: {n_requests}\n"
        f"  workload.synthetic.rate_rps: 20\n  workload.duration_s: null\n"
        f"vary:\n  edges.0.link.delay_ms: {json.dumps(delays)}\n"
    )
    return p


def run_sweep(path: Path, out: Path, workers: int) -> tuple[float, float, pd.DataFrame, str]:
    from testbed.cli import main

    buf = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(buf):
        rc = main(
            ["sweep", str(path), "--out", str(out), "--workers", str(workers), "--no-report", "--progress-every", "1e9"]
        )
    wall = time.perf_counter() - t0
    text = buf.getvalue()
    if rc != 0:
        sys.exit(f"sweep failed (exit {rc}):\n{text}")
    # "this session: N in X s": the trials' part of the wall time, without Ray's start-up and the table
    session = float(text.split("this session: ")[1].split(" in ")[1].split(" s")[0])
    mode = text.split("running on: ")[1].split(" (started in")[0]
    return wall, session, pd.read_parquet(out / "trials.parquet"), mode


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--trials", type=int, default=24)
    ap.add_argument("--goal", type=float, default=1.3, help="Ray / serial throughput on heavy trials at least this")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    res: dict[str, dict] = {}
    try:
        for size, n in SIZES.items():
            f = sweep_file(tmp, n, a.trials)
            for mode, workers in (("serial", 0), ("ray", a.workers)):
                wall, session, df, how = run_sweep(f, tmp / f"{size}-{mode}", workers)
                slots = max(workers, 1)
                mean_trial = float(df["wall_s"].mean())
                res[f"{size}/{mode}"] = {
                    "runner": how,
                    "trials": len(df),
                    "requests_per_trial": n,
                    "wall_s": round(wall, 2),
                    "trials_wall_s": round(session, 2),
                    "startup_s": round(wall - session, 2),
                    "trials_per_min": round(60 * len(df) / session, 1),
                    "mean_trial_s": round(mean_trial, 3),
                    "overhead_per_trial_s": round(session * slots / len(df) - mean_trial, 3),
                }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{'case':<14}{'runner':<34}{'trials/min':>11}{'trial s':>9}{'overhead s':>11}{'start s':>9}")
    for k, r in res.items():
        print(
            f"{k:<14}{r['runner']:<34}{r['trials_per_min']:>11.1f}{r['mean_trial_s']:>9.3f}"
            f"{r['overhead_per_trial_s']:>11.3f}{r['startup_s']:>9.1f}"
        )
    ratios = {size: res[f"{size}/ray"]["trials_per_min"] / res[f"{size}/serial"]["trials_per_min"] for size in SIZES}
    for size, r in ratios.items():
        print(f"{size}: Ray / serial throughput = {r:.2f}x ({a.workers} workers)")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"cases": res, "ratios": ratios}, indent=2) + "\n")
    if ratios["heavy"] < a.goal:
        print(f"goal missed: Ray / serial on heavy trials {ratios['heavy']:.2f}x < {a.goal}x")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
