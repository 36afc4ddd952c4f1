"""Check what this machine can emulate (root, netem, htb/tbf, NFQUEUE, mininet, bridges, docker, cgroups)
and which backends a run would use."""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the findings as JSON")


def run(args: argparse.Namespace) -> int:
    from testbed.emu.doctor import diagnose
    from testbed.emu.net.probe import ROOT_HINT, is_root

    if not is_root():
        print(f"doctor: {ROOT_HINT}", file=sys.stderr)
        return 1
    d = diagnose()
    if args.json:
        print(
            json.dumps(
                {
                    "checks": {k: {"ok": v[0], "detail": v[1]} for k, v in d["checks"].items()},
                    "would_use": d["would_use"],
                },
                indent=1,
            )
        )
        return 0
    for name, (ok, detail) in d["checks"].items():
        print(f"  {'ok ' if ok else 'no '} {name:<20} {detail}")
    print("a run would use: " + ", ".join(f"{k}={v}" for k, v in d["would_use"].items()))
    return 0
