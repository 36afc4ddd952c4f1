"""Node programs run on emulated hosts: `python -m nodes.target` and `python -m nodes.draft`.

Both take the same arguments:

    --spec DIR/spec.yaml   the run's resolved spec (the same file the simulator reads)
    --node NAME            which node of the spec this process is
    --peers PEERS.json     {node name: "tcp://ip:port"}: where each target is reached (a target binds its
                           own entry; port 0 = any free port, reported in its ready file)
    --t0 T0                the run's start, an absolute CLOCK_MONOTONIC time in seconds, or file:PATH: the
                           orchestrator writes T0 into PATH once every node is ready (nodes read it then)
    --out NODE_DIR         where the node writes ready.json, progress.json, its tables and node.json

The protocol is in nodes/protocol.py and nodes/README.md. This module holds what both programs share:
argument parsing, loading, signals, counters of bad messages, and writing JSON files atomically.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from testbed import files

log = logging.getLogger("nodes")


def parse_args(prog: str, argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog)
    p.add_argument("--spec", required=True, help="resolved spec (DIR/spec.yaml)")
    p.add_argument("--node", required=True, help="node name in the spec")
    p.add_argument("--peers", required=True, help="JSON file: node -> tcp://ip:port")
    p.add_argument(
        "--t0",
        required=True,
        help="run start, absolute CLOCK_MONOTONIC seconds, or file:PATH (a file the orchestrator writes "
        "with that number once every node is ready)",
    )
    p.add_argument("--out", required=True, help="node output directory")
    p.add_argument(
        "--peer-timeout-s",
        type=float,
        default=None,
        help="a peer silent this long is dead (default: run.request_timeout_s)",
    )
    p.add_argument(
        "--heartbeat-s",
        type=float,
        default=None,
        help="heartbeat interval (default: testbed.faults.heartbeat_s: min(0.5, peer timeout / 4))",
    )
    p.add_argument(
        "--start-at",
        type=float,
        default=None,
        help="target: load everything, then wait until this CLOCK_MONOTONIC time before binding (a restart "
        "the emulator's schedule prepared at the crash, so it is up at its time, not after an interpreter start)",
    )
    p.add_argument("--log-level", default="INFO")
    return p.parse_args(argv)


def setup(prog: str, argv: list[str] | None):
    """Parse arguments, configure logging, load the scenario and peers: (args, scenario, peers)."""
    args = parse_args(prog, argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=getattr(logging, args.log_level.upper(), logging.INFO),
        format=f"%(asctime)s {args.node} %(levelname)s %(message)s",
    )
    from testbed.errors import InputError
    from testbed.spec import load_scenario

    try:
        scenario = load_scenario(args.spec)
    except InputError as e:
        raise SystemExit(f"{prog}: {e}")
    try:
        peers = json.loads(Path(args.peers).read_text())
    except (OSError, ValueError) as e:
        raise SystemExit(f"{prog}: cannot read peers file {args.peers}: {e}")
    if not isinstance(peers, dict) or not all(isinstance(v, str) for v in peers.values()):
        raise SystemExit(f"{prog}: {args.peers}: expected a JSON object node -> 'tcp://ip:port'")
    try:
        scenario.node(args.node)
    except KeyError:
        raise SystemExit(f"{prog}: node {args.node!r} is not in {args.spec}")
    from testbed.faults import heartbeat_s, peer_timeout_s

    if args.peer_timeout_s is None:
        args.peer_timeout_s = peer_timeout_s(scenario.spec.run)
    if args.heartbeat_s is None:
        args.heartbeat_s = heartbeat_s(args.peer_timeout_s)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    return args, scenario, peers


class StartTime:
    """T0 given as a number, or read (non-blocking) from the file of `--t0 file:PATH` once it exists."""

    def __init__(self, arg: str):
        self.path: Path | None = None
        self.value: float | None = None
        if arg.startswith("file:"):
            self.path = Path(arg[5:])
        else:
            try:
                self.value = float(arg)
            except ValueError:
                raise SystemExit(f"--t0 {arg!r}: expected seconds (CLOCK_MONOTONIC) or file:PATH")

    def get(self) -> float | None:
        if self.value is None and self.path is not None:
            try:
                self.value = float(self.path.read_text().strip())
            except (OSError, ValueError):
                return None
        return self.value


def check_endpoint(endpoint: str) -> str:
    """A bind address must be a concrete interface: never 0.0.0.0 / * (all host interfaces)."""
    if not endpoint.startswith("tcp://"):
        raise SystemExit(f"endpoint {endpoint!r}: expected tcp://ip:port")
    host = endpoint[6:].rpartition(":")[0]
    if host in ("", "*", "0.0.0.0", "[::]", "::"):
        raise SystemExit(f"endpoint {endpoint!r}: refusing to bind on all interfaces; give the node's own address")
    return endpoint


class StopFlag:
    """SIGTERM / SIGINT set `stop`; the node's loop sees it within one housekeeping interval."""

    def __init__(self) -> None:
        self.stop = False
        self.signal = 0
        signal.signal(signal.SIGTERM, self._handler)
        signal.signal(signal.SIGINT, self._handler)

    def _handler(self, signum: int, frame: Any) -> None:
        self.stop = True
        self.signal = signum


class BadMessages:
    """Counts invalid frames by reason; logs the first few of each reason, then every 1000th."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def add(self, reason: str, detail: str, peer: str) -> None:
        c = self.counts[reason] = self.counts[reason] + 1
        if c <= 5 or c % 1000 == 0:
            log.warning("bad message #%d (%s) from %s: %s", c, reason, peer, detail)

    def total(self) -> int:
        return sum(self.counts.values())


def write_json(path: Path, obj: Any) -> None:
    files.write_json(path, obj, indent=1)
