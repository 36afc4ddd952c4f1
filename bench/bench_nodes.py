"""Node transport benchmark: loopback, profiled backend with zero compute.

    python bench/bench_nodes.py [--rounds 5000] [--seconds 3] [--clients 4] [--inflight 64]

1. VERIFY round-trip: one request, one VERIFY outstanding at a time (gamma = 4): p50 / p99 in microseconds,
   measured at the client from send to the VERIFY_RESULT (includes both ZeroMQ stacks, the target's decode,
   batching, backend and encode).
2. Throughput: `--inflight` requests spread over `--clients` DEALER sockets, each request always with one
   VERIFY outstanding: VERIFY messages per second one target answers (and its mean verify batch size).

The target is the real program (`python -m nodes.target`) on 127.0.0.1; the client is this process.
Figures are machine-dependent (a shared 2-core machine is noisy): compare ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import zmq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nodes import protocol as P  # noqa: E402
from nodes.backends import synthetic_tokens  # noqa: E402

TOPOLOGY = """
name: bench-nodes
seed: 1
nodes:
  - {name: cloud0, role: target, profile: zero}
  - {name: sw0, role: switch}
edges:
  - {prefix: edge, count: 8, profile: zero, link: {to: sw0}}
links:
  - {a: sw0, b: cloud0}
profiles:
  zero: {description: zero compute}
workload: {trace: synthetic, duration_s: null, synthetic: {n_requests: 1}}
models: {acceptance: {kind: iid, alpha: 0.8}}
run: {request_timeout_s: 30}
"""

OUTPUT_TOKENS = 100_000


def start_target(tmp: Path) -> tuple[subprocess.Popen, str]:
    spec = tmp / "topo.yaml"
    spec.write_text(TOPOLOGY)
    peers = tmp / "peers.json"
    peers.write_text(json.dumps({"cloud0": "tcp://127.0.0.1:0"}))
    out = tmp / "cloud0"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nodes.target",
            "--spec",
            str(spec),
            "--node",
            "cloud0",
            "--peers",
            str(peers),
            "--t0",
            f"{time.monotonic():.6f}",
            "--out",
            str(out),
            "--log-level",
            "WARNING",
        ],
        env=env,
        cwd=ROOT,
    )
    for _ in range(600):
        try:
            return p, json.loads((out / "ready.json").read_text())["endpoint"]
        except (OSError, ValueError, KeyError):
            if p.poll() is not None:
                raise SystemExit("target exited during startup")
            time.sleep(0.02)
    raise SystemExit("target not ready")


class Client:
    def __init__(self, ctx: zmq.Context, endpoint: str, name: str):
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.IDENTITY, name.encode())
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        self.enc = P.Encoder()
        self.sock.send(self.enc.hello(name, 1.0))
        self.wait(P.HELLO)

    def wait(self, t: int) -> dict:
        while True:
            m = P.decode(self.sock.recv())
            if m["t"] == t:
                return m

    def prefill(self, rid: int) -> None:
        self.sock.send(self.enc.prefill(rid, OUTPUT_TOKENS, synthetic_tokens(rid, 0, 128)))


def _echo(endpoint_file: str) -> None:
    ctx = zmq.Context()
    r = ctx.socket(zmq.ROUTER)
    port = r.bind_to_random_port("tcp://127.0.0.1")
    Path(endpoint_file).write_text(f"tcp://127.0.0.1:{port}")
    while True:
        i, d = r.recv_multipart()
        if d == b"stop":
            break
        r.send_multipart((i, d))


def floor_roundtrip(tmp: Path, rounds: int) -> list[float]:
    """The same ping-pong against a bare pyzmq ROUTER echo (blocking recv, no decoding): the floor."""
    f = tmp / "echo.endpoint"
    p = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import sys; sys.path.insert(0, {str(ROOT / 'bench')!r}); "
            f"import bench_nodes; bench_nodes._echo({str(f)!r})",
        ]
    )
    while not f.exists() or not f.read_text():
        time.sleep(0.02)
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(f.read_text())
    data = P.Encoder().verify(1, 1, synthetic_tokens(1, 0, 4))
    rtts = []
    for _ in range(rounds + 200):
        t = time.perf_counter()
        s.send(data)
        s.recv()
        rtts.append(time.perf_counter() - t)
    s.send(b"stop")
    p.wait(10)
    s.close()
    return sorted(rtts[200:])


def roundtrip(c: Client, rounds: int) -> list[float]:
    c.prefill(1)
    c.wait(P.PREFILL_DONE)
    produced = 1
    tok = synthetic_tokens(1, 0, 4)
    rtts = []
    sock, enc = c.sock, c.enc
    for i in range(rounds + 200):
        data = enc.verify(1, produced, tok)
        t = time.perf_counter()
        sock.send(data)
        m = P.decode(sock.recv())
        rtts.append(time.perf_counter() - t)
        produced += m["a"] + 1
    return sorted(rtts[200:])  # drop warm-up


def throughput(clients: list[Client], inflight: int, seconds: float) -> tuple[int, float, float]:
    produced: dict[int, int] = {}
    owner: dict[int, Client] = {}
    tok = synthetic_tokens(7, 0, 4)
    rid = 1000
    for i in range(inflight):
        c = clients[i % len(clients)]
        rid += 1
        owner[rid] = c
        c.prefill(rid)
    poller = zmq.Poller()
    for c in clients:
        poller.register(c.sock, zmq.POLLIN)
    pending = inflight
    while pending:  # prefills
        for s, _ in poller.poll(5000):
            m = P.decode(s.recv())
            if m["t"] == P.PREFILL_DONE:
                produced[m["r"]] = 1
                pending -= 1
    for r, c in owner.items():
        c.sock.send(c.enc.verify(r, 1, tok))
    n = 0
    batch_sizes = 0
    t_end = time.perf_counter() + seconds
    t_start = time.perf_counter()
    by_sock = {c.sock: c for c in clients}
    while True:
        now = time.perf_counter()
        if now >= t_end:
            break
        for s, _ in poller.poll(1000):
            c = by_sock[s]
            while True:
                try:
                    data = s.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                m = P.decode(data)
                if m["t"] != P.VERIFY_RESULT:
                    continue
                r = m["r"]
                n += 1
                batch_sizes += m["bn"]
                p = produced[r] = produced[r] + m["a"] + 1
                s.send(c.enc.verify(r, p, tok))
    elapsed = time.perf_counter() - t_start
    return n, elapsed, batch_sizes / max(n, 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5000)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--inflight", type=int, default=64)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        proc, endpoint = start_target(Path(d))
        try:
            ctx = zmq.Context.instance()
            c0 = Client(ctx, endpoint, "edge0")
            rtts = roundtrip(c0, a.rounds)
            p50 = rtts[len(rtts) // 2] * 1e6
            p99 = rtts[int(len(rtts) * 0.99)] * 1e6
            print(
                f"VERIFY round-trip (gamma=4, zero compute, loopback): p50 {p50:.0f} us, p99 {p99:.0f} us "
                f"over {len(rtts)} rounds (goal: p50 < 150 us)"
            )
            fl = floor_roundtrip(Path(d), a.rounds)
            f50, f99 = fl[len(fl) // 2] * 1e6, fl[int(len(fl) * 0.99)] * 1e6
            print(
                f"bare pyzmq echo, same run (floor): p50 {f50:.0f} us, p99 {f99:.0f} us; "
                f"target node / floor at p50: {p50 / f50:.2f}x"
            )
            clients = [Client(ctx, endpoint, f"edge{i + 1}") for i in range(a.clients)]
            n, el, mean_b = throughput(clients, a.inflight, a.seconds)
            print(
                f"VERIFY throughput: {n / el:,.0f} msgs/s answered by one target ({n} in {el:.1f} s, "
                f"{a.inflight} requests in flight over {a.clients} sockets, mean verify batch {mean_b:.1f}) "
                f"(goal: >= 5,000/s)"
            )
        finally:
            proc.terminate()
            proc.wait(10)
        node = json.loads((Path(d) / "cloud0" / "node.json").read_text())
        print(
            f"target: {node['batches']} batches, bad messages {node['bad_messages_total']}, "
            f"timer lateness {node['timer_lateness']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
