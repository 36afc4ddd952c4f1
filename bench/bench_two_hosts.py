"""Two emulated hosts joined only by a VXLAN tunnel vs one host (`make bench-two-hosts`, root): the same topology,
workload and seed emulated with `python -m testbed run --net mininet`, once on one host and once with
--second-host NODES (testbed/emu/net/tunnel.py, docs/MULTIHOST.md).

Prints throughput, mean TTFT and mean TPOT of both emulations and their relative difference, each run's own
emulated-vs-simulated errors, and the tunnel's delay overhead: the measured RTT of every path that crosses the
hosts (links.json, as-built verification, 50 pings each) minus the same path's RTT on one host. Exit 1 when a
two-host metric differs from the one-host one by more than --tolerance (relative). Figures are for this machine
in this run (2 shared cores: noisy).

    python bench/bench_two_hosts.py [--topology topologies/star-4edge.yaml] [--second-host cloud0] [--json F]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
METRICS = ("output_token_throughput_tps", "ttft_ms.mean", "tpot_ms.mean")
WORKLOAD = ["workload.trace=synthetic", "workload.synthetic.n_requests=80", "workload.synthetic.rate_rps=4"]


def emulate(topology: str, out: Path, extra: list[str]) -> dict:
    argv = [sys.executable, "-m", "testbed", "run", topology, "--net", "mininet", "--quiet", "--out", str(out), *extra]
    for s in WORKLOAD:
        argv += ["--set", s]
    r = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    summary = json.loads((out / "emu" / "summary.json").read_text())
    compare = {m["metric"]: m for m in json.loads((out / "compare.json").read_text())["metrics"]}
    links = json.loads((out / "emu" / "links.json").read_text())
    return {"summary": summary, "compare": compare, "links": links}


def raw_tunnel_rtt(count: int = 400) -> dict:
    """RTT of X -> Y with nothing else on the path: through one bridge (one host) vs through bridge + VXLAN tunnel
    + bridge (two hosts, testbed.emu.net.tunnel's layout). Every interface lives in namespaces named
    dsdprobe<pid>* (left alone by `testbed cleanup` while this process lives), deleted at the end."""
    import os

    from testbed.emu.net.tunnel import UNDERLAY, UNDERLAY_MTU, VXLAN_PORT

    base = f"dsdprobe{os.getpid()}"
    x, y, a, b = (f"{base}{s}" for s in "xyab")

    def ip(*cmds: str) -> None:
        for c in cmds:
            subprocess.run(["ip", *c.split()], check=True, capture_output=True)

    def ping() -> float:
        r = subprocess.run(
            ["ip", "netns", "exec", x, "ping", "-q", "-c", str(count), "-i", "0.005", "10.79.0.2"],
            capture_output=True,
            text=True,
            check=True,
        )
        return float(r.stdout.strip().splitlines()[-1].split("=")[1].split("/")[1])  # rtt min/avg/max/mdev

    try:
        ip(*(f"netns add {n}" for n in (x, y, a, b)))
        ip(
            f"-n {x} link add e0 type veth peer name px netns {a}",
            f"-n {y} link add e0 type veth peer name py netns {a}",
            f"-n {x} addr add 10.79.0.1/24 dev e0",
            f"-n {y} addr add 10.79.0.2/24 dev e0",
            f"-n {a} link add br0 type bridge",
            f"-n {a} link set px master br0",
            f"-n {a} link set py master br0",
            *(f"-n {n} link set {i} up" for n, i in ((x, "e0"), (y, "e0"), (a, "px"), (a, "py"), (a, "br0"))),
        )
        ping()  # warm-up (ARP)
        direct = ping()
        # the same two hosts, Y now behind a VXLAN tunnel: a.br0 <-vx-> b.br0 over an underlay veth a.u0 - b.u0
        ip(
            f"-n {a} link set py netns {b}",
            f"-n {a} link add u0 mtu {UNDERLAY_MTU} type veth peer name u0 netns {b} mtu {UNDERLAY_MTU}",
            f"-n {a} addr add {UNDERLAY[0]}/30 dev u0",
            f"-n {b} addr add {UNDERLAY[1]}/30 dev u0",
            f"-n {b} link add br0 type bridge",
            f"-n {a} link add vx0 type vxlan id 100 local {UNDERLAY[0]} remote {UNDERLAY[1]} dstport {VXLAN_PORT} dev "
            "u0",
            f"-n {b} link add vx0 type vxlan id 100 local {UNDERLAY[1]} remote {UNDERLAY[0]} dstport {VXLAN_PORT} dev "
            "u0",
            f"-n {a} link set vx0 master br0",
            f"-n {b} link set vx0 master br0",
            f"-n {b} link set py master br0",
            *(
                f"-n {n} link set {i} up"
                for n, i in ((a, "u0"), (b, "u0"), (a, "vx0"), (b, "vx0"), (b, "br0"), (b, "py"))
            ),
        )
        ping()
        tunnel = ping()
    finally:
        for n in (x, y, a, b):
            subprocess.run(["ip", "netns", "del", n], capture_output=True, check=False)
    return {"pings": count, "direct_rtt_ms": direct, "tunnel_rtt_ms": tunnel, "overhead_rtt_ms": tunnel - direct}


def metric(summary: dict, key: str) -> float:
    v = summary
    for part in key.split("."):
        v = v[part]
    return float(v)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--topology", default=str(ROOT / "topologies/star-4edge.yaml"))
    ap.add_argument("--second-host", default="cloud0")
    ap.add_argument("--tolerance", type=float, default=0.05)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--raw-only", action="store_true", help="only the tunnel alone (no emulation)")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-two-hosts-"))
    if a.raw_only:
        r = raw_tunnel_rtt()
        print(json.dumps(r))
        return 0
    one = emulate(a.topology, tmp / "one", [])
    two = emulate(a.topology, tmp / "two", ["--second-host", a.second_host])
    second = set(a.second_host.split(","))
    out = {"topology": a.topology, "second_host": sorted(second), "runs": str(tmp), "metrics": {}, "paths": []}
    print(f"{'metric':<30}{'one host':>12}{'two hosts':>12}{'diff':>9}{'sim err 1':>11}{'sim err 2':>11}")
    worst = 0.0
    for m in METRICS:
        v1, v2 = metric(one["summary"], m), metric(two["summary"], m)
        d = (v2 - v1) / v1
        worst = max(worst, abs(d))
        e1, e2 = one["compare"][m]["rel_error"], two["compare"][m]["rel_error"]
        out["metrics"][m] = {"one_host": v1, "two_hosts": v2, "rel_diff": d, "sim_err_one": e1, "sim_err_two": e2}
        print(f"{m:<30}{v1:>12.2f}{v2:>12.2f}{100 * d:>+8.1f}%{100 * e1:>+10.1f}%{100 * e2:>+10.1f}%")
    by_path = {(p["src"], p["dst"]): p for p in one["links"]["paths"]}
    deltas = []
    for p in two["links"]["paths"]:
        if (p["src"] in second) == (p["dst"] in second):
            continue
        q = by_path.get((p["src"], p["dst"]))
        if q is None or "measured" not in p or "measured" not in q:
            continue
        d = p["measured"]["rtt_mean_ms"] - q["measured"]["rtt_mean_ms"]
        deltas.append(d)
        out["paths"].append(
            {
                "src": p["src"],
                "dst": p["dst"],
                "rtt_one_ms": q["measured"]["rtt_mean_ms"],
                "rtt_two_ms": p["measured"]["rtt_mean_ms"],
                "tunnel_rtt_ms": d,
            }
        )
    if deltas:
        mean = sum(deltas) / len(deltas)
        out["tunnel_rtt_overhead_ms"] = mean
        print(
            f"tunnel: mean RTT overhead on {len(deltas)} crossing paths {mean:+.3f} ms "
            f"(per path: {', '.join(f'{d:+.3f}' for d in deltas)}); VXLAN "
            f"{two['links']['two_hosts']['overhead_bytes']} "
            f"bytes per packet, inner MTU {two['links']['two_hosts']['inner_mtu']}"
        )
    raw = raw_tunnel_rtt()
    out["raw"] = raw
    print(
        f"tunnel alone (no shaping, {raw['pings']} pings each): RTT {raw['direct_rtt_ms']:.3f} ms through one bridge, "
        f"{raw['tunnel_rtt_ms']:.3f} ms through bridge + VXLAN + bridge: {raw['overhead_rtt_ms'] * 1000:+.0f} us per "
        "round trip"
    )
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(out, indent=2) + "\n")
    print(f"runs kept in {tmp}")
    if worst > a.tolerance:
        print(f"two hosts differ from one host by {100 * worst:.1f}% > {100 * a.tolerance:.0f}%")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
