"""Options and helpers shared by several commands."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from testbed.errors import InputError
from testbed.spec import Scenario, load_scenario


def add_topology(p: argparse.ArgumentParser) -> None:
    p.add_argument("topology", help="topology YAML (e.g. topologies/star-4edge.yaml) or a run's spec.yaml")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a spec field, e.g. --set policy.window=hf --set workload.duration_s=30 (repeatable)",
    )
    p.add_argument("--out", type=Path, default=None, help="run directory (default: runs/<scenario>-<time>)")
    p.add_argument(
        "--skip-bad-rows",
        action="store_true",
        help="skip malformed trace rows (their count is printed and recorded in meta.json) instead of failing",
    )


def add_network(p: argparse.ArgumentParser, default: str) -> None:
    """--net / --shaping, shared by `emulate` (default none) and `run` (default mininet)."""
    p.add_argument(
        "--net",
        choices=("mininet", "none"),
        default=default,
        help="mininet: emulated hosts and shaped links (needs root); none: every node a local process on "
        f"127.0.0.1, no shaping (default: {default})",
    )
    p.add_argument(
        "--shaping", default="auto", help="link shaping backend for --net mininet: auto (probe), netem, userspace"
    )
    p.add_argument(
        "--runtime",
        choices=("process", "docker"),
        default=None,
        help="process: node programs as processes on their emulated hosts; docker: each node in its own "
        "container that is its emulated host (default: the spec's run.runtime, process)",
    )
    p.add_argument(
        "--no-image-build",
        dest="build_image",
        action="store_false",
        help="runtime docker: report a missing or stale node image (exit 2) instead of building it",
    )
    p.add_argument(
        "--second-host",
        default=None,
        metavar="NODE,NODE",
        help="--net mininet: place these nodes on a second emulated host that shares nothing with the first "
        "but a VXLAN tunnel (the one-machine step of docs/MULTIHOST.md)",
    )


def network_options(args: argparse.Namespace) -> dict:
    """make_network() options of --net / --shaping / --second-host."""
    if not args.second_host:
        return {}
    if args.net != "mininet":
        raise InputError("--second-host", "needs --net mininet")
    return {"second_host": tuple(n.strip() for n in args.second_host.split(",") if n.strip())}


def scenario_from(args: argparse.Namespace) -> Scenario:
    extra = ["workload.skip_bad_rows=true"] if getattr(args, "skip_bad_rows", False) else []
    return load_scenario(args.topology, [*args.overrides, *extra])


def report_skipped(workload) -> None:
    """Say how many trace rows were skipped or excluded: never silently."""
    tr = workload.trace
    if tr.skipped_rows:
        print(f"warning: skipped {tr.skipped_rows} malformed rows of {tr.source} (--skip-bad-rows)", file=sys.stderr)
    if getattr(tr, "excluded_rows", 0):
        print(f"note: excluded {tr.excluded_rows} failed requests (0 output tokens) of {tr.source}", file=sys.stderr)


def out_dir(args: argparse.Namespace, scenario: Scenario) -> Path:
    if args.out is not None:
        out = args.out
    else:
        out = Path("runs") / f"{scenario.spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if out.exists() and not out.is_dir():
        raise InputError(str(out), "--out exists and is not a directory")
    return out


def uncalibrated_nodes(scenario: Scenario) -> list[str]:
    """Real-model nodes whose compute profile was not calibrated (testbed.compute.is_calibrated): the simulator
    would time them with a made-up profile."""
    from testbed.compute import is_calibrated

    if scenario.spec.models.backend == "profiled":
        return []
    profiles = scenario.spec.profiles
    return [
        n.name
        for n in scenario.nodes
        if n.role in ("draft", "target") and not (n.profile in profiles and is_calibrated(profiles[n.profile]))
    ]


def check_models(scenario: Scenario) -> None:
    """hf backend: every draft/target model pair loads, fits in memory and shares a tokenizer, before anything
    is built (the shipped models are materialised here, so the slow first load happens now). Warns when a node's
    compute profile was not calibrated for real models."""
    if scenario.spec.models.backend != "hf":
        return
    odd = uncalibrated_nodes(scenario)
    if odd:
        names = ", ".join(odd[:4]) + (f" and {len(odd) - 4} more" if len(odd) > 4 else "")
        print(
            f"warning: {names}: real models, but compute profiles that were not calibrated for them "
            f"({', '.join(sorted({scenario.node(n).profile for n in odd}))}); the simulated side of a comparison "
            "will not describe this emulation. `python -m testbed calibrate` writes one (see topologies/hf-pair.yaml).",
            file=sys.stderr,
        )
    from nodes.models import check_pair

    # resolve() filled every draft's and target's model; a fused target drafts with models.draft
    pairs = {(scenario.node(d).model, scenario.node(t).model) for d in scenario.drafts for t in scenario.reachable[d]}
    if scenario.spec.run.mode == "fused":
        pairs |= {(scenario.spec.models.draft, scenario.node(t).model) for t in scenario.targets}
    for draft, target in sorted(pairs):
        check_pair(draft, target)
    _check_memory_limits(scenario)


def _check_memory_limits(scenario: Scenario) -> None:
    """Real models under a container memory limit (memory_mb): the limit must hold the program and its model."""
    from nodes.models import param_count, resolve
    from testbed.emu.runtime.docker import NODE_BASE_MB

    for n in scenario.nodes:
        if n.role == "switch" or n.memory_mb is None or not n.model:
            continue
        params = param_count(resolve(n.model, materialise=False)) or 0
        need = NODE_BASE_MB + int(params * 4 / 1e6)  # float32 weights once loaded
        if n.memory_mb < need:
            raise InputError(
                f"{scenario.source}: node {n.name}: memory_mb",
                f"{n.memory_mb} MB is below what the node needs with model {n.model} (about {need} MB); "
                "raise memory_mb or drop it",
            )
