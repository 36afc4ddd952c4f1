"""Scratch network namespaces for probing and calibration: `dsdprobe<pid><x>`, removed on exit (and by cleanup)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

MEASURE = str(Path(__file__).with_name("measure.py"))


def run(argv: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, **kw)


class ScratchNs:
    """One named namespace with loopback up."""

    def __init__(self, suffix: str = ""):
        self.name = f"dsdprobe{os.getpid()}{suffix}"

    def __enter__(self) -> "ScratchNs":
        r = run(["ip", "netns", "add", self.name])
        if r.returncode != 0:
            raise RuntimeError(f"ip netns add {self.name}: {r.stderr.strip()}")
        run(["ip", "-n", self.name, "link", "set", "lo", "up"])
        return self

    def exec_argv(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, argv: list[str], **kw) -> subprocess.CompletedProcess:
        return run(self.exec_argv(argv), **kw)

    def __exit__(self, *exc) -> None:
        run(["ip", "netns", "del", self.name])


class ScratchPair:
    """Two namespaces joined by a veth: a (10.77.255.1) <-> b (10.77.255.2)."""

    addr_a = "10.77.255.1"
    addr_b = "10.77.255.2"

    def __enter__(self) -> "ScratchPair":
        self.a = ScratchNs("a").__enter__()
        try:
            self.b = ScratchNs("b").__enter__()
        except BaseException:
            self.a.__exit__()
            raise
        self.procs: list[subprocess.Popen] = []
        try:
            for cmd in (
                [
                    "ip",
                    "link",
                    "add",
                    "eth0",
                    "netns",
                    self.a.name,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "eth0",
                    "netns",
                    self.b.name,
                ],
                ["ip", "-n", self.a.name, "addr", "add", f"{self.addr_a}/24", "dev", "eth0"],
                ["ip", "-n", self.b.name, "addr", "add", f"{self.addr_b}/24", "dev", "eth0"],
                ["ip", "-n", self.a.name, "link", "set", "eth0", "up"],
                ["ip", "-n", self.b.name, "link", "set", "eth0", "up"],
            ):
                r = run(cmd)
                if r.returncode != 0:
                    raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip()}")
        except BaseException:
            self.__exit__()
            raise
        return self

    def popen_b(self, argv: list[str], **kw) -> subprocess.Popen:
        p = subprocess.Popen(self.b.exec_argv(argv), **kw)
        self.procs.append(p)
        return p

    def run_b(self, argv: list[str]) -> None:
        r = self.b.run(argv)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: {r.stderr.strip()}")

    def rtt_us(self, count: int, interval: float = 0.005) -> list[float]:
        srv = self.popen_b(
            [sys.executable, MEASURE, "echo-server", "--bind", self.addr_b, "--port", "7999"],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            srv.stdout.readline()
            r = self.a.run(
                [
                    sys.executable,
                    MEASURE,
                    "rtt",
                    "--port",
                    "7999",
                    "--count",
                    str(count),
                    "--interval",
                    str(interval),
                    self.addr_b,
                ],
                timeout=60 + count * interval * 4,
            )
            return json.loads(r.stdout)["rtt_us"][self.addr_b]
        finally:
            srv.kill()
            srv.wait()

    def __exit__(self, *exc) -> None:
        for p in getattr(self, "procs", []):
            if p.poll() is None:
                p.kill()
                try:
                    p.wait(3)
                except subprocess.TimeoutExpired:
                    pass
        time.sleep(0)
        self.b.__exit__()
        self.a.__exit__()
