"""AWC validated in emulation: the gain of AWC (and of the best static window) over static gamma = 4, simulated
and emulated on the same specs, and the difference in points (goal: emulated gains within 5 points of the
simulated ones). A small selection of the `make awc-eval` grid, one seed, because emulation runs in real time.

    python bench/awc_emu_check.py [--cells rtt20-light-slow rtt100-light-fast] [--net mininet] [--n 60]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from testbed.awc.evaluate import EmuExecutor, SimExecutor, cell_spec, grid

ROOT = Path(__file__).resolve().parent.parent
POLICIES = ("awc", "static:2", "static:4", "static:8")
METRICS = ("output_token_throughput_tps", "goodput_rps")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cells", nargs="*", default=["rtt20-light-slow", "rtt100-light-fast"])
    ap.add_argument("--net", default="mininet")
    ap.add_argument("--n", type=int, default=60, help="requests per run")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "runs/awc-emu-check")
    args = ap.parse_args()
    cells = {c.name: c for c in grid()}
    unknown = [c for c in args.cells if c not in cells]
    if unknown:
        ap.error(f"unknown cells {unknown}; known: {', '.join(cells)}")
    executors = {"sim": SimExecutor(), "emu": EmuExecutor(net=args.net, keep=args.out / "runs")}
    results: dict[str, dict] = {}
    for name in args.cells:
        for pol in POLICIES:
            spec = cell_spec(cells[name], pol, args.seed, args.n)
            for ex_name, ex in executors.items():
                s = ex(spec)
                results[f"{name}|{pol}|{ex_name}"] = {m: s.get(m) for m in METRICS} | {"tpot_ms": s["tpot_ms"]["mean"],
                                                                                       "mean_gamma": s.get("mean_gamma")}
                print(f"{name:<20} {pol:<9} {ex_name}: tput {s['output_token_throughput_tps']:.1f} tok/s, "
                      f"tpot {s['tpot_ms']['mean']:.2f} ms, mean gamma {s.get('mean_gamma')}", flush=True)
    rows = []
    print(f"\n{'cell':<20}{'policy':<10}{'sim gain vs static:4':>22}{'emu gain vs static:4':>22}{'diff (points)':>15}")
    for name in args.cells:
        for pol in POLICIES:
            if pol == "static:4":
                continue
            g = {}
            for ex_name in executors:
                base = results[f"{name}|static:4|{ex_name}"]["output_token_throughput_tps"]
                val = results[f"{name}|{pol}|{ex_name}"]["output_token_throughput_tps"]
                g[ex_name] = 100.0 * (val - base) / base
            rows.append({"cell": name, "policy": pol, "sim_gain_pct": g["sim"], "emu_gain_pct": g["emu"],
                         "diff_points": g["emu"] - g["sim"]})
            print(f"{name:<20}{pol:<10}{g['sim']:>+21.1f}%{g['emu']:>+21.1f}%{g['emu'] - g['sim']:>+15.1f}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "result.json").write_text(json.dumps({"runs": results, "gains": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
