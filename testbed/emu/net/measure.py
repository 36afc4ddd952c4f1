"""Tiny measurement programs run inside emulated hosts (standalone: imports nothing of the testbed, so it
runs as `python measure.py ...` in any namespace whatever the working directory).

  echo-server --bind ADDR --port P                 UDP echo until killed
  rtt --port P --count N --interval S [--size B] ADDR...   UDP RTT samples to each ADDR (interleaved)
  sink --bind ADDR --port P --duration D --warmup W    one TCP connection; prints received rate (JSON)
  source --to ADDR --port P --duration D             sends as fast as TCP allows
  msg-server --bind ADDR --port P                     one TCP connection: length-prefixed messages, 1-byte replies
  msg --to ADDR --port P --idle S SIZE...            each message after S s idle; its round trip (JSON, us)
Results are one JSON line on stdout.

RTT probes on a busy host (issue 17): the echo server and the RTT client ask for real-time scheduling (SCHED_FIFO,
nice -15 where that is refused), so what they measure is the network and its delay line, not how late the probe
programs got the CPU. (Kernel receive stamps cannot serve here: with the delay line on the receiving host's
ingress, the kernel stamps a packet before the delay line holds it.)
"""

from __future__ import annotations

import argparse
import json
import socket
import struct
import sys
import time


def prompt_scheduling() -> str:
    """Real-time scheduling for a probe program (woken at once when its packet comes): 'fifo', 'nice-15' or 'other'."""
    import os

    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
        return "fifo"
    except (OSError, AttributeError):
        try:
            os.setpriority(os.PRIO_PROCESS, 0, -15)
            return "nice-15"
        except OSError:
            return "other"


def echo_server(a: argparse.Namespace) -> None:
    prompt_scheduling()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((a.bind, a.port))
    print(json.dumps({"ready": True}), flush=True)
    while True:
        data, peer = s.recvfrom(65535)
        s.sendto(data, peer)


def rtt(a: argparse.Namespace) -> None:
    """Probes sent on a fixed schedule (random phase, not waiting for replies), replies matched by sequence."""
    import random
    import selectors

    sched = prompt_scheduling()
    sel = selectors.DefaultSelector()
    socks = {}
    for addr in a.addrs:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect((addr, a.port))
        s.setblocking(False)
        socks[addr] = s
        sel.register(s, selectors.EVENT_READ, addr)
    out = {addr: [] for addr in a.addrs}
    sent: dict = {}
    pad = b"\0" * max(0, a.size - 12)
    time.sleep(random.uniform(0, a.interval))  # desynchronise concurrent clients
    t_next = time.perf_counter()
    seq = 0
    total = a.count * len(a.addrs)
    deadline = None
    while True:
        now = time.perf_counter()
        if seq < total and now >= t_next:
            addr = a.addrs[seq % len(a.addrs)]
            t0 = time.perf_counter_ns()
            socks[addr].send(struct.pack("!IQ", seq, t0) + pad)
            sent[seq] = (addr, t0)
            seq += 1
            t_next += a.interval / len(a.addrs)
            if seq == total:
                deadline = time.perf_counter() + a.timeout
            continue
        if deadline is not None and (now >= deadline or not sent):
            break
        wait = (t_next - now) if seq < total else (deadline - now)
        for key, _ in sel.select(max(0.0, wait)):
            while True:
                try:
                    data = key.fileobj.recv(65535)
                except BlockingIOError:
                    break
                t1 = time.perf_counter_ns()
                rseq, rt0 = struct.unpack("!IQ", data[:12])
                got = sent.pop(rseq, None)
                if got and got[1] == rt0:
                    out[got[0]].append((t1 - rt0) / 1e3)
    lost = {addr: 0 for addr in a.addrs}
    for addr, _ in sent.values():
        lost[addr] += 1
    print(json.dumps({"rtt_us": out, "lost": lost, "sched": sched}), flush=True)


def _accept_one(a: argparse.Namespace) -> socket.socket:
    """Listen on a.bind:a.port, say ready on stdout, return the one connection accepted."""
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((a.bind, a.port))
    ls.listen(1)
    print(json.dumps({"ready": True}), flush=True)
    c, _ = ls.accept()
    return c


def sink(a: argparse.Namespace) -> None:
    c = _accept_one(a)
    mss = c.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG)
    buf = bytearray(1 << 20)
    start = time.perf_counter()
    t_w = start + a.warmup
    end = start + a.warmup + a.duration
    counted = 0
    c.settimeout(1.0)
    first = None
    while True:
        try:
            n = c.recv_into(buf)
        except socket.timeout:
            n = -1
        now = time.perf_counter()
        if n == 0 or now >= end:
            break
        if now >= t_w and n > 0:
            if first is None:
                first = now
            else:
                counted += n
    secs = (now - first) if first else 0.0
    c.close()
    print(
        json.dumps(
            {
                "bytes": counted,
                "seconds": secs,
                "mss": mss,
                "goodput_mbps": counted * 8 / secs / 1e6 if secs > 0 else 0.0,
            }
        ),
        flush=True,
    )


def source(a: argparse.Namespace) -> None:
    s = socket.create_connection((a.to, a.port), timeout=10)
    data = b"\0" * (1 << 18)
    end = time.perf_counter() + a.duration
    try:
        while time.perf_counter() < end:
            s.sendall(data)
    except OSError:
        pass
    s.close()


def msg_server(a: argparse.Namespace) -> None:
    prompt_scheduling()
    c = _accept_one(a)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while True:
        hdr = c.recv(4, socket.MSG_WAITALL)
        if len(hdr) < 4:
            return
        left = struct.unpack("!I", hdr)[0]
        while left > 0:
            got = c.recv(min(left, 1 << 16))
            if not got:
                return
            left -= len(got)
        c.sendall(b"k")


def msg(a: argparse.Namespace) -> None:
    """A message of each size (4-byte length prefix + payload), each after `idle` seconds without traffic: the time
    from the first byte written to the 1-byte reply (the message's transfer plus one small message's round trip)."""
    sched = prompt_scheduling()
    c = socket.create_connection((a.to, a.port), timeout=10)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    out = []
    for n in a.sizes:
        time.sleep(a.idle)
        t = time.perf_counter()
        c.sendall(struct.pack("!I", n) + b"\0" * n)
        c.recv(1)
        out.append(int((time.perf_counter() - t) * 1e6))
    c.close()
    print(json.dumps({"sizes": a.sizes, "rtt_us": out, "sched": sched}), flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("echo-server")
    e.add_argument("--bind", required=True)
    e.add_argument("--port", type=int, required=True)
    r = sub.add_parser("rtt")
    r.add_argument("--port", type=int, required=True)
    r.add_argument("--count", type=int, default=100)
    r.add_argument("--interval", type=float, default=0.01)
    r.add_argument("--size", type=int, default=64)
    r.add_argument("--timeout", type=float, default=2.0)
    r.add_argument("addrs", nargs="+")
    k = sub.add_parser("sink")
    k.add_argument("--bind", required=True)
    k.add_argument("--port", type=int, required=True)
    k.add_argument("--duration", type=float, default=2.0)
    k.add_argument("--warmup", type=float, default=0.5)
    s = sub.add_parser("source")
    s.add_argument("--to", required=True)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--duration", type=float, default=3.0)
    m = sub.add_parser("msg-server")
    m.add_argument("--bind", required=True)
    m.add_argument("--port", type=int, required=True)
    g = sub.add_parser("msg")
    g.add_argument("--to", required=True)
    g.add_argument("--port", type=int, required=True)
    g.add_argument("--idle", type=float, default=0.5)
    g.add_argument("sizes", type=int, nargs="+")
    a = p.parse_args(argv)
    {"echo-server": echo_server, "rtt": rtt, "sink": sink, "source": source, "msg-server": msg_server, "msg": msg}[
        a.cmd
    ](a)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)
