"""Simulate a topology with DSD-Sim and write DIR/spec.yaml, DIR/meta.json and DIR/sim/
(requests.parquet, rounds.parquet, batches.parquet, summary.json)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console

from testbed.errors import InputError
from testbed.commands.common import add_topology, out_dir, report_skipped, scenario_from
from testbed.progress import JobProgress
from testbed.rundir import prepare, update_meta, write_results
from testbed.sim import simulate
from testbed.workload import build_workload


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_topology(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar, no summary table")
    p.add_argument(
        "--as-built",
        type=Path,
        metavar="LINKS_JSON",
        default=None,
        help="simulate the network an emulation measured (a run's emu/links.json): path-RTT residuals "
        "are added to the access links, as `testbed run` does",
    )


def run(args: argparse.Namespace) -> int:
    scenario = scenario_from(args)
    if args.as_built is not None:
        scenario = _as_built(scenario, args.as_built)
    workload = build_workload(scenario)  # bad traces fail here, before anything is written
    report_skipped(workload)
    out = out_dir(args, scenario)
    prepare(out, scenario, "sim", workload, backends={"executor": "dsd-sim"})
    if args.quiet:
        result = simulate(scenario, workload, out=out / "sim")
    else:
        with JobProgress("simulating", len(workload)) as bar:
            result = simulate(scenario, workload, progress=lambda done, total: bar.update(done), out=out / "sim")
    write_results(out / "sim", result.requests, result.rounds, result.batches, result.summary, result.schedule_events)
    update_meta(out, {"sim": {"events": result.events, "wall_s": round(result.wall_s, 3)}})
    if not args.quiet:
        print_summary(result.summary, Console())
    print(f"results in {out}/sim")
    return 0


def _as_built(scenario, links_json: Path):
    from testbed.spec import resolve
    from testbed.spec.asbuilt import as_built_spec

    try:
        report = json.loads(links_json.read_text())
    except (OSError, ValueError) as e:
        raise InputError(str(links_json), f"cannot read the as-built link report: {e}") from None
    if not report.get("paths"):
        raise InputError(str(links_json), "no measured paths in this link report")
    spec, _ = as_built_spec(scenario, report)
    return resolve(spec, f"{scenario.source} (as built from {links_json})")


def print_summary(s: dict, console: Console) -> None:
    from rich.table import Table

    t = Table(title="summary", show_header=True)
    t.add_column("metric")
    t.add_column("value", justify="right")
    t.add_row(
        "requests completed / failed / unfinished",
        f"{s['requests_completed']} / {s['requests_failed']} / {s['requests_unfinished']}",
    )
    t.add_row("duration (s)", f"{s['duration_s']:.2f}")
    for k in (
        "request_throughput_rps",
        "output_token_throughput_tps",
        "goodput_rps",
        "acceptance_rate",
        "tokens_per_round",
        "mean_gamma",
        "target_batch_size",
    ):
        v = s.get(k)
        t.add_row(k, "-" if v is None else f"{v:.3f}")
    for k in ("ttft_ms", "tpot_ms", "e2e_ms"):
        d = s[k]
        t.add_row(
            f"{k} mean / p50 / p99", "-" if d["mean"] is None else f"{d['mean']:.1f} / {d['p50']:.1f} / {d['p99']:.1f}"
        )
    console.print(t)
