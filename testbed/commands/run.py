"""The full experiment: resolve spec -> doctor checks -> build the network -> start targets then drafts with a
common start time -> replay -> collect -> teardown -> simulate the same resolved spec (by default with the
as-built, measured link delays; --sim-links configured for the configured ones; with real models also the
acceptance the run showed, --sim-acceptance configured for the configured model) -> compare -> report.

Writes the whole run directory (DESIGN.md "run directory contract") and logs every step to DIR/run.log.
Ctrl-C at any point tears down what was built, keeps partial results and still writes a report of what
completed. Exit status: 0 when the emulation completed, 1 when it was partial (a node died, a timeout),
130 when interrupted, 2 for bad input."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path

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
from testbed.rundir import SPREAD_FILE, prepare, update_meta, write_json, write_results
from testbed.workload import build_workload


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_topology(p)
    add_network(p, "mininet")
    p.add_argument(
        "--sim-links",
        choices=("measured", "configured"),
        default="measured",
        help="simulate the as-built network (measured path delays, default) or the configured one",
    )
    p.add_argument(
        "--sim-acceptance",
        choices=("as-built", "configured"),
        default="as-built",
        help="with real models (hf backend): simulate with the acceptance the emulation showed, replayed "
        "position by position (default), or with the configured acceptance model",
    )
    p.add_argument(
        "--sim-compute",
        choices=("as-built", "profile"),
        default="as-built",
        help="with real models (hf backend): simulate with the compute times the emulation measured (the profile's "
        "cost terms fitted on its own rounds and batches, testbed/calibrate/fromrun.py; the profile's prediction is "
        "simulated too, into sim-profile/, and shown next to it), or with the (checked / recalibrated) profile",
    )
    p.add_argument(
        "--profile-check",
        choices=("warn", "recalibrate", "off"),
        default="warn",
        help="real models: time a few draft steps / verify batches before the run and compare with the "
        "calibrated profile (testbed/commands/profilecheck.py); warn, or recalibrate for the simulation",
    )
    p.add_argument(
        "--sim-spread",
        type=int,
        default=0,
        metavar="K",
        help="also simulate K network seeds (jitter and loss draws differ, all else the same) into "
        "sim-spread.json: how far one run may differ from its simulation by the network's randomness alone "
        "(testbed/sim/spread.py; compare.json 'spread'); 0: none",
    )
    p.add_argument("--timeout-s", type=float, default=None, help="stop the emulation this long after its start")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _logger(out: Path) -> logging.Logger:
    log = logging.getLogger(f"testbed.run.{out}")
    log.setLevel(logging.INFO)
    log.propagate = False
    h = logging.FileHandler(out / "run.log")
    h.setFormatter(logging.Formatter("%(asctime)s.%(msecs)03d %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S"))
    log.addHandler(h)
    return log


def run(args: argparse.Namespace) -> int:
    from testbed.emu.emulator import make_emulator
    from testbed.emu.orchestrate import EmulateOptions, check_supported

    console = Console(stderr=True)
    scenario = scenario_from(args)
    check_supported(scenario, args.net)
    check_models(scenario)
    workload = build_workload(scenario)  # bad input stops here, before anything is built or written
    report_skipped(workload)
    # doctor: root, shaping backend, spec vs backend, engine and node image for docker
    em = make_emulator(
        scenario,
        args.net,
        shaping=args.shaping,
        runtime=args.runtime,
        build_image=args.build_image,
        **network_options(args),
    )
    net = em.net
    out = out_dir(args, scenario)
    out.mkdir(parents=True, exist_ok=True)
    log = _logger(out)
    log.info(
        "scenario %s from %s: %d requests on %d drafts / %d targets",
        scenario.spec.name,
        scenario.source,
        len(workload),
        len(scenario.drafts),
        len(scenario.targets),
    )
    steps: dict[str, str] = {}
    exit_code = 0
    t0 = time.monotonic()

    def step(name: str, status: str) -> None:
        steps[name] = status
        log.info("step %s: %s (%.1f s since start)", name, status, time.monotonic() - t0)
        console.print(f"[bold]{name}[/bold]: {status}")

    # 0. real models: does the calibrated profile still describe this machine? (before anything else computes)
    sim_base, check = scenario, None
    if args.profile_check != "off" and scenario.spec.models.backend == "hf":
        from testbed.commands.profilecheck import check_profiles, recalibrate

        check = check_profiles(scenario)
        for w in check["warnings"]:
            console.print(f"[yellow]warning: profile check: {w}[/yellow]")
        if check["warnings"] and args.profile_check == "recalibrate":
            sim_base, path = recalibrate(scenario, out, check["threads"])
            check["recalibrated"] = str(path)
        step(
            "profile check",
            "matches this machine"
            if check["matches"]
            else f"{len(check['warnings'])} timings off"
            + (", recalibrated for the simulation" if check.get("recalibrated") else ""),
        )

    # 1. emulation (network built and torn down by the context manager, also on errors and Ctrl-C)
    try:
        from testbed.emu.orchestrate import emulate, emulation_backends, record_teardown

        with em:
            step("network", f"built ({', '.join(f'{k}={v}' for k, v in em.backends.items())})")
            prepare(out, scenario, "run", workload, backends=emulation_backends(scenario, net, em.runtime))
            opts = EmulateOptions(timeout_s=args.timeout_s, progress=not args.quiet)
            result = emulate(scenario, net, out, out / "spec.yaml", opts, workload, runtime=em.runtime)
            exit_code = result.exit_code
            s = result.summary
            step(
                "emulation",
                "partial: " + str(s.get("partial_reason"))
                if s.get("partial")
                else f"completed {s['requests_completed']}/{s['requests_total']} requests",
            )
        record_teardown(out, net)
        step("teardown", "done")
    except KeyboardInterrupt:
        exit_code = 130
        step("emulation", "interrupted (Ctrl-C); network torn down, partial results kept")
    update_meta(out, {"run_steps": steps, **({"profile_check": check} if check else {})})

    # 2. simulation of the same spec (as built, or as configured)
    try:
        _simulate(
            sim_base,
            workload,
            out,
            args.sim_links,
            args.net,
            step,
            args.sim_acceptance,
            args.sim_compute,
            args.sim_spread,
        )
    except KeyboardInterrupt:
        exit_code = 130
        step("simulation", "interrupted")

    # 3. comparison and report, from the tables alone
    from analysis.report import build

    try:
        res = build(out, write_compare=True)
        step("report", str(res["report"]))
        dist = json.loads((out / "compare.json").read_text()).get("disturbance")
        if dist:
            update_meta(out, {"disturbance": dist})
            for w in dist["warnings"]:
                console.print(f"[yellow]warning: disturbed run: {w}[/yellow]")
    except (ValueError, FileNotFoundError) as e:
        step("report", f"failed: {e}")
        exit_code = exit_code or 1
    update_meta(out, {"run_steps": steps, "exit_code": exit_code})
    _print_comparison(out)
    return exit_code


def _simulate(
    scenario,
    workload,
    out: Path,
    sim_links: str,
    net_kind: str,
    step,
    sim_acceptance: str,
    sim_compute: str = "profile",
    spread: int = 0,
) -> None:
    from testbed.sim import simulate
    from testbed.sim.spread import network_spread
    from testbed.spec import resolve
    from testbed.spec.asbuilt import as_built_spec, loopback_spec

    links_path = out / "emu" / "links.json"
    for alt_dir in ("sim-configured", "sim-profile"):  # a previous run's, in a reused directory
        shutil.rmtree(out / alt_dir, ignore_errors=True)
    (out / SPREAD_FILE).unlink(missing_ok=True)
    sim_scenario = scenario
    configured = None  # the configured network, simulated too when the as-built one differs from it
    note = "configured links"
    if sim_links == "measured" and net_kind == "none":
        sim_scenario = resolve(loopback_spec(scenario), f"{scenario.source} (loopback)")
        note = "as-built loopback: links unshaped"
    elif sim_links == "measured" and links_path.is_file():
        report = json.loads(links_path.read_text())
        if report.get("paths"):
            spec, changes = as_built_spec(scenario, report)
            if changes:
                configured = scenario
            sim_scenario = resolve(spec, f"{scenario.source} (as built)")
            write_json(out / "sim_links.json", {"mode": "measured", "changes": changes})
            note = f"as-built links ({len(changes)} access links adjusted by the measured residual)"
    if sim_acceptance == "as-built" and scenario.spec.models.backend != "profiled":
        acc = _as_built_acceptance(sim_scenario, out)
        if acc is not None:

            def with_acc(sc):
                return resolve(
                    sc.spec.model_copy(update={"models": sc.spec.models.model_copy(update={"acceptance": acc})}),
                    f"{sc.source} (as-built acceptance)",
                )

            sim_scenario = with_acc(sim_scenario)
            configured = with_acc(configured) if configured is not None else None
            note += "; as-built acceptance (the emulation's rounds, replayed)"
    profile_scenario = None  # with as-built compute: the profile's prediction, shown next to it
    if sim_compute == "as-built" and scenario.spec.models.backend != "profiled":
        fitted = _as_built_compute(sim_scenario, out)
        if fitted is not None:
            profile_scenario, sim_scenario = sim_scenario, fitted
            note += "; as-built compute (cost terms fitted on the emulation's rounds and batches)"
    result = simulate(sim_scenario, workload, out=out / "sim")
    write_results(out / "sim", result.requests, result.rounds, result.batches, result.summary, result.schedule_events)
    if configured is not None:  # the prediction from the configured links, shown next to the as-built one
        alt = simulate(configured, workload)
        write_results(out / "sim-configured", alt.requests, alt.rounds, alt.batches, alt.summary, alt.schedule_events)
    if profile_scenario is not None:
        alt = simulate(profile_scenario, workload)
        write_results(out / "sim-profile", alt.requests, alt.rounds, alt.batches, alt.summary, alt.schedule_events)
    update_meta(out, {"sim": {"events": result.events, "wall_s": round(result.wall_s, 3), "links": note}})
    step("simulation", f"{result.summary['requests_completed']} requests, {note}")
    if spread > 0:
        doc = network_spread(sim_scenario, workload, spread)
        write_json(out / SPREAD_FILE, doc)
        step("simulation spread", doc.get("skipped") or f"{spread} network seeds")


def _as_built_compute(scenario, out: Path):
    """The scenario with each real-model profile's cost terms fitted on the emulation's own rounds and batches
    (testbed/calibrate/fromrun.py; out/sim_compute.json says what was fitted how well); None without tables."""
    import pandas as pd

    from testbed.calibrate.fromrun import profiles_from_run
    from testbed.spec import resolve

    paths = [out / "emu" / f"{t}.parquet" for t in ("rounds", "batches", "requests")]
    if not all(p.is_file() for p in paths):
        return None
    rounds, batches, reqs = (pd.read_parquet(p) for p in paths)
    if rounds.empty:
        return None
    fitted = profiles_from_run(scenario, rounds, batches, reqs)
    write_json(
        out / "sim_compute.json",
        {"mode": "as-built", "profiles": {n: {"fit": q, **p.model_dump()} for n, (p, q) in fitted.items()}},
    )
    spec = scenario.spec
    profiles = {**(spec.profiles or {}), **{n: p for n, (p, _) in fitted.items()}}
    return resolve(spec.model_copy(update={"profiles": profiles}), f"{scenario.source} (as-built compute)")


def _as_built_acceptance(scenario, out: Path):
    """The emulation's accepted counts as a recorded-acceptance file (out/sim_acceptance.npz) and the
    AcceptanceSpec that replays it; None when the emulation left no rounds."""
    import pandas as pd

    from testbed.acceptance import AcceptanceModel
    from testbed.acceptance_recorded import save_recorded, sequences_from_rounds

    rounds_p, req_p = out / "emu" / "rounds.parquet", out / "emu" / "requests.parquet"
    if not (rounds_p.is_file() and req_p.is_file()):
        return None
    rounds, reqs = pd.read_parquet(rounds_p), pd.read_parquet(req_p)
    if rounds.empty or reqs.empty:
        return None
    spec = scenario.spec
    model = AcceptanceModel(spec.models.acceptance)
    seqs, info = sequences_from_rounds(rounds, reqs, lambda rid, n: model.sequence(spec.seed, rid, n))
    path = save_recorded(
        out / "sim_acceptance.npz",
        seqs,
        {
            "source": "emu/rounds.parquet",
            **info,
            "untested positions": f"configured model ({spec.models.acceptance.kind})",
        },
    )
    write_json(out / "sim_acceptance.json", {"mode": "as-built", "path": str(path), **info})
    return spec.models.acceptance.model_copy(update={"kind": "recorded", "path": str(path.resolve())})


def _print_comparison(out: Path) -> None:
    p = out / "compare.json"
    if not p.is_file():
        return
    from rich.table import Table

    doc = json.loads(p.read_text())
    t = Table(title=f"emulated vs simulated: {out}")
    for c in ("metric", "sim", "emu", "error", "tolerance"):
        t.add_column(c, justify="left" if c == "metric" else "right")
    for r in doc.get("metrics", []):
        if r.get("tolerance") is None:
            continue
        err = r.get("rel_error")
        ok = r.get("pass")
        style = "green" if ok else ("red" if ok is False else "")
        t.add_row(
            r["metric"],
            _fmt(r.get("sim")),
            _fmt(r.get("emu")),
            f"[{style}]{err * 100:+.1f} %[/{style}]" if err is not None and style else "-",
            f"{r['tolerance'] * 100:.0f} %",
        )
    Console().print(t)


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4g}"
