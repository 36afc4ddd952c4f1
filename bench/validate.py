"""Fidelity benchmark (`make validate`): every shipped topology at two load levels, emulated in the Mininet
network with the profiled backend and simulated on the as-built spec; prints the relative error of request
throughput, mean TTFT, mean TPOT (goal <= 5 %) and p99 TTFT / TPOT (goal <= 15 %), and writes
runs/validate/validate.json. Runs take real time (the trace is replayed in real time): 60 s of trace by default
(the README's table), about 1.5 minutes each. Exit status: 0 when every judged cell is within tolerance and every
run produced a comparison, 1 otherwise (the cells outside are listed)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._experiment import run_experiment  # noqa: E402

TOPOLOGIES = ["star-4edge", "star-16edge", "two-tier", "hetero-edge", "multi-cloud"]
LOADS = {"light": 0.5, "heavy": 1.0}  # workload.rate_scale on the Azure conversation trace
# judged against the tolerances of analysis/compare.py (compare.json's "tolerance" / "pass" per metric)
METRICS = ["request_throughput_rps", "ttft_ms.mean", "tpot_ms.mean", "ttft_ms.p99", "tpot_ms.p99"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--topologies", nargs="*", default=TOPOLOGIES)
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of trace per run")
    ap.add_argument("--net", default="mininet")
    ap.add_argument("--trace", default="azure-conv")
    ap.add_argument("--out", type=Path, default=ROOT / "runs/validate")
    args = ap.parse_args()
    rows = []
    for topo in args.topologies:
        for load, scale in LOADS.items():
            out = args.out / f"{topo}-{load}"
            print(f"== {topo} {load} (rate x{scale})", flush=True)
            by, r = run_experiment(
                ROOT / f"topologies/{topo}.yaml",
                out,
                [
                    f"workload.trace={args.trace}",
                    f"workload.duration_s={args.duration}",
                    f"workload.rate_scale={scale}",
                ],
                args.net,
            )
            if by is None:
                rows.append({"topology": topo, "load": load, "error": r.stderr[-500:]})
                continue
            row = {"topology": topo, "load": load, "exit": r.returncode}
            for key in METRICS:
                row[key] = by.get(key, {}).get("rel_error")
                row[f"{key}.ok"] = by.get(key, {}).get("pass") is True
            rows.append(row)
            print("   " + "  ".join(f"{k}={_pct(row[k])}" for k in METRICS), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "validate.json").write_text(json.dumps(rows, indent=2) + "\n")
    print()
    print(f"{'topology':<14}{'load':<7}" + "".join(f"{k:>24}" for k in METRICS))
    for row in rows:
        if "error" in row:
            print(f"{row['topology']:<14}{row['load']:<7}  failed")
            continue
        print(
            f"{row['topology']:<14}{row['load']:<7}"
            + "".join(f"{_pct(row[k]) + (' ok' if row[k + '.ok'] else ' !!'):>24}" for k in METRICS)
        )
    return verdict(rows)


def verdict(rows: list[dict]) -> int:
    """Exit status of the benchmark: 1 when a run failed or a judged metric is outside its tolerance."""
    failed = [f"{r['topology']} {r['load']}: run failed" for r in rows if "error" in r]
    failed += [
        f"{r['topology']} {r['load']}: {k} {_pct(r[k])}"
        for r in rows
        if "error" not in r
        for k in METRICS
        if not r[f"{k}.ok"]
    ]
    judged = sum(len(METRICS) for r in rows if "error" not in r)
    print(f"\n{judged - len([f for f in failed if 'run failed' not in f])} of {judged} judged cells within tolerance")
    for f in failed:
        print(f"  outside: {f}")
    return 1 if failed else 0


def _pct(e) -> str:
    return "-" if e is None else f"{e * 100:+.1f}%"


if __name__ == "__main__":
    raise SystemExit(main())
