"""Remove leftovers of crashed runs: namespaces (and the programs in them), delay lines, dsd-prefixed links
and bridges, cgroups. Only objects with the testbed's `dsd` prefix; runs whose owner process is alive are
left alone unless --all."""

from __future__ import annotations

import argparse
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--all", action="store_true", help="also remove objects of runs that are still alive")
    p.add_argument("--dry-run", action="store_true", help="only list what would be removed")


def run(args: argparse.Namespace) -> int:
    from testbed.emu.cleanup import cleanup, count, find_leftovers
    from testbed.emu.net.probe import ROOT_HINT, is_root

    if not is_root():
        print(f"cleanup: {ROOT_HINT}", file=sys.stderr)
        return 1
    found = find_leftovers(args.all) if args.dry_run else cleanup(args.all)
    n = count(found)
    for k, v in found.items():
        if v and k != "live_runs":
            print(f"  {k}: {', '.join(str(x) for x in v)}")
    if found["live_runs"]:
        print(f"left alone (owner alive): runs {', '.join(found['live_runs'])} (use --all to remove them too)")
    print(f"{'would remove' if args.dry_run else 'removed'} {n} leftover object(s)")
    return 0
