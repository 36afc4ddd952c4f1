"""`python -m testbed doctor`: what this machine can emulate, and which backends a run would use."""

from __future__ import annotations

import os
import shutil
from typing import Any

from testbed.emu.net.probe import ROOT_HINT, is_root, probe_all, probe_mininet, shaping_support


def _docker() -> tuple[bool, str]:
    from testbed.emu.runtime.engine import engine_status

    ok, why = engine_status()
    if not ok:
        return False, why + "; needed only for the docker runtime"
    from testbed.emu.runtime.engine import client
    from testbed.emu.runtime.image import find_image, image_ref

    ref, stale = find_image(client())
    img = (
        f"node image {ref}"
        if ref
        else (
            f"node image stale (built for {stale}): `make image` rebuilds it"
            if stale
            else f"node image {image_ref()} not built yet (`make image`; a run builds it)"
        )
    )
    return True, f"{why}; {img}"


def _filtering() -> tuple[bool, str]:
    from testbed.emu.runtime.engine import filtering_problem

    problem = filtering_problem()
    return (problem is None), (problem or "bridged traffic is not filtered by the host's iptables")


def _bridges() -> tuple[bool, str]:
    ok = bool(shutil.which("brctl"))
    ovs = os.path.isdir("/sys/module/openvswitch")
    return ok, ("Linux bridges (bridge-utils)" if ok else "brctl missing (apt-get install bridge-utils)") + (
        "; Open vSwitch module loaded" if ovs else "; no Open vSwitch kernel module"
    )


def _cgroups() -> tuple[bool, str]:
    from testbed.emu.cgroups import cpu_root

    root = cpu_root()
    if root is None:
        return False, "no cgroup cpu controller (cpu_share limits unavailable)"
    return True, f"cgroups {root[1]} cpu controller at {root[0]}"


def _usable_runtimes(checks: dict[str, tuple[bool, str]]) -> list[str]:
    """Node runtimes that exist (testbed.emu.runtime.RUNTIMES) and whose check passed (process needs none)."""
    from testbed.emu.runtime import RUNTIMES

    return [r for r in RUNTIMES if r == "process" or checks.get(r, (False,))[0]]


def diagnose() -> dict[str, Any]:
    checks: dict[str, tuple[bool, str]] = {"root": (is_root(), "running as root" if is_root() else ROOT_HINT)}
    caps = probe_all()
    for k in ("tools", "netns", "netem", "htb", "tbf", "nfqueue"):
        checks[k] = caps.get(k, (False, "not probed"))
    checks["mininet"] = probe_mininet()
    checks["bridges"] = _bridges()
    checks["cgroups"] = _cgroups()
    checks["docker"] = _docker()
    checks["filtering"] = _filtering()
    support = shaping_support() if is_root() else {}
    for name, v in support.items():
        checks[f"shaping:{name}"] = v
    chosen = next((n for n in ("netem", "userspace") if support.get(n, (False,))[0]), None)
    net_ok = checks["root"][0] and checks["mininet"][0] and checks["netns"][0] and chosen is not None
    would_use = {
        "network": "mininet" if net_ok else "none (loopback: --net none)",
        "shaping": chosen or "none",
        "runtime": " | ".join(_usable_runtimes(checks)),
    }
    if chosen == "userspace":
        try:
            from testbed.emu.net.shaping.userspace import calibrate

            cal = calibrate()
            checks["delayline-overhead"] = (True, f"{cal['overhead_us']:.0f} us per direction, compensated")
        except Exception as e:  # noqa: BLE001
            checks["delayline-overhead"] = (False, f"calibration failed: {e}")
    return {"checks": checks, "would_use": would_use}
