"""What this machine can emulate: probed in a scratch namespace, nothing left behind.

`choose_shaping(requested)`: the shaping backend a run uses — the requested one if it works here, else
(None = auto) `netem` where the kernel has it, else `userspace`. An InputError names what is missing.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from typing import Any

from testbed.errors import InputError

ROOT_HINT = (
    "the emulated network needs root (network namespaces, qdiscs, iptables): run as root, e.g. "
    "`sudo -E env PATH=$PATH python -m testbed ...`, or use `--net none` (loopback, no shaping)"
)


def is_root() -> bool:
    return os.geteuid() == 0


def require_root(where: str) -> None:
    if not is_root():
        raise InputError(where, ROOT_HINT)


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True)


@functools.lru_cache(maxsize=None)
def probe_all() -> dict[str, Any]:
    """Capabilities of the kernel and tools: {name: (ok, detail)}. Cached for the process."""
    from testbed.emu.net.scratch import ScratchNs

    out: dict[str, Any] = {}
    tools = {t: shutil.which(t) for t in ("ip", "tc", "iptables", "iptables-restore", "mnexec", "brctl", "cc")}
    out["tools"] = (
        all(tools[t] for t in ("ip", "tc")),
        ", ".join(f"{t}={'yes' if p else 'MISSING'}" for t, p in tools.items()),
    )
    if not is_root() or not tools["ip"]:
        for k in ("netns", "netem", "htb", "tbf", "nfqueue"):
            out[k] = (False, "needs root" if not is_root() else "no `ip` tool")
        return out
    try:
        with ScratchNs("p") as ns:
            out["netns"] = (True, "network namespaces work")

            def tc(*args: str) -> subprocess.CompletedProcess:
                return ns.run(["tc", *args])

            r = tc("qdisc", "add", "dev", "lo", "root", "handle", "1:", "netem", "delay", "1ms")
            out["netem"] = (r.returncode == 0, "sch_netem available" if r.returncode == 0 else r.stderr.strip())
            tc("qdisc", "del", "dev", "lo", "root")
            r = tc("qdisc", "add", "dev", "lo", "root", "handle", "1:", "htb", "default", "1")
            out["htb"] = (r.returncode == 0, "ok" if r.returncode == 0 else r.stderr.strip())
            tc("qdisc", "del", "dev", "lo", "root")
            r = tc("qdisc", "add", "dev", "lo", "root", "tbf", "rate", "1mbit", "burst", "10k", "latency", "10ms")
            out["tbf"] = (r.returncode == 0, "ok" if r.returncode == 0 else r.stderr.strip())
            tc("qdisc", "del", "dev", "lo", "root")
            if tools["iptables"]:
                r = ns.run(
                    [
                        "iptables",
                        "-t",
                        "mangle",
                        "-A",
                        "PREROUTING",
                        "-s",
                        "10.77.255.9",
                        "-m",
                        "comment",
                        "--comment",
                        "dsd-probe",
                        "-j",
                        "NFQUEUE",
                        "--queue-num",
                        "77",
                        "--queue-bypass",
                    ]
                )
                out["nfqueue"] = (
                    r.returncode == 0,
                    "iptables NFQUEUE target works" if r.returncode == 0 else r.stderr.strip(),
                )
            else:
                out["nfqueue"] = (False, "no iptables (apt-get install iptables)")
    except RuntimeError as e:
        for k in ("netns", "netem", "htb", "tbf", "nfqueue"):
            out.setdefault(k, (False, str(e)))
    return out


def probe_delayline() -> tuple[bool, str]:
    from testbed.emu.net.shaping.userspace import build_delayline

    try:
        return True, str(build_delayline())
    except (RuntimeError, OSError) as e:
        return False, str(e).splitlines()[0]


def probe_mininet() -> tuple[bool, str]:
    try:
        from testbed.emu.net.mininet_net import _import_mininet

        mn = _import_mininet()
        ver = getattr(mn.net, "VERSION", "?")
    except Exception as e:  # noqa: BLE001
        return False, f"cannot import mininet ({e}); apt-get install mininet bridge-utils"
    if not shutil.which("mnexec") or not shutil.which("brctl"):
        return False, f"mininet {ver}, but mnexec/brctl missing (apt-get install mininet bridge-utils)"
    return True, f"mininet {ver} with Linux bridges"


def shaping_support() -> dict[str, tuple[bool, str]]:
    caps = probe_all()
    out: dict[str, tuple[bool, str]] = {}
    netem_ok = caps.get("netem", (False, ""))[0] and caps.get("tbf", (False, ""))[0]
    out["netem"] = (netem_ok, "tbf + netem" if netem_ok else f"netem: {caps.get('netem', (False, '?'))[1]}")
    if not (caps.get("tbf", (False, ""))[0] and caps.get("nfqueue", (False, ""))[0]):
        out["userspace"] = (
            False,
            f"tbf: {caps.get('tbf', (False, '?'))[1]}; nfqueue: {caps.get('nfqueue', (False, '?'))[1]}",
        )
    else:
        ok, detail = probe_delayline()
        out["userspace"] = (ok, f"tbf + NFQUEUE delay line ({detail})" if ok else detail)
    return out


def choose_shaping(requested: str | None) -> str:
    support = shaping_support()
    if requested is not None:
        if requested not in support:
            raise InputError("--shaping", f"unknown shaping backend {requested!r} (netem, userspace)")
        ok, detail = support[requested]
        if not ok:
            raise InputError("--shaping", f"{requested} shaping does not work here: {detail}")
        return requested
    for name in ("netem", "userspace"):
        if support[name][0]:
            return name
    raise InputError(
        "--net mininet", "no link shaping backend works here: " + "; ".join(f"{k}: {v[1]}" for k, v in support.items())
    )


def bridge_nf_call_iptables() -> bool:
    """Bridged frames go through iptables (br_netfilter loaded and net.bridge.bridge-nf-call-iptables = 1)."""
    try:
        with open("/proc/sys/net/bridge/bridge-nf-call-iptables") as f:
            return f.read().strip() == "1"
    except OSError:
        return False
