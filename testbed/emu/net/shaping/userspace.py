"""`userspace` shaping: tbf for rate, a user-space delay line on the receiving side for delay, jitter and loss.

The delay line is a small C program (`delayline.c`, libnetfilter_queue) compiled on first use (or by
`python -m testbed.emu.net.shaping.userspace --build`, which the installer runs) into the cache directory.
Why C: it is woken by a timer per packet release; a Python NFQUEUE loop adds ~0.5 ms per direction and
more jitter under load (DESIGN.md), the C one ~0.1 ms, which is then measured and compensated:
`calibrate()` runs it in two scratch namespaces and records the fixed overhead per direction (cached per boot).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from testbed.errors import InputError
from testbed.spec import Scenario

from testbed.files import build_c, cache_build_path
from testbed.emu.net.runstate import STATE_DIR
from testbed.emu.net.shaping import ShapingBackend, apply_rate_limits, path_params, rate_change_lines

if TYPE_CHECKING:
    from testbed.emu.net.mininet_net import MininetNetwork

SOURCE = Path(__file__).with_name("delayline.c")
QUEUE_NUM = 77
SPIN_US = 150.0  # poll without sleeping this long before a release (VM timer wake-ups are ~0.1-0.3 ms late)
MAX_RATE_MBPS = 2000.0  # what the delay line was measured to keep up with on a 2-core VM (warn above)
CALIB_FILE = STATE_DIR / "calibration" / "delayline.json"


def binary_path() -> Path:
    """One binary per version of the source (worktrees and checkouts of different versions never share one)."""
    return Path(os.environ.get("DSD_DELAYLINE") or cache_build_path(SOURCE, "dsd-delayline"))


def build_delayline(force: bool = False) -> Path:
    """Compile the delay line if missing or older than its source. Needs cc and libnetfilter-queue-dev."""
    libs = ("-lnetfilter_queue", "-lnfnetlink", "-lm")
    return build_c(SOURCE, binary_path(), ("-O2", "-Wall"), libs, "apt-get install libnetfilter-queue-dev", force)


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "?"


def calibrate(force: bool = False, samples: int = 300) -> dict[str, Any]:
    """Fixed overhead of the delay line per direction (median), measured in scratch namespaces; cached per boot."""
    binary = build_delayline()
    key = {"boot_id": _boot_id(), "binary_mtime": binary.stat().st_mtime, "spin_us": SPIN_US}
    if not force and CALIB_FILE.exists():
        try:
            data = json.loads(CALIB_FILE.read_text())
            if all(data.get(k) == v for k, v in key.items()):
                return data
        except ValueError:
            pass
    from testbed.emu.net.scratch import ScratchPair

    delay_us = 5000.0
    with ScratchPair() as pair:
        base = pair.rtt_us(samples // 3)
        dl = pair.popen_b(
            [
                str(binary),
                "--queue",
                str(QUEUE_NUM),
                "--spin-us",
                str(SPIN_US),
                "--tag",
                "probe",
                f"{pair.addr_a},{delay_us},0,0",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            _wait_ready(dl, "calibration")
            pair.run_b(
                [
                    "iptables",
                    "-t",
                    "mangle",
                    "-A",
                    "PREROUTING",
                    "-s",
                    pair.addr_a,
                    "-j",
                    "NFQUEUE",
                    "--queue-num",
                    str(QUEUE_NUM),
                    "--queue-bypass",
                    "-m",
                    "comment",
                    "--comment",
                    "dsd-probe",
                ]
            )
            with_dl = pair.rtt_us(samples)
        finally:
            dl.terminate()
            dl.wait(5)
    med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    overhead = max(0.0, med(with_dl) - med(base) - delay_us)
    data = {
        **key,
        "overhead_us": round(overhead, 1),
        "base_rtt_us": round(med(base), 1),
        "measured_at": time.time(),
        "samples": samples,
    }
    CALIB_FILE.parent.mkdir(parents=True, exist_ok=True)
    CALIB_FILE.write_text(json.dumps(data, indent=1))
    return data


def _wait_ready(proc: subprocess.Popen, where: str, timeout: float = 10.0) -> None:
    line = proc.stdout.readline() if proc.stdout else ""
    if line.strip() != "ready":
        err = proc.stderr.read() if proc.stderr and proc.poll() is not None else ""
        raise RuntimeError(f"dsd-delayline did not start on {where}: {line.strip()} {err.strip()}")


class UserspaceShaping(ShapingBackend):
    name = "userspace"

    def __init__(self, comp_us: float | None = None, spin_us: float = SPIN_US, seed: int = 1, **_: Any):
        self.comp_us = comp_us
        self.spin_us = spin_us
        self.seed = seed
        self.procs: dict[str, subprocess.Popen] = {}
        self.states: dict[int, Any] = {}  # link -> testbed.schedule.LinkState in force (scheduled links)
        self.pending: list[dict[str, list[int]]] = []  # per prepared group: host -> command ids to acknowledge
        self.stats: dict[str, Any] = {}
        self.calibration: dict[str, Any] = {}

    def check(self, scenario: Scenario) -> list[str]:
        warnings = super().check(scenario)
        trace_hosts: dict[tuple[int, bool], set[str]] = {}
        for (src, dst), hops in scenario.paths.items():
            traced = [h for h in hops if (h.link, h.forward) in scenario.schedule.traces]
            if len(traced) > 1:
                raise InputError(
                    scenario.source,
                    f"schedule: the path {src} -> {dst} crosses {len(traced)} links with a "
                    "capacity trace; the userspace delay line replays one per path",
                )
            for h in traced:
                trace_hosts.setdefault((h.link, h.forward), set()).add(dst)
        for (li, fwd), hosts in trace_hosts.items():
            l = scenario.links[li]
            a, b = (l.a, l.b) if fwd else (l.b, l.a)
            if len(hosts) > 1:
                raise InputError(
                    scenario.source,
                    f"schedule: the capacity trace on {a} -> {b} carries traffic to "
                    f"{len(hosts)} hosts ({', '.join(sorted(hosts))}); the userspace delay line replays a "
                    "trace in the one receiving host's delay line",
                )
            if l.bw_mbps is not None:
                warnings.append(
                    f"link {a}-{b}: bw_mbps={l.bw_mbps:g} still limits the direction {a} -> {b}, which "
                    "follows a capacity trace"
                )
        for i, l in enumerate(scenario.links):
            if l.bw_mbps and l.bw_mbps > MAX_RATE_MBPS and (l.delay_ms > 0 or l.jitter_ms > 0 or l.loss_pct > 0):
                warnings.append(
                    f"link {i} ({l.a}-{l.b}): {l.bw_mbps:g} Mbit/s is above what the user-space delay line "
                    f"was measured to sustain (~{MAX_RATE_MBPS:g} Mbit/s): the path's rate may be lower"
                )
        try:
            build_delayline()
        except RuntimeError as e:
            raise InputError("--shaping userspace", str(e).splitlines()[0]) from None
        return warnings

    def flows(self, scenario: Scenario, addresses: dict[str, str]) -> dict[str, list[str]]:
        """host -> delay-line rules 'SRC,DELAY_US,JITTER_US,LOSS[,TRACE_ID,PRE_US]' for every source whose path
        to it is shaped or scheduled to change."""
        sched = scenario.schedule
        trace_ids = {key: k for k, key in enumerate(sorted(sched.traces))}
        out: dict[str, list[str]] = {}
        for (src, dst), hops in scenario.paths.items():
            delay, jitter, loss = path_params(scenario, src, dst)
            rule = f"{addresses[src]},{delay * 1e3:.1f},{jitter * 1e3:.1f},{loss:.9f}"
            pre = 0.0
            for h in hops:
                if (h.link, h.forward) in trace_ids:
                    rule += f",{trace_ids[(h.link, h.forward)]},{pre * 1e3:.1f}"
                    break
                pre += scenario.links[h.link].delay_ms
            if delay > 0 or jitter > 0 or loss > 0 or any(sched.link_scheduled(h.link) for h in hops):
                out.setdefault(dst, []).append(rule)
        return out

    def trace_args(self, scenario: Scenario) -> list[str]:
        return [
            arg
            for k, key in enumerate(sorted(scenario.schedule.traces))
            for arg in (
                "--trace",
                f"{k}={scenario.schedule.traces[key].path}:{scenario.schedule.traces[key].offset_ms}",
            )
        ]

    def apply(self, net: "MininetNetwork") -> None:
        if self.comp_us is None:
            self.calibration = calibrate()
            self.comp_us = self.calibration["overhead_us"]
        binary = build_delayline()
        apply_rate_limits(net)
        for li, _ in net.scenario.schedule.traces:  # Mahimahi counts MTU-sized packets: no 64 KB super-packets
            for node in (net.scenario.links[li].a, net.scenario.links[li].b):
                dev = net.plan.intf(li, node, net.scenario)
                net.run_in(
                    net.ns_key(node), ["sh", "-c", f"ethtool -K {dev} tso off gso off gro off >/dev/null 2>&1 || true"]
                )
        flows = self.flows(net.scenario, net.plan.addresses)
        traces = self.trace_args(net.scenario)
        for k, (host, rules) in enumerate(sorted(flows.items())):
            argv = [
                str(binary),
                "--queue",
                str(QUEUE_NUM),
                "--tag",
                net.plan.tag,
                "--comp-us",
                f"{self.comp_us:.1f}",
                "--spin-us",
                f"{self.spin_us:.1f}",
                "--seed",
                str(self.seed * 1000 + k),
                "--control",
                *traces,
                *rules,
            ]
            self.procs[host] = net.popen_raw(
                host, argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1
            )
        self.net = net
        for host, proc in self.procs.items():
            _wait_ready(proc, host)
        for host, rules in flows.items():
            lines = ["*mangle"]
            for r in rules:
                src = r.split(",", 1)[0]
                lines.append(
                    f"-A PREROUTING -s {src}/32 -m comment --comment dsd-{net.plan.tag} "
                    f"-j NFQUEUE --queue-num {QUEUE_NUM} --queue-bypass"
                )
            lines.append("COMMIT")
            net.run_in(host, ["iptables-restore", "--noflush"], input="\n".join(lines) + "\n")

    # -- live changes (the schedule; testbed/emu/schedule.py calls these) ----------------------------------
    def _command(self, cmds: dict[str, list[str]]) -> float:
        """Send control lines to delay lines (host -> lines); wait for every acknowledgement; the latest one's
        CLOCK_MONOTONIC time (s)."""
        for host, lines in cmds.items():
            self.procs[host].stdin.write("".join(line + "\n" for line in lines))
            self.procs[host].stdin.flush()
        applied = time.monotonic()
        for host, lines in cmds.items():
            for _ in lines:
                ack = self.procs[host].stdout.readline().split()
                if not ack or ack[0] != "ok":
                    raise RuntimeError(f"dsd-delayline on {host}: {' '.join(ack) or 'no answer (exited?)'}")
                applied = max(applied, int(ack[2]) / 1e9)
        return applied

    def set_t0(self, t0_monotonic: float) -> None:
        if self.procs:
            self._command({h: [f"t0 {int(round(t0_monotonic * 1e9))}"] for h in self.procs})

    def prepare_changes(self, net: "MininetNetwork", groups: list[tuple[float, list]], t0: float) -> None:
        """Hand every delay-line change of the run to the delay lines ahead of time ('at T ID CMD'): each applies
        them at their time in its own precise timer loop; apply_changes() then only collects the acknowledgements
        (and changes tbf rates, which need tc)."""
        sc = net.scenario
        addresses = net.plan.addresses
        states: dict[int, Any] = {}
        down: set[int] = set()
        self.pending = []
        lines: dict[str, list[str]] = {}
        n = 0
        for t, changes in groups:
            touched = {c.link for c in changes}
            for c in changes:
                if c.kind == "link_params":
                    states[c.link] = c.state
                elif c.kind == "link_down":
                    down.add(c.link)
                elif c.kind == "link_up":
                    down.discard(c.link)
            at_ns = int(round((t0 + t) * 1e9))
            acks: dict[str, list[int]] = {}
            for (src, dst), hops in sc.paths.items():
                links = {h.link for h in hops}
                if not links & touched or dst not in self.procs:
                    continue
                delay, jitter, loss = path_params(sc, src, dst, states)
                for cmd in (
                    f"flow {addresses[src]} {delay * 1e3:.1f} {jitter * 1e3:.1f} {loss:.9f}",
                    f"down {addresses[src]} {int(bool(links & down))}",
                ):
                    n += 1
                    lines.setdefault(dst, []).append(f"at {at_ns} {n} {cmd}")
                    acks.setdefault(dst, []).append(n)
            self.pending.append(acks)
        for host, ls in lines.items():
            self.procs[host].stdin.write("".join(line + "\n" for line in ls))
            self.procs[host].stdin.flush()

    def apply_changes(self, net: "MininetNetwork", changes: list) -> float:
        """The next group of prepared changes is due: rates by tc now, the delay lines' acknowledgements read."""
        sc = net.scenario
        applied = time.monotonic()
        for c in changes:
            if c.kind == "link_params":
                old = self.states.get(c.link) or sc.links[c.link]
                self.states[c.link] = c.state
                if c.state.bw_mbps != old.bw_mbps and c.state.bw_mbps is not None:
                    self._change_rate(net, c.link, c.state.bw_mbps)
                    applied = time.monotonic()
        acks = self.pending.pop(0) if self.pending else {}
        for host, ids in acks.items():
            for expect in ids:
                ack = self.procs[host].stdout.readline().split()
                if len(ack) < 3 or ack[0] != "ok" or int(ack[1]) != expect:
                    raise RuntimeError(f"dsd-delayline on {host}: {' '.join(ack) or 'no answer (exited?)'}")
                applied = max(applied, int(ack[2]) / 1e9)
        return applied

    def _change_rate(self, net: "MininetNetwork", li: int, bw_mbps: float) -> None:
        """tbf's rate on both ends of the link, changed in place (its queue is kept)."""
        link = net.scenario.links[li].model_copy(update={"bw_mbps": bw_mbps})
        for node in (link.a, link.b):
            dev = net.plan.intf(li, node, net.scenario)
            net.run_in(net.ns_key(node), ["tc", "-batch", "-"], input="\n".join(rate_change_lines(dev, link)) + "\n")

    def teardown(self) -> None:
        for host, proc in self.procs.items():
            try:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            except OSError:
                pass
        for host, proc in self.procs.items():
            try:
                _, err = proc.communicate(timeout=5)
                last = (err or "").strip().splitlines()[-1:] or [""]
                self.stats[host] = json.loads(last[0]) if last[0].startswith("{") else {"stderr": (err or "")[-300:]}
            except (subprocess.TimeoutExpired, ValueError, OSError):
                try:
                    proc.kill()
                except OSError:
                    pass
        self.procs = {}

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "compensation_us": self.comp_us,
            "spin_us": self.spin_us,
            "calibration": self.calibration,
            "delayline_stats": self.stats,
        }


if __name__ == "__main__":  # installer hook: build (and optionally calibrate) the delay line
    p = build_delayline(force="--force" in sys.argv)
    print(p)
    if "--calibrate" in sys.argv:
        print(json.dumps(calibrate(force=True), indent=1))
