"""Write the HTML report of a run directory, recomputed from its tables alone: DIR/report.html (self-contained,
figures embedded) with the figures also as DIR/plots/*.png, and DIR/compare.json. Works for sim-only, emu-only
and partial runs (the report says what completed)."""

from __future__ import annotations

import argparse
from pathlib import Path

from analysis.report import build


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=Path, help="run directory")
    p.add_argument("--no-compare-json", action="store_true", help="do not (re)write DIR/compare.json")


def run(args: argparse.Namespace) -> int:
    res = build(args.run, write_compare=not args.no_compare_json)
    print(
        f"report: {res['report']}  ({len(res['plots'])} plots in {args.run / 'plots'}, {res['seconds']['total']:.1f} s)"
    )
    return 0
