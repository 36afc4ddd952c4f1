"""Emulate a topology: run real draft and target node programs (profiled or real models) exchanging tokens
over ZeroMQ, on loopback (--net none) or in an emulated network (--net mininet), and write DIR/spec.yaml,
DIR/meta.json and DIR/emu/ (requests / rounds / batches parquet, summary.json, links.json, logs/).

Exit status: 0 when every node ran to the end; 1 when a node died or the run timed out (partial results
are written and marked "partial": true in summary.json); 130 when interrupted; 2 for bad input."""

from __future__ import annotations

import argparse

from rich.console import Console

from testbed.commands.common import (
    add_network,
    add_topology,
    check_models,
    network_options,
    out_dir,
    report_skipped,
    scenario_from,
)
from testbed.emu.emulator import make_emulator
from testbed.emu.orchestrate import EmulateOptions, check_supported, emulate, emulation_backends, record_teardown
from testbed.rundir import prepare, update_meta
from testbed.workload import build_workload


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_topology(p)
    add_network(p, "none")
    p.add_argument(
        "--on-crash",
        choices=("stop", "continue"),
        default="stop",
        help="stop: a node that dies stops the run (default); continue: the others carry on "
        "(fault experiments: targets free a dead draft's state, drafts fail a dead target's requests)",
    )
    p.add_argument(
        "--start-delay-s",
        type=float,
        default=None,
        help="seconds between starting the nodes and the run's start T0 (default: from node count and CPUs)",
    )
    p.add_argument(
        "--timeout-s",
        type=float,
        default=None,
        help="stop everything this long after T0 (default: last arrival + run.drain_timeout_s + 30)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar, no summary table")


def run(args: argparse.Namespace) -> int:
    scenario = scenario_from(args)
    check_supported(scenario, args.net)
    check_models(scenario)
    workload = build_workload(scenario)  # bad traces fail here, before anything starts
    report_skipped(workload)
    out = out_dir(args, scenario)
    # the one place backends are chosen
    em = make_emulator(
        scenario,
        args.net,
        shaping=args.shaping,
        runtime=args.runtime,
        build_image=args.build_image,
        **network_options(args),
    )
    with em:
        prepare(out, scenario, "emulate", workload, backends=emulation_backends(scenario, em.net, em.runtime))
        opts = EmulateOptions(
            on_crash=args.on_crash, start_delay_s=args.start_delay_s, timeout_s=args.timeout_s, progress=not args.quiet
        )
        result = emulate(scenario, em.net, out, out / "spec.yaml", opts, workload, runtime=em.runtime)
    record_teardown(out, em.net)
    s = result.summary
    update_meta(
        out,
        {
            "emu": {
                "partial": s["partial"],
                "partial_reason": s["partial_reason"],
                "crashed_nodes": s["crashed_nodes"],
                "exit_code": result.exit_code,
            }
        },
    )
    if not args.quiet:
        from testbed.commands.sim import print_summary

        print_summary(s, Console())
    if s["partial"]:
        print(f"partial results ({s['partial_reason']}) in {out}/emu")
    else:
        print(f"results in {out}/emu")
    return result.exit_code
