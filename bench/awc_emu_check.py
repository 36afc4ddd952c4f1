"""AWC validated in emulation (`make awc-emu`): the throughput gain of AWC and of static gamma = 2 / 8 over
static gamma = 4, simulated and emulated on the same resolved specs (same seed = same requests and
acceptance), per scenario, with 95 % CIs over seeds, and the difference in points (goal: emulated gains
within 5 points of the simulated ones). A selection of the `make awc-eval` grid, because emulation runs in
real time: by default a light and a saturating cell of each draft speed, 2 seeds, 40 requests per light run
and 120 per saturating run (4 cells x 4 policies x 2 seeds = 32 emulations, ~20 min on a 2-core machine); the
README's figures came from the larger selection FULL_CELLS x FULL_POLICIES x seeds 1 2 3 (`--full`, `make awc-emu
FULL=1`: 126 emulations, ~80 min). Exit status 1 when a judged gain is outside the
tolerance or a run failed.

Measurement only: every run is appended to DIR/result.json as it completes (`--resume` skips the runs already
there); the validation table and DIR/report.html come from result.json through `analysis.awc_report` (which
can redo them alone: `python -m analysis.awc_report DIR`). Run it under the measurement lock on a shared machine:

    flock /tmp/dsd-measure.lock python bench/awc_emu_check.py [--cells ...] [--seeds 1 2] [--n N] [--resume]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analysis import awc_report  # noqa: E402
from testbed.awc.evaluate import EmuExecutor, SimExecutor, cell_spec, grid  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
POLICIES = ("awc", "static:2", "static:4", "static:8")
CELLS = ("rtt5-saturating-slow-a0.8", "rtt100-saturating-fast-a0.8", "rtt20-light-slow-a0.8", "rtt100-light-fast-a0.8")
FULL_CELLS = CELLS + ("rtt20-saturating-slow-a0.6", "rtt100-saturating-fast-a0.95")
FULL_POLICIES = ("awc", "static:2", "static:4", "static:6", "static:8", "hf", "specdec")
N_BY_LOAD = {"light": 40, "saturating": 120}  # requests per run: 20 s resp. 7.5 s of Poisson arrivals


def _record(summary: dict) -> dict:
    return {
        "output_token_throughput_tps": summary.get("output_token_throughput_tps"),
        "goodput_rps": summary.get("goodput_rps"),
        "tpot_ms": (summary.get("tpot_ms") or {}).get("mean"),
        "ttft_ms": (summary.get("ttft_ms") or {}).get("mean"),
        "mean_gamma": summary.get("mean_gamma"),
        "duration_s": summary.get("duration_s"),
        "requests_completed": summary.get("requests_completed"),
        "requests_failed": summary.get("requests_failed"),
        "partial": bool(summary.get("partial", False)),
    }


def _commit() -> str | None:
    try:
        return (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.CalledProcessError):
        return None


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    ap.add_argument("--cells", nargs="+", default=list(CELLS), help="cells of the awc-eval grid")
    ap.add_argument("--policies", nargs="+", default=list(POLICIES), help="window policies (static:4 is the baseline)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2], help="seeds (replicates, paired across policies)")
    ap.add_argument(
        "--n",
        type=int,
        default=None,
        help=f"requests per run (default by load: {', '.join(f'{k} {v}' for k, v in N_BY_LOAD.items())})",
    )
    ap.add_argument("--net", default="mininet", choices=("mininet", "none"))
    ap.add_argument(
        "--tolerance",
        type=float,
        default=awc_report.TOLERANCE_POINTS,
        help="largest |emulated - simulated gain| that passes, in points",
    )
    ap.add_argument("--out", type=Path, default=ROOT / "runs/awc-emu-check")
    ap.add_argument("--resume", action="store_true", help="keep the runs already in DIR/result.json")
    ap.add_argument(
        "--full",
        action="store_true",
        help="the README's selection: 6 cells x 7 policies x seeds 1 2 3 (overrides --cells/--policies/--seeds)",
    )
    args = ap.parse_args()
    if args.full:
        args.cells, args.policies, args.seeds = list(FULL_CELLS), list(FULL_POLICIES), [1, 2, 3]
    cells = {c.name: c for c in grid()}
    unknown = [c for c in args.cells if c not in cells]
    if unknown:
        ap.error(f"unknown cells {unknown}; known: {', '.join(cells)}")
    if awc_report.BASELINE not in args.policies:
        ap.error(f"--policies must include the baseline {awc_report.BASELINE}")
    args.out.mkdir(parents=True, exist_ok=True)
    res_path = args.out / "result.json"
    old = json.loads(res_path.read_text()) if args.resume and res_path.is_file() else {}
    runs: list[dict] = list(old.get("runs") or [])
    done = {(r["cell"], r["policy"], r["seed"], r["executor"]) for r in runs}
    config = {
        "cells": args.cells,
        "policies": args.policies,
        "seeds": args.seeds,
        "net": args.net,
        "n_requests": {c: args.n or N_BY_LOAD[cells[c].load] for c in args.cells},
        "baseline": awc_report.BASELINE,
        "metric": awc_report.METRIC,
        "tolerance_points": args.tolerance,
        "topology": "star-4edge",
        "commit": _commit(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    prev = old.get("config") or {}
    if prev:  # --resume: the result covers the earlier invocations' cells, policies and seeds too
        for k in ("cells", "policies"):
            config[k] = list(dict.fromkeys(list(prev.get(k) or []) + config[k]))
        config["seeds"] = sorted(set(prev.get("seeds") or []) | set(config["seeds"]))
        config["n_requests"] = {**(prev.get("n_requests") or {}), **config["n_requests"]}
        config["started_at"] = prev.get("started_at", config["started_at"])
        config["commit"] = ", ".join(dict.fromkeys(c for c in (prev.get("commit"), config["commit"]) if c))
    executors = {"sim": SimExecutor(), "emu": EmuExecutor(net=args.net, keep=args.out / "runs")}
    t0 = time.perf_counter()
    jobs = [
        (s, c, p) for s in args.seeds for c in args.cells for p in args.policies
    ]  # seed outermost: whole seeds first
    for i, (seed, name, pol) in enumerate(jobs):
        cell = cells[name]
        spec = cell_spec(cell, pol, seed, config["n_requests"][name])
        for ex_name, ex in executors.items():
            if (name, pol, seed, ex_name) in done:
                continue
            t = time.perf_counter()
            try:
                s = ex(spec)
                rec, err = _record(s), None
                if s.get("backends"):
                    config["emu_backends"] = s["backends"]
            except Exception as e:  # noqa: BLE001 - one failed emulation is recorded, the others still run
                rec, err = {}, f"{type(e).__name__}: {e}"
            runs.append(
                {
                    "cell": name,
                    "rtt_ms": cell.rtt_ms,
                    "load": cell.load,
                    "draft": cell.draft,
                    "alpha": cell.alpha,
                    "policy": pol,
                    "seed": seed,
                    "executor": ex_name,
                    "n_requests": config["n_requests"][name],
                    **rec,
                    "error": err,
                    "wall_s": round(time.perf_counter() - t, 2),
                }
            )
            res_path.write_text(json.dumps({"config": config, "runs": runs}, indent=1) + "\n")
            tput = rec.get("output_token_throughput_tps")
            print(
                f"[{i + 1}/{len(jobs)} {time.perf_counter() - t0:6.0f} s] {name:<28}{pol:<10}s{seed} {ex_name}: "
                + (
                    f"tput {tput:.1f} tok/s, tpot {rec['tpot_ms']:.1f} ms, gamma {rec['mean_gamma']:.2f}, "
                    f"{time.perf_counter() - t:.0f} s"
                    if err is None and tput is not None
                    else f"FAILED {err}"
                ),
                flush=True,
            )
    config["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    config["wall_s"] = round(time.perf_counter() - t0 + float(prev.get("wall_s") or 0.0), 1)
    res_path.write_text(json.dumps({"config": config, "runs": runs}, indent=1) + "\n")
    out = awc_report.build(args.out)
    print(out["table"])
    print(f"-> {res_path}, {out['report']}")
    failed_runs = [r for r in runs if r.get("error")]
    if failed_runs:
        print(f"{len(failed_runs)} runs failed", file=sys.stderr)
    return 1 if out["verdict"]["failed"] or failed_runs or not out["verdict"]["judged"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
