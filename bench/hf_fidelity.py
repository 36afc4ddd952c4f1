"""Real-model fidelity (`make hf-fidelity`): the hf backend emulated vs DSD-Sim.

    python bench/hf_fidelity.py [--edges 1 2] [--seeds 1 2] [--profile P.yaml] [--out runs/hf-fidelity]

1. Calibrates the shipped pair on this machine now (`testbed calibrate --threads 1 --max-ctx 256
   --record 0`, ~4 min) into OUT/profile.yaml, unless --profile gives one (e.g. the shipped
   testbed/profiles/hf-smollm2-135m-1t.yaml: a profile from another machine).
2. Runs `testbed run topologies/hf-pair.yaml --net none` for each number of edges and seed, with that
   profile on every node. The simulation replays the emulation's acceptance (`--sim-acceptance as-built`) and
   charges the compute times the emulation had (`--sim-compute as-built`: the profile's cost terms fitted on
   the run's own rounds and batches, testbed/calibrate/fromrun.py), so the comparison is of what is under test:
   scheduling, queues, messages, node-side costs. The profile's own prediction is simulated next to it
   (sim-profile/) and printed too: how far the machine's speed during the run was from the profile's.
3. Prints request throughput, mean TPOT and mean TTFT errors (emulated vs simulated; goal: throughput and
   TPOT within 10 %), the profile prediction's throughput / TPOT errors, and the compute interference measured
   in each run (analysis.compute_overlap), and writes OUT/summary.json. Exit status 1 when a run failed or
   throughput / mean TPOT (as-built compute) is outside 10 %.

Needs `make models`. Timing-sensitive: run it under the measurement lock of a shared machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._experiment import run_experiment  # noqa: E402

METRICS = {"request_throughput_rps": "throughput", "tpot_ms.mean": "TPOT", "ttft_ms.mean": "TTFT"}
GOAL = {"request_throughput_rps": 0.10, "tpot_ms.mean": 0.10}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--edges", type=int, nargs="+", default=[1, 2], help="edges sharing the verifier")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2], help="workload / run seeds")
    ap.add_argument("--profile", type=Path, default=None, help="use this profile instead of calibrating now")
    ap.add_argument("--out", type=Path, default=ROOT / "runs/hf-fidelity")
    args = ap.parse_args()
    from analysis.compute_overlap import overlap_stats

    args.out.mkdir(parents=True, exist_ok=True)
    profile = args.profile
    if profile is None:
        profile = args.out / "profile.yaml"
        print(f"== calibrating into {profile} (~4 min)", flush=True)
        t = time.monotonic()
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "testbed",
                "calibrate",
                "--threads",
                "1",
                "--max-ctx",
                "256",
                "--record",
                "0",
                "--out",
                str(profile),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        if r.returncode != 0:
            print(f"calibration failed (exit {r.returncode}): {r.stderr.strip()[-2000:]}", file=sys.stderr)
            return r.returncode
        print(r.stdout.strip(), f"\n   ({time.monotonic() - t:.0f} s)", flush=True)
    profile = profile.resolve()
    rows = []
    for seed in args.seeds:
        for edges in args.edges:
            out = args.out / f"e{edges}-s{seed}"
            print(f"== {edges} edge(s), seed {seed}", flush=True)
            by, r = run_experiment(
                ROOT / "topologies/hf-pair.yaml",
                out,
                [f"seed={seed}", f"edges.0.count={edges}", f"edges.0.profile={profile}", f"nodes.0.profile={profile}"],
                "none",
            )
            if by is None:
                rows.append({"edges": edges, "seed": seed, "error": r.returncode})
                continue
            row = {"edges": edges, "seed": seed, "exit": r.returncode}
            for m in METRICS:
                e = by.get(m, {})
                row[m] = {"sim": e.get("sim"), "emu": e.get("emu"), "rel_error": e.get("rel_error")}
            cp = (json.loads((out / "compare.json").read_text()).get("compute_predictions") or {}).get("profile")
            row["profile_prediction"] = {m: (cp or {}).get("rel_error", {}).get(m) for m in GOAL}
            ov = overlap_stats(out / "emu") or {}
            row["interference_verify"] = ov.get("verify_ratio")
            row["interference_draft"] = (ov.get("draft") or {}).get("ratio")
            rows.append(row)
    print(
        f"\n{'edges':>5} {'seed':>4} "
        + " ".join(f"{v:>11}" for v in METRICS.values())
        + "  profile: throughput / TPOT  interference verify / draft"
    )
    for row in rows:
        if "error" in row:
            print(f"{row['edges']:>5} {row['seed']:>4}  failed")
            continue
        cells = []
        for m in METRICS:
            e = row[m]["rel_error"]
            mark = "" if m not in GOAL or e is None else (" ✔" if abs(e) <= GOAL[m] else " ✘")
            cells.append(f"{'–' if e is None else f'{100 * e:+.1f} %'}{mark}".rjust(11))
        iv, idr = row["interference_verify"], row["interference_draft"]
        pp = " / ".join("–" if v is None else f"{100 * v:+.1f} %" for v in row["profile_prediction"].values())
        print(
            f"{row['edges']:>5} {row['seed']:>4} "
            + " ".join(cells)
            + f"  {pp:>26}"
            + f"  {'–' if iv is None else f'{iv:.2f}'} / {'–' if idr is None else f'{idr:.2f}'}"
        )
    (args.out / "summary.json").write_text(
        json.dumps({"profile": str(profile), "goal": GOAL, "runs": rows}, indent=1) + "\n"
    )
    print(f"\nsummary in {args.out / 'summary.json'}; goal: throughput and mean TPOT within 10 % (✔ / ✘)")
    missed = [
        row
        for row in rows
        if "error" in row or any(row[m]["rel_error"] is None or abs(row[m]["rel_error"]) > g for m, g in GOAL.items())
    ]
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
