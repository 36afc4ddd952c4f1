"""Compare the simulated and emulated results of a run, recomputed from its tables alone, and write DIR/compare.json;
or, with two directories, compare run A with run B (each run's emulated results, or its simulated ones when it has
none; e.g. two policies). Prints the metric table: values, relative error, tolerance, within or outside.

Exit status: 0 (also when metrics are outside tolerance, unless --strict: then 1); 2 for a bad or missing directory."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from analysis.compare import compare_run, compare_runs
from testbed.errors import InputError
from testbed.rundir import write_json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=Path, help="run directory (DIR/sim and DIR/emu); run A when B is given")
    p.add_argument("other", type=Path, nargs="?", default=None, help="run B: compare run A with run B")
    p.add_argument(
        "--json",
        type=Path,
        default=None,
        metavar="PATH",
        help="also write the comparison here (default for one run: DIR/compare.json; two runs: not written)",
    )
    p.add_argument("--no-write", action="store_true", help="do not write DIR/compare.json")
    p.add_argument("--strict", action="store_true", help="exit 1 when a metric is outside its tolerance")


def run(args: argparse.Namespace) -> int:
    if args.other is None:
        doc, _sim, _emu = compare_run(args.run)
        target = args.json or (None if args.no_write else args.run / "compare.json")
    else:
        doc, _a, _b = compare_runs(args.run, args.other)
        target = args.json
    if target is not None:
        if target.is_dir():
            raise InputError(str(target), "--json is a directory")
        write_json(target, doc)
    console = Console()
    print_comparison(doc, console)
    if target is not None:
        console.print(f"written to {target}")
    return 1 if args.strict and doc["verdict"]["failed"] else 0


def _f(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, int):
        return f"{v:,}"
    a = abs(v)
    return f"{v:,.0f}" if a >= 1000 else f"{v:.1f}" if a >= 100 else f"{v:.2f}" if a >= 1 or a == 0 else f"{v:.3f}"


def print_comparison(doc: dict[str, Any], console: Console) -> None:
    a, b = doc["columns"]
    title = f"{b} vs {a}" + (
        f"  ({doc['runs']['A']} -> {doc['runs']['B']})" if doc.get("runs") else f"  ({doc.get('run', '')})"
    )
    t = Table(title=title, show_header=True, header_style="bold")
    t.add_column("metric")
    t.add_column("unit", style="dim")
    t.add_column(a, justify="right")
    t.add_column(b, justify="right")
    t.add_column("rel. error", justify="right")
    t.add_column("tolerance", justify="right", style="dim")
    t.add_column("", justify="center")
    between_runs = doc["kind"] == "run-vs-run"  # two policies are expected to differ: not an error
    bad_style, bad_mark = ("yellow", "differs") if between_runs else ("bold red", "OUT")
    group = None
    for r in doc["metrics"]:
        if r["group"] != group:
            if group is not None:
                t.add_section()
            group = r["group"]
        err = "-" if r["rel_error"] is None else f"{r['rel_error'] * 100:+.1f} %"
        style = "" if r["pass"] is None else ("green" if r["pass"] else bad_style)
        mark = "" if r["pass"] is None else ("ok" if r["pass"] else bad_mark)
        tol = "-" if r["tolerance"] is None else f"±{r['tolerance'] * 100:g} %"
        t.add_row(
            r["label"],
            r["unit"],
            _f(r[a]),
            _f(r[b]),
            f"[{style}]{err}[/]" if style else err,
            tol,
            f"[{style}]{mark}[/]" if style else mark,
        )
    console.print(t)
    for n in doc["notes"]:
        console.print(f"[yellow]note:[/] {n}")
    v = doc["verdict"]
    if v["judged"]:
        colour = "green" if not v["failed"] else ("yellow" if between_runs else "red")
        console.print(
            f"[{colour}]{v['passed']} of {v['judged']} metrics "
            + ("equal within tolerance" if between_runs else "within tolerance")
            + "[/]"
            + (f"; {'differing' if between_runs else 'outside'}: {', '.join(v['failed'])}" if v["failed"] else "")
        )
