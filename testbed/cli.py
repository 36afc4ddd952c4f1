"""`python -m testbed <command>`: the one place that wires spec, simulator, emulator and analysis together.

Each command lives in `testbed/commands/<name>.py` with `add_arguments(parser)` and `run(args) -> int`.
Bad input (InputError) prints one line and exits 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from testbed.errors import EmulationError, InputError

COMMANDS = {
    "sim": "simulate a topology with DSD-Sim",
    "emulate": "run real draft/target nodes (on loopback with --net none, or in an emulated network)",
    "run": "emulate + simulate + compare + report: the full experiment",
    "compare": "compare simulated and emulated results of a run (or two runs)",
    "report": "write the HTML report of a run directory",
    "doctor": "check what this machine can emulate and which backends a run would use",
    "cleanup": "remove leftovers (namespaces, links, rules, processes) of crashed runs",
    "calibrate": "measure real models and fit a compute profile",
    "distill": "distil a small draft model from the target's outputs (CPU, offline)",
    "awc": "train / evaluate the Adaptive Window Control policy",
    "sweep": "grid / random search over spec fields, topologies, policies and seeds, on Ray",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m testbed", description="DSD testbed: emulate and simulate distributed speculative decoding"
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        try:
            mod = importlib.import_module(f"testbed.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"testbed.commands.{name}":
                continue  # not part of this version
            raise
        sp = sub.add_parser(name, help=help_text, description=(mod.__doc__ or help_text).strip())
        mod.add_arguments(sp)
        sp.set_defaults(_run=mod.run)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except (InputError, EmulationError) as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
