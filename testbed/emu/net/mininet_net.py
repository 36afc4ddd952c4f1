"""The emulated network: Mininet hosts (network namespaces) per node, Linux-bridge switches, static routes,
shaped links, optional CPU limits, verified as built.

Mininet (Debian's `mininet` 2.3) lives in the system Python's dist-packages; `_import_mininet` appends
that directory to sys.path (at the end, so the venv's packages win) the first time this module needs it,
and nowhere else. Its global `fixLimits()` (host-wide sysctls) is skipped: nothing here needs it.

Lifecycle: build() records the run in /run/dsd/<tag>.json, builds, shapes, verifies; teardown() (reverse
order, idempotent, never raises) stops node programs, delay lines, Mininet, then removes whatever with
this run's prefix is still there. SIGTERM is turned into SystemExit while the network lives so that
`with make_network(...)` tears down on it too; Ctrl-C arrives as KeyboardInterrupt.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from typing import Any

from testbed.emu.base import NetworkBackend
from testbed.spec import Scenario

from testbed.emu.net.plan import NetPlan, make_plan
from testbed.emu.net.runstate import new_tag, remove_state, write_state
from testbed.emu.net.shaping import ShapingBackend, get_backend

log = logging.getLogger("testbed.emu.net")
SYSTEM_DIST_PACKAGES = "/usr/lib/python3/dist-packages"


def _import_mininet():
    try:
        import mininet.net  # noqa: F401
    except ImportError:
        if SYSTEM_DIST_PACKAGES not in sys.path and os.path.isdir(SYSTEM_DIST_PACKAGES):
            sys.path.append(SYSTEM_DIST_PACKAGES)
        import mininet.net  # noqa: F401
    import mininet.log
    import mininet.net
    import mininet.nodelib

    mininet.log.setLogLevel("error")
    mininet.net.Mininet.inited = True  # skip fixLimits(): no host-wide sysctl changes
    return mininet


def _sigterm(signum, frame):  # noqa: ARG001
    raise SystemExit(128 + signum)


class MininetNetwork(NetworkBackend):
    def __init__(
        self,
        scenario: Scenario,
        shaping: str | None = None,
        verify: str = "quick",
        cpu_limits: bool = True,
        tag: str | None = None,
        shaping_options: dict[str, Any] | None = None,
        netns: dict[str, int] | None = None,
        second_host: tuple[str, ...] = (),
    ):
        super().__init__(scenario)
        self.netns = netns  # host -> pid whose network namespace the host uses (docker runtime); None: new ones
        self.requested_shaping = shaping
        self.verify_mode = verify
        self.cpu_limits = cpu_limits
        self.tag = tag
        self.shaping_options = shaping_options or {}
        self.shaping: ShapingBackend | None = None
        self.plan: NetPlan | None = None
        self.net = None
        self.hosts: dict[str, Any] = {}
        self.procs: list[subprocess.Popen] = []
        self.cgroups = None
        self.warnings: list[str] = []
        self.report: dict[str, Any] = {}
        self.timings: dict[str, float] = {}
        self._old_sigterm = None
        self._torn_down = False
        self.second_host = frozenset(second_host)  # nodes on a second emulated host, joined by a tunnel (tunnel.py)
        self.split = None

    # ---- NetworkBackend -------------------------------------------------------------------------------
    @property
    def backends(self) -> dict[str, str]:
        out = {
            "network": "mininet",
            "shaping": self.shaping.name if self.shaping else (self.requested_shaping or "auto"),
        }
        if self.second_host:
            out["hosts"] = "two emulated hosts, vxlan tunnel"
        return out

    def check(self) -> None:
        """Everything that can fail before anything is built: root, tools, the spec against the backend."""
        from testbed.emu.net.probe import choose_shaping, require_root

        require_root("--net mininet")
        name = choose_shaping(self.requested_shaping)
        self.shaping = get_backend(name, seed=self.scenario.spec.seed, **self.shaping_options)
        self.warnings = self.shaping.check(self.scenario)
        self.tag = self.tag or new_tag()
        self.plan = make_plan(self.scenario, self.tag)
        if self.second_host:
            from testbed.emu.net.tunnel import crossing_links

            crossing_links(self.scenario, self.second_host)
        for w in self.warnings:
            log.warning(w)
            print(f"warning: {w}", file=sys.stderr)

    def build(self) -> None:
        t0 = time.monotonic()
        if self.plan is None:
            self.check()
        assert self.plan and self.shaping
        mn = _import_mininet()
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
            try:
                self._old_sigterm = signal.signal(signal.SIGTERM, _sigterm)
            except ValueError:  # not the main thread
                self._old_sigterm = None
        write_state(
            self.tag,
            kind="mininet",
            scenario=self.scenario.source,
            hosts=self.plan.hosts,
            bridges=list(self.plan.switches.values()),
        )
        plan, sc = self.plan, self.scenario
        net = mn.net.Mininet(
            topo=None, build=False, controller=None, autoSetMacs=False, inNamespace=False, waitConnected=False
        )
        self.net = net
        nodes: dict[str, Any] = {}
        host_kw: dict[str, Any] = {}
        if self.netns:
            from testbed.emu.net.nshost import netns_host_class

            host_kw["cls"] = netns_host_class(mn.node)
        for h in plan.hosts:
            if self.netns:
                host_kw["netns_pid"] = self.netns[h]
            nodes[h] = net.addHost(plan.labels[h], ip=f"{plan.addresses[h]}/32", **host_kw)
        for j, (s, br) in enumerate(plan.switches.items()):
            nodes[s] = net.addSwitch(br, cls=mn.nodelib.LinuxBridge, dpid=f"{j + 1:016x}")
        for i, l in enumerate(sc.links):
            ia, ib = plan.link_intfs[i]
            net.addLink(nodes[l.a], nodes[l.b], intfName1=ia, intfName2=ib)
        net.build()
        net.start()
        self.hosts = {h: nodes[h] for h in plan.hosts}
        self._accept_bridged()
        self.timings["mininet_s"] = time.monotonic() - t0
        self._configure_hosts()
        if self.second_host:
            from testbed.emu.net.tunnel import TwoHosts

            self.split = TwoHosts(self.second_host, self.tag)
            self.split.build(self)
        self.timings["addressing_s"] = time.monotonic() - t0 - self.timings["mininet_s"]
        t1 = time.monotonic()
        self.shaping.apply(self)
        self.timings["shaping_s"] = time.monotonic() - t1
        if self.cpu_limits and any(n.cpu_share for n in sc.nodes if n.role != "switch"):
            from testbed.emu.cgroups import CpuLimits

            self.cgroups = CpuLimits(self.tag)
            for n in sc.nodes:
                if n.role != "switch" and n.cpu_share:
                    self.cgroups.create(n.name, n.cpu_share)
        self.timings["build_s"] = time.monotonic() - t0
        if self.verify_mode != "off":
            from testbed.emu.net.verify import verify

            t2 = time.monotonic()
            self.report = verify(self, mode=self.verify_mode)
            self.timings["verify_s"] = time.monotonic() - t2

    def _configure_hosts(self) -> None:
        plan = self.plan
        for h in plan.hosts:
            lines = [
                "sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 "
                "net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 2>/dev/null",
                # TCP windows large enough for rate x delay of the links emulated here (namespaced sysctls)
                "sysctl -qw net.ipv4.tcp_rmem='4096 131072 33554432' net.ipv4.tcp_wmem='4096 16384 33554432' "
                "2>/dev/null || true",
            ]
            for intf in self.hosts[h].intfNames():
                lines.append(f"ip link set dev {intf} up")
                lines.append(f"sysctl -qw net.ipv4.conf.{intf}.rp_filter=0 2>/dev/null")
            for dst, dev in plan.routes.get(h, []):
                lines.append(f"ip route replace {dst}/32 dev {dev} src {plan.addresses[h]}")
            self.run_in(h, ["sh", "-ec", "\n".join(lines) + "\n"])
        for br in plan.switches.values():  # root-namespace switch ports: no IPv6 chatter
            for name in os.listdir("/sys/class/net"):
                if name.startswith(br):
                    try:
                        with open(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6", "w") as f:
                            f.write("1")
                    except OSError:
                        pass

    def _accept_bridged(self) -> None:
        """Where bridged frames go through iptables (br_netfilter, bridge-nf-call-iptables = 1), an ACCEPT rule for
        this run's bridges, so that a FORWARD policy of DROP (a Docker engine with its defaults sets one) cannot cut
        the emulated network. Owned by the run: removed at teardown, and by `testbed cleanup` after a crash."""
        from testbed.emu.cleanup import bridged_accept_rule
        from testbed.emu.net.probe import bridge_nf_call_iptables

        if not bridge_nf_call_iptables():
            return
        rule = bridged_accept_rule(self.tag)
        r = subprocess.run(["iptables", "-w", "-I", "FORWARD", "1", *rule], capture_output=True, text=True)
        if r.returncode != 0:
            self.warnings.append(f"could not add the FORWARD ACCEPT rule for this run's bridges: {r.stderr.strip()}")

    def teardown(self) -> None:
        if self._torn_down:
            return
        self._torn_down = True
        t0 = time.monotonic()
        for p in reversed(self.procs):
            _kill_group(p)
        if self.shaping:
            _quiet(self.shaping.teardown)
        if self.hosts:
            from testbed.emu.cleanup import kill_namespace_processes

            _quiet(kill_namespace_processes, [h.pid for h in self.hosts.values() if h.pid])
        if self.net is not None:
            _quiet(self._stop_mininet)
        if self.cgroups:
            _quiet(self.cgroups.remove_all)
        if self.split is not None:
            _quiet(self.split.teardown)
        if self.tag:
            from testbed.emu.cleanup import cleanup_tag, remove_accept_rules

            _quiet(remove_accept_rules, {self.tag})
            _quiet(cleanup_tag, self.tag)
            remove_state(self.tag)
        if self._old_sigterm is not None:
            try:
                signal.signal(signal.SIGTERM, self._old_sigterm)
            except (ValueError, TypeError):
                pass
        self.timings["teardown_s"] = time.monotonic() - t0

    def _stop_mininet(self) -> None:
        net = self.net
        self.net = None
        # Faster than Mininet's per-link stop: deleting one end of a veth removes both; then the shells.
        for sw in net.switches:
            subprocess.run(["ip", "link", "del", sw.name], capture_output=True)
            for intf in sw.intfNames():
                subprocess.run(["ip", "link", "del", intf], capture_output=True)
            sw.terminate()
        for h in net.hosts:
            h.terminate()

    def address(self, node: str) -> str:
        assert self.plan, "build() first"
        try:
            return self.plan.addresses[node]
        except KeyError:
            raise KeyError(f"{node!r} is not a host of this network (switches have no address)") from None

    def popen(self, node: str, argv: list[str], **kwargs: Any) -> subprocess.Popen:
        if node not in self.hosts:
            raise KeyError(f"{node!r} is not a host of this network")
        if self.cgroups and self.cgroups.has(node):
            kwargs["preexec_fn"] = self.cgroups.preexec(node, kwargs.get("preexec_fn"))
        p = self.popen_raw(node, argv, **kwargs)
        self.procs.append(p)
        return p

    def probe_after(self) -> None:
        """RTT probes once more after the run (emu/links.json "after"), unless verification is off."""
        if self.verify_mode == "off" or not self.report.get("paths"):
            return
        from testbed.emu.net.verify import probe_after

        self.report["after"] = probe_after(self, self.verify_mode)

    def set_t0(self, t0_monotonic: float) -> None:
        assert self.shaping
        self.shaping.set_t0(t0_monotonic)

    def prepare_changes(self, groups: list[tuple[float, list]], t0: float) -> None:
        assert self.shaping
        self.shaping.prepare_changes(self, groups, t0)

    def apply_changes(self, changes: list) -> float:
        assert self.shaping
        return self.shaping.apply_changes(self, changes)

    def links_report(self) -> dict[str, Any]:
        out = dict(self.report)
        out.setdefault("backends", self.backends)
        out["shaping_detail"] = self.shaping.describe() if self.shaping else {}
        out["timings"] = dict(self.timings)
        if self.split is not None:
            out["two_hosts"] = self.split.describe()
        out["warnings"] = list(self.warnings) + list(self.report.get("warnings", []))
        return out

    # ---- helpers for shaping / verify ------------------------------------------------------------------
    def ns_key(self, node: str) -> str:
        return node if node in self.plan.addresses else "."

    def ns_prefix(self, node: str) -> list[str]:
        if node == "." or node not in self.hosts:
            return []
        return ["mnexec", "-a", str(self.hosts[node].pid)]

    def run_in(
        self, node: str, argv: list[str], input: str | None = None, check: bool = True, timeout: float | None = 60
    ) -> subprocess.CompletedProcess:
        r = subprocess.run(self.ns_prefix(node) + argv, input=input, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:3])} on {node}: {(r.stderr or r.stdout).strip()[:500]}")
        return r

    def popen_raw(self, node: str, argv: list[str], **kwargs: Any) -> subprocess.Popen:
        kwargs.setdefault("start_new_session", True)
        return subprocess.Popen(self.ns_prefix(node) + argv, **kwargs)

    def tc_batches(self, batches: dict[str, list[str]]) -> None:
        for key, lines in batches.items():
            if lines:
                self.run_in(key, ["tc", "-batch", "-"], input="\n".join(lines) + "\n")


def _kill_group(p: subprocess.Popen) -> None:
    try:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except OSError:
                p.terminate()
            try:
                p.wait(3)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except OSError:
                    p.kill()
                p.wait(3)
    except Exception:  # noqa: BLE001 - teardown never raises
        pass


def _quiet(fn, *args) -> None:
    try:
        fn(*args)
    except Exception as e:  # noqa: BLE001 - teardown never raises
        log.warning("teardown: %s: %s", getattr(fn, "__name__", fn), e)
