"""`userspace` shaping: htb for rate, a user-space delay line on the receiving side for delay, jitter and loss.

The delay line is a small C program (`delayline.c`, libnetfilter_queue) compiled on first use (or by
`python -m testbed.emu.net.shaping.userspace --build`, which the installer runs) into the cache directory.
Why C: it is woken by a timer per packet release; a Python NFQUEUE loop adds ~0.5 ms per direction and
more jitter under load (DESIGN.md), the C one ~0.1 ms, which is then measured and compensated:
`calibrate()` runs it in two scratch namespaces and records the fixed overhead per direction (cached per boot).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from testbed.errors import InputError
from testbed.spec import Scenario

from testbed.emu.net.runstate import STATE_DIR
from testbed.emu.net.shaping import ShapingBackend, apply_rate_limits, path_params

if TYPE_CHECKING:
    from testbed.emu.net.mininet_net import MininetNetwork

SOURCE = Path(__file__).with_name("delayline.c")
QUEUE_NUM = 77
SPIN_US = 150.0  # poll without sleeping this long before a release (VM timer wake-ups are ~0.1-0.3 ms late)
MAX_RATE_MBPS = 2000.0  # what the delay line was measured to keep up with on a 2-core VM (warn above)
CALIB_FILE = STATE_DIR / "calibration" / "delayline.json"


def cache_dir() -> Path:
    base = os.environ.get("DSD_CACHE_DIR") or os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "dsd-testbed")
    return Path(base)


def binary_path() -> Path:
    """One binary per version of the source (worktrees and checkouts of different versions never share one)."""
    digest = hashlib.sha1(SOURCE.read_bytes()).hexdigest()[:10]
    return Path(os.environ.get("DSD_DELAYLINE") or cache_dir() / f"dsd-delayline-{digest}")


def build_delayline(force: bool = False) -> Path:
    """Compile the delay line if missing or older than its source. Needs cc and libnetfilter-queue-dev."""
    out = binary_path()
    if not force and out.exists() and out.stat().st_mtime >= SOURCE.stat().st_mtime:
        return out
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise RuntimeError("no C compiler (apt-get install gcc) to build the dsd-delayline program")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    r = subprocess.run([cc, "-O2", "-Wall", "-o", str(tmp), str(SOURCE), "-lnetfilter_queue", "-lnfnetlink", "-lm"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"building dsd-delayline failed (apt-get install libnetfilter-queue-dev):\n{r.stderr.strip()}")
    os.replace(tmp, out)
    return out


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
        dl = pair.popen_b([str(binary), "--queue", str(QUEUE_NUM), "--spin-us", str(SPIN_US), "--tag", "probe",
                           f"{pair.addr_a},{delay_us},0,0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            _wait_ready(dl, "calibration")
            pair.run_b(["iptables", "-t", "mangle", "-A", "PREROUTING", "-s", pair.addr_a, "-j", "NFQUEUE",
                        "--queue-num", str(QUEUE_NUM), "--queue-bypass", "-m", "comment", "--comment", "dsd-probe"])
            with_dl = pair.rtt_us(samples)
        finally:
            dl.terminate()
            dl.wait(5)
    med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    overhead = max(0.0, med(with_dl) - med(base) - delay_us)
    data = {**key, "overhead_us": round(overhead, 1), "base_rtt_us": round(med(base), 1),
            "measured_at": time.time(), "samples": samples}
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
        self.stats: dict[str, Any] = {}
        self.calibration: dict[str, Any] = {}

    def check(self, scenario: Scenario) -> list[str]:
        warnings = super().check(scenario)
        for i, l in enumerate(scenario.links):
            if l.bw_mbps and l.bw_mbps > MAX_RATE_MBPS and (l.delay_ms > 0 or l.jitter_ms > 0 or l.loss_pct > 0):
                warnings.append(f"link {i} ({l.a}-{l.b}): {l.bw_mbps:g} Mbit/s is above what the user-space delay line "
                                f"was measured to sustain (~{MAX_RATE_MBPS:g} Mbit/s): the path's rate may be lower")
        try:
            build_delayline()
        except RuntimeError as e:
            raise InputError("--shaping userspace", str(e).splitlines()[0]) from None
        return warnings

    def flows(self, scenario: Scenario, addresses: dict[str, str]) -> dict[str, list[str]]:
        """host -> delay-line rules 'SRC,DELAY_US,JITTER_US,LOSS' for every source whose path to it is shaped."""
        out: dict[str, list[str]] = {}
        for (src, dst) in scenario.paths:
            delay, jitter, loss = path_params(scenario, src, dst)
            if delay > 0 or jitter > 0 or loss > 0:
                out.setdefault(dst, []).append(f"{addresses[src]},{delay * 1e3:.1f},{jitter * 1e3:.1f},{loss:.9f}")
        return out

    def apply(self, net: "MininetNetwork") -> None:
        if self.comp_us is None:
            self.calibration = calibrate()
            self.comp_us = self.calibration["overhead_us"]
        binary = build_delayline()
        apply_rate_limits(net)
        flows = self.flows(net.scenario, net.plan.addresses)
        for k, (host, rules) in enumerate(sorted(flows.items())):
            argv = [str(binary), "--queue", str(QUEUE_NUM), "--tag", net.plan.tag, "--comp-us", f"{self.comp_us:.1f}",
                    "--spin-us", f"{self.spin_us:.1f}", "--seed", str(self.seed * 1000 + k), *rules]
            self.procs[host] = net.popen_raw(host, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for host, proc in self.procs.items():
            _wait_ready(proc, host)
        for host, rules in flows.items():
            lines = ["*mangle"]
            for r in rules:
                src = r.split(",", 1)[0]
                lines.append(f"-A PREROUTING -s {src}/32 -m comment --comment dsd-{net.plan.tag} "
                             f"-j NFQUEUE --queue-num {QUEUE_NUM} --queue-bypass")
            lines.append("COMMIT")
            net.run_in(host, ["iptables-restore", "--noflush"], input="\n".join(lines) + "\n")

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
        return {"name": self.name, "compensation_us": self.comp_us, "spin_us": self.spin_us,
                "calibration": self.calibration, "delayline_stats": self.stats}


if __name__ == "__main__":  # installer hook: build (and optionally calibrate) the delay line
    p = build_delayline(force="--force" in sys.argv)
    print(p)
    if "--calibrate" in sys.argv:
        print(json.dumps(calibrate(force=True), indent=1))
