"""Changing links in the emulator (`make bench-schedule`; needs root and the Mahimahi traces).

1. Capacity tracking: one edge -> one target link (10 ms one-way) whose edge -> target direction follows a
   Mahimahi trace (default Verizon-LTE-short.up, 5.95 Mbit/s mean), saturated by one TCP bulk flow for
   --seconds. Per 100 ms window, the IP bytes that crossed (TCP payload received x 1500 / 1448, windows shifted by
   the one-way delay) against the trace's capacity (opportunities x 1500 bytes). Goal: median |error| <= 5 %,
   p90 <= 15 % (windows with capacity, after a 2 s warm-up in which TCP fills the queue).
2. Delay steps: the same link without a trace, one-way delay alternating 10 / 30 ms every 0.5 s (20 steps).
   UDP probes every 0.5 ms from the edge, one-way delay from the target's receive stamp (one CLOCK_MONOTONIC).
   A step's lateness = the send time of the first probe that sees the new delay - the scheduled time (the 10 ->
   30 ms steps; resolution 0.5 ms), and the delay line's own acknowledgement for all 20 (emu/events.parquet's
   lateness: when the delay line applied it; one without traffic that way applies it when it next wakes, before
   any packet, so on a busy host its acknowledgement can be late while no packet sees the old setting).
   Goal (on packets, the probes): <= 5 ms.
Prints both and exits 1 when a goal is missed.

usage: python bench/bench_schedule.py [--trace NAME] [--seconds 20] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from testbed.emu.net import make_network  # noqa: E402
from testbed.emu.net.probe import require_root  # noqa: E402
from testbed.emu.schedule import LiveSchedule  # noqa: E402
from testbed.spec import load_scenario  # noqa: E402
from traces.nettrace import find_net_trace, load_mahimahi  # noqa: E402

TOPO = """name: bench-schedule
nodes:
  - {name: edge0, role: draft}
  - {name: cloud0, role: target}
links:
  - {a: edge0, b: cloud0, delay_ms: 10}
workload: {duration_s: 60}
schedule:
"""
MSS_PAYLOAD, IP_PACKET = 1448, 1500

RECEIVER = r"""
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 5201)); s.listen(1); print("listening", flush=True)
c, _ = s.accept(); end = time.monotonic() + float(sys.argv[2])
out = open(sys.argv[3], "w")
while time.monotonic() < end:
    b = c.recv(1 << 16)
    if not b: break
    out.write(f"{time.monotonic():.6f} {len(b)}\n")
out.close()
"""
SENDER = r"""
import socket, sys
s = socket.create_connection((sys.argv[1], 5201)); buf = b"x" * (1 << 16)
try:
    while True: s.sendall(buf)
except OSError: pass
"""
ECHO = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((sys.argv[1], 5202)); print("listening", flush=True)
out = open(sys.argv[2], "w"); end = time.monotonic() + float(sys.argv[3])
s.settimeout(0.5)
while time.monotonic() < end:
    try: b, _ = s.recvfrom(64)
    except socket.timeout: continue
    out.write(f"{b.decode()} {time.monotonic():.6f}\n")
out.close()
"""
PROBER = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); end = time.monotonic() + float(sys.argv[2]); nxt =
time.monotonic()
while time.monotonic() < end:
    while time.monotonic() < nxt: pass
    s.sendto(f"{time.monotonic():.6f}".encode(), (sys.argv[1], 5202)); nxt += 0.0005
"""


def capacity_tracking(trace: str, seconds: float) -> dict:
    path = find_net_trace(trace)
    times = load_mahimahi(path)
    with tempfile.TemporaryDirectory() as tmp:
        topo = Path(tmp) / "topo.yaml"
        topo.write_text(TOPO + f"  links: [{{link: edge0-cloud0, trace_fwd: {path}}}]\n")
        sc = load_scenario(topo)
        with make_network(sc, "mininet", shaping="userspace", verify="off") as net:
            log = Path(tmp) / "recv.txt"
            rx = net.popen(
                "cloud0",
                [sys.executable, "-c", RECEIVER, net.address("cloud0"), str(seconds + 2), str(log)],
                stdout=subprocess.PIPE,
                text=True,
            )
            rx.stdout.readline()
            t0 = time.monotonic() + 0.2
            LiveSchedule(sc, net, None, None).start(t0)  # the trace counts from t0
            time.sleep(0.2)
            tx = net.popen("edge0", [sys.executable, "-c", SENDER, net.address("cloud0")])
            rx.wait(seconds + 30)
            tx.kill()
            tx.wait()
            rows = np.loadtxt(log, ndmin=2)
    t = (rows[:, 0] - t0 - 0.010) * 1e3  # ms at which the bytes left the traced hop
    ip_bytes = rows[:, 1] * IP_PACKET / MSS_PAYLOAD
    n_win = int(seconds * 10)
    got = np.bincount(np.clip((t // 100).astype(int), 0, n_win), weights=ip_bytes, minlength=n_win + 1)[:n_win]
    period = int(times[-1])
    ops = np.concatenate([times + k * period for k in range(int(seconds * 1e3 // period) + 2)])
    cap = np.bincount((ops[ops < n_win * 100] // 100).astype(int), minlength=n_win)[:n_win] * IP_PACKET
    keep = (np.arange(n_win) >= 20) & (cap > 0)
    err = np.abs(got[keep] - cap[keep]) / cap[keep]
    return {
        "trace": str(path),
        "windows": int(keep.sum()),
        "median_abs_error_pct": float(np.median(err) * 100),
        "p90_abs_error_pct": float(np.percentile(err, 90) * 100),
        "mean_capacity_mbps": float(cap[keep].sum() * 8 / (keep.sum() * 0.1) / 1e6),
        "mean_delivered_mbps": float(got[keep].sum() * 8 / (keep.sum() * 0.1) / 1e6),
    }


def delay_steps(n: int = 20, every: float = 0.5) -> dict:
    steps = "".join(f"    - {{at_s: {every * (k + 1):g}, delay_ms: {30 if k % 2 == 0 else 10}}}\n" for k in range(n))
    with tempfile.TemporaryDirectory() as tmp:
        topo = Path(tmp) / "topo.yaml"
        topo.write_text(TOPO + "  links:\n  - link: edge0-cloud0\n    steps:\n" + steps)
        sc = load_scenario(topo)
        dur = every * (n + 1) + 0.5
        with make_network(sc, "mininet", shaping="userspace", verify="off") as net:
            log = Path(tmp) / "echo.txt"
            rx = net.popen(
                "cloud0",
                [sys.executable, "-c", ECHO, net.address("cloud0"), str(log), str(dur + 1)],
                stdout=subprocess.PIPE,
                text=True,
            )
            rx.stdout.readline()
            t0 = time.monotonic() + 0.3
            live = LiveSchedule(sc, net, None, None)
            live.start(t0)
            pr = net.popen("edge0", [sys.executable, "-c", PROBER, net.address("cloud0"), str(dur)])
            pr.wait(dur + 30)
            rx.wait(dur + 30)
            live.stop()
            rows = np.loadtxt(log, ndmin=2)
    send, owd = rows[:, 0] - t0, (rows[:, 1] - rows[:, 0]) * 1e3
    late = []
    for k in range(0, n, 2):  # 10 -> 30 ms: the first probe sent after the step that takes 30 ms shows it (a
        t_step = every * (k + 1)  # decrease is blurred by no-reordering: probes wait for those held before)
        after = (send >= t_step - 0.05) & (send < t_step + every - 0.05)
        hit = np.flatnonzero(after & (owd > 20.0))
        if len(hit):
            late.append((send[hit[0]] - t_step) * 1e3)
    acks = [r[2] for r in live.rows]
    return {
        "steps": n,
        "measured": len(late),
        "probe_lateness_ms": late,
        "probe_lateness_ms_median": float(np.median(late)),
        "probe_lateness_ms_max": float(np.max(late)),
        "ack_lateness_ms": acks,
        "ack_lateness_ms_median": float(np.median(acks)),
        "ack_lateness_ms_p90": float(np.percentile(acks, 90)),
        "ack_lateness_ms_max": float(np.max(acks)),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trace", default="Verizon-LTE-short.up")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    require_root("bench-schedule")
    cap = capacity_tracking(args.trace, args.seconds)
    print(
        f"capacity tracking ({Path(cap['trace']).name}, {cap['windows']} windows of 100 ms): median |error| "
        f"{cap['median_abs_error_pct']:.1f} % (goal 5 %), p90 {cap['p90_abs_error_pct']:.1f} % (goal 15 %); "
        f"mean capacity {cap['mean_capacity_mbps']:.2f} Mbit/s, delivered {cap['mean_delivered_mbps']:.2f}"
    )
    st = delay_steps()
    print(
        f"delay steps ({st['measured']} increases of {st['steps']} steps seen by probes every 0.5 ms): lateness median "
        f"{st['probe_lateness_ms_median']:.2f} ms, max {st['probe_lateness_ms_max']:.2f} ms (goal 5 ms); delay line "
        f"acknowledgement median {st['ack_lateness_ms_median']:.2f} ms, p90 {st['ack_lateness_ms_p90']:.2f} ms, "
        f"max {st['ack_lateness_ms_max']:.2f} ms"
    )
    if args.json:
        Path(args.json).write_text(json.dumps({"capacity": cap, "delay_steps": st}, indent=1))
    # the goal is on packets (probes): a delay line applies a due change before it handles the next packet, so
    # an idle one (no traffic that way) may acknowledge late on a busy host without any packet seeing it
    ok = cap["median_abs_error_pct"] <= 5 and cap["p90_abs_error_pct"] <= 15 and st["probe_lateness_ms_max"] <= 5
    print("goals met" if ok else "goal missed")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
