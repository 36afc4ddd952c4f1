"""The Docker engine: find it, start it when it is not running (and stop only what this project started), and
check that it leaves the host's packet filtering alone.

The project starts `dockerd` so that it coexists with the emulated network: no default bridge, no iptables
rules, no IP forwarding, no masquerading (`ENGINE_FLAGS`). Containers of the docker runtime are started
without a Docker network: their interfaces are the emulated host's (testbed.emu.runtime.docker).

Started by the project: /run/dsd/dockerd.json records the pid; `stop_engine()` stops that daemon and no other.

A daemon started with Debian's defaults sets the FORWARD policy to DROP while `net.bridge.bridge-nf-call-iptables`
is 1: traffic across Linux-bridge switches then goes through iptables and is dropped. `filtering_problem()`
detects that; the Mininet network makes its own bridges immune (an ACCEPT rule per run, removed at teardown).

    python -m testbed.emu.runtime.engine start|stop|status
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from testbed.emu.net.probe import bridge_nf_call_iptables
from testbed.emu.net.runstate import STATE_DIR, pid_alive, pid_running
from testbed.errors import InputError

SOCKET = "/var/run/docker.sock"
ENGINE_FLAGS = ["--iptables=false", "--ip6tables=false", "--bridge=none", "--ip-forward=false", "--ip-masq=false"]
RECORD = STATE_DIR / "dockerd.json"
LOG = Path("/var/log/dsd-dockerd.log")


def client(timeout: float = 120):
    """A Docker SDK client for the local engine, or None when the SDK or the engine is missing."""
    try:
        import docker
    except ImportError:
        return None
    try:
        c = docker.DockerClient(base_url=f"unix://{SOCKET}", timeout=timeout)
        c.ping()
        return c
    except Exception:  # noqa: BLE001 - any failure means: no engine reachable
        return None


def engine_status() -> tuple[bool, str]:
    """(usable, one line on why / what)."""
    if shutil.which("dockerd") is None:
        return False, "Docker engine not installed (apt-get install docker.io, or `make setup`)"
    c = client(timeout=10)
    if c is None:
        return False, "Docker engine not running (start it: python -m testbed.emu.runtime.engine start)"
    v = c.version().get("Version", "?")
    who = "started by the testbed" if started_by_us() else "started outside the testbed"
    return True, f"Docker engine {v} running ({who})"


def started_by_us() -> bool:
    try:
        rec = json.loads(RECORD.read_text())
    except (OSError, ValueError):
        return False
    return pid_alive(rec.get("pid"))


def ensure_engine(timeout_s: float = 60.0):
    """A client of a running engine: the one that runs, or a dockerd started now with ENGINE_FLAGS.
    InputError (exit 2) when none can be had."""
    c = client()
    if c is not None:
        return c
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        raise InputError(
            "runtime: docker",
            "the Docker engine is not installed: apt-get install docker.io (`make setup` does), then retry",
        )
    if os.geteuid() != 0:
        raise InputError("runtime: docker", "the Docker engine is not running and starting it needs root")
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    LOG.parent.mkdir(parents=True, exist_ok=True)
    with open(LOG, "ab") as log:
        p = subprocess.Popen(
            [dockerd, *ENGINE_FLAGS, "-H", f"unix://{SOCKET}"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    RECORD.write_text(json.dumps({"pid": p.pid, "started": time.time(), "flags": ENGINE_FLAGS}))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if p.poll() is not None:
            raise InputError("runtime: docker", f"dockerd exited with code {p.returncode} at start (see {LOG})")
        c = client(timeout=10)
        if c is not None:
            return c
        time.sleep(0.3)
    raise InputError("runtime: docker", f"dockerd did not answer within {timeout_s:.0f} s (see {LOG})")


def stop_engine(timeout_s: float = 30.0) -> bool:
    """Stop the dockerd this project started (never another one). True when one was stopped."""
    try:
        rec = json.loads(RECORD.read_text())
    except (OSError, ValueError):
        return False
    pid = rec.get("pid")
    if pid_alive(pid):
        os.kill(pid, 15)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and pid_running(pid):
            time.sleep(0.2)
    RECORD.unlink(missing_ok=True)
    return True


def filtering_problem() -> str | None:
    """Why bridged traffic of the emulated network would be dropped by the host's iptables, or None."""
    if not bridge_nf_call_iptables():  # br_netfilter absent or off: bridged frames never see iptables
        return None
    r = subprocess.run(["iptables", "-S", "FORWARD"], capture_output=True, text=True)
    if r.returncode != 0:
        return None
    policy = next((ln.split()[2] for ln in r.stdout.splitlines() if ln.startswith("-P FORWARD")), "ACCEPT")
    if policy == "ACCEPT":
        return None
    return (
        f"the host's iptables FORWARD policy is {policy} and net.bridge.bridge-nf-call-iptables is 1 (a Docker "
        "engine started with its defaults does this): bridged traffic between emulated hosts is filtered. The "
        "testbed inserts an ACCEPT rule for its own bridges per run; to undo it host-wide: "
        "`iptables -P FORWARD ACCEPT` or `sysctl -w net.bridge.bridge-nf-call-iptables=0`, and start dockerd "
        f"with {' '.join(ENGINE_FLAGS)} (python -m testbed.emu.runtime.engine start)"
    )


def main(argv: list[str]) -> int:
    cmd = argv[0] if argv else "status"
    if cmd == "start":
        try:
            ensure_engine()
        except InputError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(engine_status()[1])
        return 0
    if cmd == "stop":
        print("stopped the testbed's dockerd" if stop_engine() else "no dockerd started by the testbed: left alone")
        return 0
    if cmd == "status":
        ok, why = engine_status()
        print(why)
        problem = filtering_problem()
        if problem:
            print(f"warning: {problem}")
        return 0 if ok else 1
    print("usage: python -m testbed.emu.runtime.engine start|stop|status", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
