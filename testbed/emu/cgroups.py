"""Optional CPU limits per node: cgroups v1 `cpu` controller, `cpu/dsd-<tag>/<node>` with
cpu.cfs_quota_us = cpu_share x cpu.cfs_period_us. A node program joins its group before it execs
(preexec), so everything it starts is limited too. Where cgroups v1 `cpu` is missing (cgroups v2 hosts),
the v2 `cpu.max` file of the unified hierarchy is used when writable.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from testbed.emu.net.runstate import PREFIX

CGROUP_ROOT = Path("/sys/fs/cgroup")
PERIOD_US = 100_000


def cpu_root() -> tuple[Path, str] | None:
    """(directory, 'v1'|'v2') where CPU groups can be created, or None."""
    v1 = CGROUP_ROOT / "cpu"
    if (v1 / "cpu.cfs_quota_us").exists():
        return v1, "v1"
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        return CGROUP_ROOT, "v2"
    return None


class CpuLimits:
    def __init__(self, tag: str):
        root = cpu_root()
        if root is None:
            raise RuntimeError("no cgroup cpu controller found under /sys/fs/cgroup (cpu_share needs it)")
        self.root, self.version = root
        self.base = self.root / f"{PREFIX}-{tag}"
        self.groups: dict[str, Path] = {}

    def create(self, node: str, cpu_share: float) -> Path:
        self.base.mkdir(exist_ok=True)
        g = self.base / node
        g.mkdir(exist_ok=True)
        quota = max(1000, int(cpu_share * PERIOD_US))
        if self.version == "v1":
            (g / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (g / "cpu.cfs_quota_us").write_text(str(quota))
        else:
            (g / "cpu.max").write_text(f"{quota} {PERIOD_US}")
        self.groups[node] = g
        return g

    def has(self, node: str) -> bool:
        return node in self.groups

    def attach(self, node: str, pid: int) -> None:
        (self.groups[node] / "cgroup.procs").write_text(str(pid))

    def preexec(self, node: str, then: Callable[[], None] | None = None) -> Callable[[], None]:
        procs = str(self.groups[node] / "cgroup.procs")

        def fn() -> None:
            fd = os.open(procs, os.O_WRONLY)
            try:
                os.write(fd, b"0")
            finally:
                os.close(fd)
            if then:
                then()

        return fn

    def quota(self, node: str) -> float:
        g = self.groups[node]
        if self.version == "v1":
            return int((g / "cpu.cfs_quota_us").read_text()) / int((g / "cpu.cfs_period_us").read_text())
        q, p = (g / "cpu.max").read_text().split()
        return int(q) / int(p)

    def remove_all(self) -> None:
        from testbed.emu.cleanup import _rm_cgroup

        if self.base.exists():
            _rm_cgroup(self.base)
        self.groups = {}
