"""`python -m testbed doctor`: what this machine can emulate, and which backends a run would use."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

from testbed.emu.net.probe import ROOT_HINT, is_root, probe_all, probe_mininet, shaping_support


def _docker() -> tuple[bool, str]:
    if not shutil.which("docker"):
        return False, "docker CLI not installed (apt-get install docker.io); needed only for the docker runtime"
    r = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}} {{.Driver}} cgroup{{.CgroupVersion}}"],
                       capture_output=True, text=True, timeout=20)
    if r.returncode != 0:
        return False, "docker engine not running (start dockerd); needed only for the docker runtime"
    return True, f"engine {r.stdout.strip()}"


def _bridges() -> tuple[bool, str]:
    ok = bool(shutil.which("brctl"))
    ovs = os.path.isdir("/sys/module/openvswitch")
    return ok, ("Linux bridges (bridge-utils)" if ok else "brctl missing (apt-get install bridge-utils)") + \
        ("; Open vSwitch module loaded" if ovs else "; no Open vSwitch kernel module")


def _cgroups() -> tuple[bool, str]:
    from testbed.emu.cgroups import cpu_root

    root = cpu_root()
    if root is None:
        return False, "no cgroup cpu controller (cpu_share limits unavailable)"
    return True, f"cgroups {root[1]} cpu controller at {root[0]}"


def diagnose() -> dict[str, Any]:
    checks: dict[str, tuple[bool, str]] = {"root": (is_root(), "running as root" if is_root() else ROOT_HINT)}
    caps = probe_all()
    for k in ("tools", "netns", "netem", "htb", "tbf", "nfqueue"):
        checks[k] = caps.get(k, (False, "not probed"))
    checks["mininet"] = probe_mininet()
    checks["bridges"] = _bridges()
    checks["cgroups"] = _cgroups()
    checks["docker"] = _docker()
    support = shaping_support() if is_root() else {}
    for name, v in support.items():
        checks[f"shaping:{name}"] = v
    chosen = next((n for n in ("netem", "userspace") if support.get(n, (False,))[0]), None)
    net_ok = checks["root"][0] and checks["mininet"][0] and checks["netns"][0] and chosen is not None
    would_use = {"network": "mininet" if net_ok else "none (loopback: --net none)",
                 "shaping": chosen or "none", "runtime": "process" + (" | docker" if checks["docker"][0] else "")}
    if chosen == "userspace":
        try:
            from testbed.emu.net.shaping.userspace import calibrate

            cal = calibrate()
            checks["delayline-overhead"] = (True, f"{cal['overhead_us']:.0f} us per direction, compensated")
        except Exception as e:  # noqa: BLE001
            checks["delayline-overhead"] = (False, f"calibration failed: {e}")
    return {"checks": checks, "would_use": would_use}
