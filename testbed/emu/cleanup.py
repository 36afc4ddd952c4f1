"""Find and remove leftovers of emulated networks — only objects carrying the `dsd` prefix.

What a run creates (see testbed/emu/net/runstate.py): Mininet host shells `mininet:dsd<tag>-<node>` (each
holds a network namespace), programs inside those namespaces (node programs, `dsd-delayline --tag <tag>`),
root-namespace bridges and veth ends `dsd<tag>...`, cgroups `<controller>/dsd-<tag>`, scratch namespaces
`dsdprobe<pid>*`, and its record /run/dsd/<tag>.json. A run whose recorded owner process is alive is left
alone unless `include_live`.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from testbed.emu.net.runstate import PREFIX, STATE_DIR, pid_alive, pid_running, read_states, remove_state

CGROUP_ROOT = Path("/sys/fs/cgroup")
_SHELL_RE = re.compile(r"mininet:" + PREFIX + r"([a-z0-9]{3})-")
_TAG_ARG_RE = re.compile(r"--tag\x00([A-Za-z0-9]+)")


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def _netns_ino(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _kill(pids: list[int], grace: float = 2.0) -> None:
    me = os.getpid()
    pids = [p for p in pids if p != me]
    for p in pids:
        try:
            os.kill(p, signal.SIGTERM)
        except OSError:
            pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(pid_running(p) for p in pids):
        time.sleep(0.05)
    for p in pids:
        if pid_running(p):
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass


def kill_namespace_processes(holder_pids: list[int]) -> int:
    """Kill every process living in the network namespaces of `holder_pids` (not the holders themselves)."""
    root_ino = _netns_ino(1)
    inos = {i for i in (_netns_ino(p) for p in holder_pids) if i is not None and i != root_ino}
    if not inos:
        return 0
    holders = set(holder_pids)
    victims = [p for p in _pids() if p not in holders and _netns_ino(p) in inos]
    _kill(victims)
    return len(victims)


def _ours(directory: str) -> list[str]:
    """Entries of `directory` named with the testbed's prefix (none when it cannot be read)."""
    try:
        return sorted(n for n in os.listdir(directory) if n.startswith(PREFIX))
    except OSError:
        return []


def _links() -> list[str]:
    return _ours("/sys/class/net")


def _is_bridge(name: str) -> bool:
    return os.path.isdir(f"/sys/class/net/{name}/bridge")


def _cgroups(tag: str | None = None) -> list[Path]:
    out = []
    if not CGROUP_ROOT.exists():
        return out
    for ctl in ("cpu", "cpu,cpuacct", "cpuacct", "unified"):
        base = CGROUP_ROOT / ctl
        if base.is_dir() and not base.is_symlink():
            out += sorted(p for p in base.glob(f"{PREFIX}-{tag or '*'}") if p.is_dir())
    return out


def _rm_cgroup(path: Path) -> None:
    for sub in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        _kill_cgroup_tasks(sub)
        try:
            sub.rmdir()
        except OSError:
            pass
    _kill_cgroup_tasks(path)
    try:
        path.rmdir()
    except OSError:
        pass


def _kill_cgroup_tasks(path: Path) -> None:
    try:
        pids = [int(x) for x in (path / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return
    _kill(pids, grace=1.0)


def _netns_named() -> list[str]:
    return _ours("/var/run/netns")


def cleanup_tag(tag: str) -> None:
    """Remove the root-namespace links, bridges and cgroups of one run (after its namespaces are gone)."""
    for ns in _netns_named():  # a two-host run's machine namespaces (testbed/emu/net/tunnel.py)
        if ns.startswith(PREFIX + tag) and not ns.startswith(PREFIX + "probe"):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    mine = [n for n in _links() if n.startswith(PREFIX + tag)]
    for name in sorted(mine, key=_is_bridge):  # ports first, then bridges
        subprocess.run(["ip", "link", "set", name, "down"], capture_output=True)
        subprocess.run(["ip", "link", "del", name], capture_output=True)
    for cg in _cgroups(tag):
        _rm_cgroup(cg)


_RULE_RE = re.compile(r"--comment " + PREFIX + r"-run-([a-z0-9]{3})\b")


def bridged_accept_rule(tag: str) -> list[str]:
    """The FORWARD rule that lets frames bridged by a run's switches through iptables (see MininetNetwork)."""
    ports = f"{PREFIX}{tag}s+"
    return ["-i", ports, "-o", ports, "-m", "comment", "--comment", f"{PREFIX}-run-{tag}", "-j", "ACCEPT"]


def _accept_rules() -> list[tuple[str, str]]:
    """(tag, rule as `iptables -S` prints it) of every testbed FORWARD rule."""
    r = subprocess.run(["iptables", "-w", "-S", "FORWARD"], capture_output=True, text=True)
    out = []
    for line in r.stdout.splitlines() if r.returncode == 0 else []:
        m = _RULE_RE.search(line)
        if m and line.startswith("-A "):
            out.append((m.group(1), line))
    return out


def remove_accept_rules(tags: set[str] | None = None) -> int:
    """Delete the FORWARD ACCEPT rules of these runs (all testbed rules when None)."""
    n = 0
    for tag, line in _accept_rules():
        if tags is None or tag in tags:
            subprocess.run(["iptables", "-w", "-D", *line.split()[1:]], capture_output=True)
            n += 1
    return n


def _containers(dead) -> list[str]:
    from testbed.emu.runtime.docker import list_containers

    return [c["name"] for c in list_containers() if dead(c["owner"])]


def find_leftovers(include_live: bool = False) -> dict[str, Any]:
    states = read_states()
    live = {t for t, s in states.items() if pid_alive(s.get("pid"))} if not include_live else set()

    def dead(tag: str | None) -> bool:
        return tag is None or tag not in live

    shells, delaylines = [], []
    for p in _pids():
        cmd = _cmdline(p)
        if not cmd:
            continue
        m = _SHELL_RE.search(cmd)
        if m:
            if dead(m.group(1)):
                shells.append((p, m.group(1)))
            continue
        if os.path.basename(cmd.split("\x00", 1)[0]).startswith("dsd-delayline"):  # dsd-delayline-<source hash>
            t = _TAG_ARG_RE.search(cmd)
            if dead(t.group(1) if t else None):
                delaylines.append((p, t.group(1) if t else None))
    holder_pids = [p for p, _ in shells] + [p for p, _ in delaylines]
    root_ino = _netns_ino(1)
    inos = {i for i in (_netns_ino(p) for p in holder_pids) if i is not None and i != root_ino}
    inside = [p for p in _pids() if p not in holder_pids and _netns_ino(p) in inos] if inos else []
    links = [n for n in _links() if dead(n[len(PREFIX) : len(PREFIX) + 3]) and not n.startswith(PREFIX + "probe")]
    netns = []
    for n in _netns_named():
        m = re.match(PREFIX + r"probe(\d+)", n)
        if not include_live and m and pid_alive(int(m.group(1))):
            continue
        if not m and not dead(n[len(PREFIX) : len(PREFIX) + 3]):  # a live run's namespace (two-host runs)
            continue
        netns.append(n)
    cgroups = [str(c) for c in _cgroups() if dead(c.name[len(PREFIX) + 1 :])]
    stale_states = [t for t in states if t not in live]
    rules = sorted({t for t, _ in _accept_rules() if dead(t)})
    containers = _containers(lambda owner: include_live or not pid_alive(owner))
    return {
        "shells": shells,
        "delaylines": delaylines,
        "processes_in_namespaces": inside,
        "links": links,
        "netns": netns,
        "cgroups": cgroups,
        "states": stale_states,
        "forward_rules": rules,
        "containers": containers,
        "live_runs": sorted(live),
    }


def count(leftovers: dict[str, Any]) -> int:
    return sum(len(v) for k, v in leftovers.items() if k != "live_runs")


def cleanup(include_live: bool = False) -> dict[str, Any]:
    """Remove every leftover (of dead runs, or of all runs with include_live). Returns what was found."""
    found = find_leftovers(include_live)
    if found["containers"]:
        from testbed.emu.runtime.docker import remove_containers

        remove_containers(owner_alive=None if include_live else pid_alive)
    _kill(found["processes_in_namespaces"])
    _kill([p for p, _ in found["delaylines"]])
    _kill([p for p, _ in found["shells"]])
    for ns in found["netns"]:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    for name in sorted(found["links"], key=_is_bridge):
        subprocess.run(["ip", "link", "set", name, "down"], capture_output=True)
        subprocess.run(["ip", "link", "del", name], capture_output=True)
    for cg in found["cgroups"]:
        _rm_cgroup(Path(cg))
    if found["forward_rules"]:
        remove_accept_rules(set(found["forward_rules"]))
    for t in found["states"]:
        remove_state(t)
    return found


def inventory() -> dict[str, int]:
    """Counts of prefixed objects on the machine (live or not): for before/after comparisons."""
    f = find_leftovers(include_live=True)
    return {k: len(v) for k, v in f.items() if k not in ("live_runs", "states")} | {
        "iptables_rules_root": _root_rules()
    }


def _root_rules() -> int:
    r = subprocess.run(["iptables-save"], capture_output=True, text=True)
    return sum(1 for line in r.stdout.splitlines() if "dsd" in line) if r.returncode == 0 else 0


__all__ = ["cleanup", "cleanup_tag", "count", "find_leftovers", "inventory", "kill_namespace_processes", "STATE_DIR"]
