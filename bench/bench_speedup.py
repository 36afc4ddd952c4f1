"""DSD vs the target alone with real models, emulated and simulated (issue 16; `make bench-speedup`).

    python bench/bench_speedup.py [--topology topologies/hf-tiny-pair.yaml] [--delays 5 20 50] [--net mininet]
                                  [--awc] [--out runs/speedup] [--profile-check recalibrate|warn|off]

For each one-way delay (the edge's access link set so access + core = the delay), two `testbed run`s of the same
requests: `run.mode=distributed` (DSD with the topology's window) and `run.mode=autoregressive` (the target decodes
alone, tokens streamed back). Each run is emulated (real draft and target processes with the real models, in
Mininet unless --net none) and simulated with the pair's calibrated profile and recorded acceptance
(`--sim-compute profile --sim-acceptance configured`: a prediction from the calibration, not from the run).
Each run first checks the profile against this machine (`testbed run --profile-check`, default here
`recalibrate`: where a timing is more than 10 % off, the run's own operating points are calibrated again and the
simulation uses that; meta.json's `profile_check` says what was measured and whether it recalibrated).
Speedup = autoregressive mean TPOT / DSD mean TPOT (and the same for mean end-to-end latency), emulated and
simulated; the break-even one-way delay is where the emulated DSD TPOT, linear in the delay through the measured
points (least squares), reaches the autoregressive TPOT. With --awc, also the window policy AWC vs the topology's
static window at the first delay: the TPOT gain emulated and simulated.

Goals (exit 1 when missed): emulated speedup >= 1.3x at 5 ms; simulated speedup within 10 % of the emulated one at
every delay; with --awc, AWC's gain simulated and emulated within 5 points. Needs `make models` and `make draft`
and the pair's profile (see the topology's header). Timing-sensitive: run it on a quiet machine (or under the
measurement lock of a shared one) and record the load.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._experiment import run_experiment  # noqa: E402

SIM_FROM_CALIBRATION = ("--sim-compute", "profile", "--sim-acceptance", "configured")
GOAL_SPEEDUP_5MS = 1.3
GOAL_SIM_ERROR = 0.10
GOAL_AWC_POINTS = 5.0


def _value(by: dict, metric: str, side: str) -> float | None:
    v = (by.get(metric) or {}).get(side)
    return float(v) if v is not None else None


def break_even(delays: list[float], dsd_tpot: list[float], ar_tpot: float) -> float | None:
    """One-way delay where a least-squares line through (delay, DSD TPOT) reaches the autoregressive TPOT (None when
    DSD does not get slower with delay)."""
    n = len(delays)
    if n < 2:
        return None
    mx, my = sum(delays) / n, sum(dsd_tpot) / n
    sxx = sum((x - mx) ** 2 for x in delays)
    slope = sum((x - mx) * (y - my) for x, y in zip(delays, dsd_tpot)) / sxx if sxx else 0.0
    if slope <= 0:
        return None
    return mx + (ar_tpot - my) / slope


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--topology", type=Path, default=ROOT / "topologies/hf-tiny-pair.yaml")
    ap.add_argument("--delays", type=float, nargs="+", default=[5, 20, 50], help="one-way delays, ms")
    ap.add_argument("--core-ms", type=float, default=1.0, help="the core link's delay (the access link gets the rest)")
    ap.add_argument("--net", default="mininet", help="--net of testbed run (mininet: real emulated links)")
    ap.add_argument("--awc", action="store_true", help="also AWC vs the static window at the first delay")
    ap.add_argument("--out", type=Path, default=ROOT / "runs/speedup")
    ap.add_argument("--set", action="append", default=[], help="more --set overrides for every run")
    ap.add_argument(
        "--profile-check",
        choices=("recalibrate", "warn", "off"),
        default="recalibrate",
        help="testbed run --profile-check for every run: recalibrate (default) where the profile no longer fits",
    )
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    ar_emu: dict[float, float] = {}

    def one(name: str, sets: list[str]) -> dict | None:
        out = args.out / name
        print(f"== {name}", flush=True)
        extra = SIM_FROM_CALIBRATION + ("--profile-check", args.profile_check)
        by, r = run_experiment(args.topology, out, sets + args.set, args.net, extra)
        if by is None:
            return None
        return {
            side: {
                "tpot": _value(by, "tpot_ms.mean", side),
                "e2e": _value(by, "e2e_ms.mean", side),
                "ttft": _value(by, "ttft_ms.mean", side),
            }
            for side in ("emu", "sim")
        }

    failed = False
    for d in args.delays:
        link = [f"edges.0.link.delay_ms={d - args.core_ms:g}", f"links.0.delay_ms={args.core_ms:g}"]
        dsd = one(f"dsd-{d:g}ms", link + ["run.mode=distributed"])
        ar = one(f"ar-{d:g}ms", link + ["run.mode=autoregressive"])
        if dsd is None or ar is None:
            failed = True
            rows.append({"delay_ms": d, "error": "run failed"})
            continue
        row: dict = {"delay_ms": d, "dsd": dsd, "ar": ar}
        for side in ("emu", "sim"):
            row[f"speedup_{side}"] = ar[side]["tpot"] / dsd[side]["tpot"]
            row[f"speedup_e2e_{side}"] = ar[side]["e2e"] / dsd[side]["e2e"]
        row["sim_error"] = row["speedup_sim"] / row["speedup_emu"] - 1
        ar_emu[d] = ar["emu"]["tpot"]
        rows.append(row)
    ok_rows = [r for r in rows if "error" not in r]
    be = None
    if ok_rows:
        ar_mean = sum(ar_emu.values()) / len(ar_emu)
        be = break_even([r["delay_ms"] for r in ok_rows], [r["dsd"]["emu"]["tpot"] for r in ok_rows], ar_mean)
    awc = None
    if args.awc and args.delays:
        d = args.delays[0]
        link = [f"edges.0.link.delay_ms={d - args.core_ms:g}", f"links.0.delay_ms={args.core_ms:g}"]
        a = one(f"awc-{d:g}ms", link + ["run.mode=distributed", "policy.window=awc"])
        base = next((r for r in ok_rows if r["delay_ms"] == d), None)
        if a is None or base is None:
            failed = True
        else:
            awc = {side: 100 * (base["dsd"][side]["tpot"] / a[side]["tpot"] - 1) for side in ("emu", "sim")}
            awc["delay_ms"] = d
            awc["speedup"] = {side: base["ar"][side]["tpot"] / a[side]["tpot"] for side in ("emu", "sim")}
            awc["runs"] = a

    print(f"\n{'one-way':>8} {'AR TPOT':>9} {'DSD TPOT':>9} {'speedup':>8} {'sim':>8} {'sim err':>8} {'E2E x':>6}")
    for r in rows:
        if "error" in r:
            print(f"{r['delay_ms']:>6g}ms  run failed")
            continue
        print(
            f"{r['delay_ms']:>6g}ms {r['ar']['emu']['tpot']:>7.1f}ms {r['dsd']['emu']['tpot']:>7.1f}ms "
            f"{r['speedup_emu']:>7.2f}x {r['speedup_sim']:>7.2f}x {100 * r['sim_error']:>+7.1f}% "
            f"{r['speedup_e2e_emu']:>5.2f}x"
        )
    if be is None:
        be_text = "none (DSD does not get slower with delay)"
    elif be < 0:
        be_text = f"none: DSD is slower than the target alone at every delay (the fitted line crosses at {be:.0f} ms)"
    else:
        be_text = f"{be:.0f} ms"
    print("break-even one-way delay (emulated DSD TPOT reaches the target alone's): " + be_text)
    if awc:
        print(
            f"AWC vs the static window at {awc['delay_ms']:g} ms, TPOT gain: emulated {awc['emu']:+.1f} %, "
            f"simulated {awc['sim']:+.1f} % ({abs(awc['emu'] - awc['sim']):.1f} points apart); "
            f"AWC vs the target alone: emulated {awc['speedup']['emu']:.2f}x, simulated {awc['speedup']['sim']:.2f}x"
        )
    load = os.getloadavg()
    (args.out / "summary.json").write_text(
        json.dumps({"rows": rows, "break_even_ms": be, "awc": awc, "load_at_end": load}, indent=1) + "\n"
    )
    missed = []
    first = next((r for r in ok_rows if r["delay_ms"] == 5), None)
    if first is None or first["speedup_emu"] < GOAL_SPEEDUP_5MS:
        missed.append(f"emulated speedup at 5 ms >= {GOAL_SPEEDUP_5MS}x")
    if any(abs(r["sim_error"]) > GOAL_SIM_ERROR for r in ok_rows):
        missed.append(f"simulated speedup within {100 * GOAL_SIM_ERROR:.0f} % of emulated")
    if args.awc and (awc is None or abs(awc["emu"] - awc["sim"]) > GOAL_AWC_POINTS):
        missed.append(f"AWC gain sim vs emu within {GOAL_AWC_POINTS:g} points")
    print(f"summary in {args.out / 'summary.json'}; load average at the end {load[0]:.1f}")
    if failed or missed:
        print("goal missed: " + "; ".join(missed or ["a run failed"]))
        return 1
    print("goals met")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
