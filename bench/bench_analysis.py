"""The analysis at a million requests (`make bench-analysis`): `testbed compare` and `testbed report` on a run
directory of >= 1 M requests per side, each timed as a child process, with its peak RSS.

The run directory is BUILT BY TILING, not simulated: simulating a million requests takes hours on this machine.
The whole Azure 2023 conversation trace (19,366 requests) is simulated on bench-32edge-4cloud twice, seed 1 as
sim/ and seed 2 as emu/ (a simulation standing in for an emulation: same tables, same schema); then each side's
requests / rounds / batches are repeated TILES times (default: enough for >= 1,000,000 requests), copy k shifted
by k x the period (the longer base run's duration, rounded up to a second: copies do not overlap, so each target
still runs one batch at a time) with request ids renumbered (id + k x the base's id count), written in row groups
of the simulator's chunk size (testbed.sim.run.CHUNK_ROWS) as a streamed simulation writes them. Each side's
summary.json is computed from the tiled tables (testbed.metrics.SummaryBuilder, as the simulator does). The copies
repeat the same requests: this measures the analysis's time and memory at a million rows, not a day of varied
traffic. The built directory is kept and reused (DIR/run/.tiled.json says from what).

Printed per command: wall time, peak RSS of the child (ru_maxrss), the load average before it. Goals (exit 1 when
one is missed): each command < 60 s and < 500 MB. Figures are for this machine when it ran (a shared 2-core
machine where several agents work): the load average is printed next to them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from testbed.metrics import (  # noqa: E402
    DEFAULT_SLO_TPOT_MS,
    DEFAULT_SLO_TTFT_MS,
    SUMMARY_COLUMNS,
    SummaryBuilder,
)
from testbed.sim.run import CHUNK_ROWS as SIM_CHUNK_ROWS  # noqa: E402
from testbed.tables import TABLES  # noqa: E402

TOPOLOGY = "topologies/bench-32edge-4cloud.yaml"
WALL_GOAL_S = 60.0
RSS_GOAL_MB = 500.0
MIN_REQUESTS = 1_000_000
TIME_COLUMNS = {
    name: [c for c, (t, _) in cols.items() if c.endswith("_s") and t == "float64"] for name, cols in TABLES.items()
}


def simulate_base(out: Path, seed: int) -> Path:
    """One whole-trace simulation (kept: rerunning the bench reuses it)."""
    if (out / "sim" / "summary.json").is_file():
        return out / "sim"
    cmd = [sys.executable, "-m", "testbed", "sim", TOPOLOGY, "--out", str(out), "--quiet", "--set", f"seed={seed}"]
    print(f"simulating the base run: {' '.join(cmd[2:])}", flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)
    return out / "sim"


def _duration(side: Path) -> float:
    return float(json.loads((side / "summary.json").read_text())["duration_s"])


def _id_count(side: Path) -> int:
    ids = pq.read_table(side / "requests.parquet", columns=["request_id"])["request_id"]
    return int(pc.max(ids).as_py()) + 1 if len(ids) else 0


def tile_side(src: Path, dst: Path, tiles: int, period: float, id_stride: int) -> dict:
    """dst/ = src/'s tables repeated `tiles` times (times + k * period, request ids + k * id_stride), with its
    summary.json computed from them; returns the summary."""
    dst.mkdir(parents=True, exist_ok=True)
    recorded = json.loads((src / "summary.json").read_text()) if (src / "summary.json").is_file() else {}
    slo = recorded.get("slo") or {}
    slo_ttft, slo_tpot = float(slo.get("ttft_ms", DEFAULT_SLO_TTFT_MS)), float(slo.get("tpot_ms", DEFAULT_SLO_TPOT_MS))
    builder = SummaryBuilder()
    for name in TABLES:
        base = pq.read_table(src / f"{name}.parquet")
        tmp = dst / f".{name}.parquet.tmp"
        with pq.ParquetWriter(tmp, base.schema) as w:
            for k in range(tiles):
                t = base
                for c in TIME_COLUMNS[name] + (["request_id"] if "request_id" in base.column_names else []):
                    shift = k * (id_stride if c == "request_id" else period)
                    t = t.set_column(t.column_names.index(c), c, pc.add(t[c], pa.scalar(shift, t.schema.field(c).type)))
                w.write_table(t, row_group_size=SIM_CHUNK_ROWS)
                builder.add(name, t.select(SUMMARY_COLUMNS[name]).to_pandas(), slo_ttft, slo_tpot)
        tmp.replace(dst / f"{name}.parquet")
    summary = builder.result(slo_ttft, slo_tpot)
    summary["tiled"] = {"from": str(src), "tiles": tiles, "period_s": period, "id_stride": id_stride}
    (dst / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def build_run(run: Path, sim: Path, emu: Path, tiles: int) -> dict:
    """run/sim and run/emu tiled from the base sides (reused when run/.tiled.json records the same build)."""
    period = float(math.ceil(max(_duration(sim), _duration(emu))))
    stride = max(_id_count(sim), _id_count(emu))
    want = {"sim": str(sim), "emu": str(emu), "tiles": tiles, "period_s": period, "id_stride": stride}
    marker = run / ".tiled.json"
    if marker.is_file() and json.loads(marker.read_text()).get("build") == want:
        return json.loads(marker.read_text())
    if run.exists():
        shutil.rmtree(run)
    run.mkdir(parents=True)
    t0 = time.perf_counter()
    sides = {n: tile_side(src, run / n, tiles, period, stride) for n, src in (("sim", sim), ("emu", emu))}
    base_run = sim.parent
    for f in ("spec.yaml", "meta.json"):
        if (base_run / f).is_file():
            shutil.copy(base_run / f, run / f)
    if (run / "meta.json").is_file():
        meta = json.loads((run / "meta.json").read_text())
        meta.setdefault("workload", {})["requests"] = sides["sim"]["requests_total"]
        meta["tiled"] = {**want, "note": "built by bench/bench_analysis.py from two whole-trace simulations"}
        (run / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    doc = {
        "build": want,
        "requests": {n: s["requests_total"] for n, s in sides.items()},
        "rounds": {n: s["rounds"] for n, s in sides.items()},
        "batches": {n: pq.ParquetFile(run / n / "batches.parquet").metadata.num_rows for n in sides},
        "build_s": round(time.perf_counter() - t0, 1),
    }
    marker.write_text(json.dumps(doc, indent=2) + "\n")
    return doc


def timed(cmd: list[str], log: Path) -> dict:
    """Run a child; its wall time, peak RSS and exit status, with the load average before it."""
    load = os.getloadavg()
    t0 = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    return {
        "command": " ".join(cmd[2:]),
        "wall_s": round(time.perf_counter() - t0, 1),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "exit": os.waitstatus_to_exitcode(status),
        "load_before": [round(x, 2) for x in load],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=Path, default=ROOT / "runs" / "bench-analysis", help="where runs are built and kept")
    ap.add_argument("--tiles", type=int, default=None, help="copies of each base run (default: >= 1 M requests)")
    ap.add_argument("--base-sim", type=Path, help="a sim/ directory to tile as sim/ (default: simulated, seed 1)")
    ap.add_argument("--base-emu", type=Path, help="a sim/ or emu/ directory to tile as emu/ (default: seed 2)")
    ap.add_argument("--build-only", action="store_true", help="build (or check) the tiled run, time nothing")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    sim = args.base_sim or simulate_base(args.dir / "base-seed1", 1)
    emu = args.base_emu or simulate_base(args.dir / "base-seed2", 2)
    n_base = len(pq.read_table(sim / "requests.parquet", columns=["request_id"]))
    tiles = args.tiles or math.ceil(MIN_REQUESTS / max(1, n_base))
    run = args.dir / "run"
    built = build_run(run, sim, emu, tiles)
    b = built["build"]
    print(
        f"run {run}: TILED from two whole-trace simulations ({sim}, {emu}): {b['tiles']} copies, period "
        f"{b['period_s']:g} s; requests sim {built['requests']['sim']:,} / emu {built['requests']['emu']:,}, rounds "
        f"{built['rounds']['sim']:,} / {built['rounds']['emu']:,}, batches {built['batches']['sim']:,} / "
        f"{built['batches']['emu']:,}",
        flush=True,
    )
    if args.build_only:
        return
    res = []
    for what in ("compare", "report"):
        r = timed([sys.executable, "-m", "testbed", what, str(run)], args.dir / f"{what}.log")
        res.append(r)
        print(
            f"testbed {what:<8} wall {r['wall_s']:>6.1f} s  CPU {r['cpu_s']:>6.1f} s  "
            f"peak RSS {r['peak_rss_mb']:>6.1f} MB  exit {r['exit']}  "
            f"(load average before: {' '.join(map(str, r['load_before']))})",
            flush=True,
        )
    missed = [f"{r['command']}: exit {r['exit']} (see {args.dir}/*.log)" for r in res if r["exit"] != 0]
    missed += [f"{r['command']}: {r['wall_s']} s (goal < {WALL_GOAL_S:g} s)" for r in res if r["wall_s"] >= WALL_GOAL_S]
    missed += [
        f"{r['command']}: peak RSS {r['peak_rss_mb']} MB (goal < {RSS_GOAL_MB:g} MB)"
        for r in res
        if r["peak_rss_mb"] >= RSS_GOAL_MB
    ]
    if args.json:
        args.json.write_text(json.dumps({"run": built, "commands": res, "missed": missed}, indent=2) + "\n")
    for m in missed:
        print(f"goal missed: {m}")
    sys.exit(1 if missed else 0)


if __name__ == "__main__":
    main()
