"""Accuracy and scale of the emulated network (`make bench-net`; needs root).

Accuracy, per available shaping backend, on one star network (edges -> sw0 -> cloud0, the sw0-cloud0 link
unshaped), each path measured alone (the machine is small):
  - one-way delay {1, 5, 20, 50, 100} ms: UDP RTT p50, minus the p50 of an unshaped path, halved, vs configured
    (goal: error <= max(0.3 ms, 3 %));
  - jitter {1, 2, 5} ms std at 20 ms: RTT std vs sqrt(2) x configured (goal: within 10 %);
  - rate {1, 10, 100, 500} Mbit/s: TCP, converted to the L2 rate tbf enforces (goal: within 5 %);
  - loss 5 %: round-trip probe loss vs 1 - 0.95^2;
  - a message after idle {4, 16, 64} KB at 1 and 10 Mbit/s: TCP round trip minus a 100-byte message's, vs the
    same difference in the simulator (testbed.sim.network.idle_transfer_s: (wire bytes - the token bucket's burst)
    x byte time) (goal: within max(1 ms, 10 %)).
Scale: star-N (N = 4, 16, 64) with 100 Mbit/s, 10 ms edge links: build and teardown seconds (no verify),
and the number of dsd-prefixed objects (namespaces' shells, delay lines, links, cgroups, ...) before and after.

Exits 1 when a goal above is missed (the loss row has none).

usage: python bench/bench_net.py [--backends netem,userspace] [--scale 4,16,64] [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from testbed.emu.cleanup import inventory  # noqa: E402
from testbed.emu.net import make_network  # noqa: E402
from testbed.emu.net.probe import require_root, shaping_support  # noqa: E402
from testbed import wire  # noqa: E402
from testbed.emu.net.verify import measure_messages, measure_rate, measure_rtts, pct  # noqa: E402
from testbed.sim.network import idle_transfer_s  # noqa: E402
from testbed.spec import load_scenario  # noqa: E402

DELAYS = [1, 5, 20, 50, 100]
JITTERS = [1, 2, 5]
RATES = [1, 10, 100, 500]
LOSS = 5.0
BURST_RATES = [1, 10]
BURST_SIZES = [4000, 16000, 64000]

HEAD = """name: bench
seed: 1
workload: {trace: synthetic}
"""


def accuracy_yaml() -> str:
    edges = [("base", {})]
    edges += [(f"d{d}", {"delay_ms": d}) for d in DELAYS]
    edges += [(f"j{j}", {"delay_ms": 20, "jitter_ms": j}) for j in JITTERS]
    edges += [(f"r{r}", {"bw_mbps": r, "delay_ms": 1}) for r in RATES]
    edges += [("l5", {"loss_pct": LOSS})]
    nodes = ["  - {name: cloud0, role: target}", "  - {name: sw0, role: switch}"]
    links = ["  - {a: sw0, b: cloud0}"]
    for name, params in edges:
        nodes.append(f"  - {{name: {name}, role: draft}}")
        links.append("  - {" + ", ".join([f"a: {name}", "b: sw0"] + [f"{k}: {v}" for k, v in params.items()]) + "}")
    return HEAD + "nodes:\n" + "\n".join(nodes) + "\nlinks:\n" + "\n".join(links) + "\n"


def star_yaml(n: int) -> str:
    return (
        HEAD
        + f"""nodes:
  - {{name: cloud0, role: target}}
  - {{name: sw0, role: switch}}
edges:
  - {{prefix: edge, count: {n}, link: {{to: sw0, bw_mbps: 100, delay_ms: 10}}}}
links:
  - {{a: sw0, b: cloud0, bw_mbps: 1000, delay_ms: 1}}
"""
    )


def load(text: str, tmp: Path, name: str):
    f = tmp / f"{name}.yaml"
    f.write_text(text)
    return load_scenario(f)


def rtt_ms(net, edge: str, count: int, interval: float) -> list[float]:
    r = measure_rtts(net, {edge: ["cloud0"]}, count, interval)[(edge, "cloud0")]
    return [x / 1e3 for x in r.get("rtt_us", [])], r.get("lost", 0)


def accuracy(backend: str, tmp: Path, quick: bool) -> dict:
    sc = load(accuracy_yaml(), tmp, "accuracy")
    n = 60 if quick else 200
    out: dict = {"delay": [], "jitter": [], "rate": [], "loss": []}
    with make_network(sc, "mininet", shaping=backend, verify="off") as net:
        base, _ = rtt_ms(net, "base", n, 0.01)
        b50 = pct(base, 0.5)
        out["base_rtt_p50_ms"] = b50
        for d in DELAYS:
            xs, _ = rtt_ms(net, f"d{d}", n, 0.01)
            one_way = (pct(xs, 0.5) - b50) / 2
            out["delay"].append(
                {
                    "configured_ms": d,
                    "measured_ms": one_way,
                    "error_ms": one_way - d,
                    "raw_rtt_p50_ms": pct(xs, 0.5),
                    "rtt_p99_ms": pct(xs, 0.99),
                    "goal_ok": abs(one_way - d) <= max(0.3, 0.03 * d),
                }
            )
        for j in JITTERS:
            xs, _ = rtt_ms(net, f"j{j}", n, max(0.01, 8 * j / 1e3))
            exp = math.sqrt(2) * j
            s = statistics.stdev(xs)
            out["jitter"].append(
                {
                    "configured_std_ms": j,
                    "expected_rtt_std_ms": exp,
                    "measured_rtt_std_ms": s,
                    "rel_error": s / exp - 1,
                    "rtt_p50_ms": pct(xs, 0.5),
                    "goal_ok": abs(s / exp - 1) <= 0.10,
                }
            )
        for r in RATES:
            m = measure_rate(net, f"r{r}", "cloud0", duration=1.5 if quick else 3.0)
            w = m.get("wire_mbps", float("nan"))
            out["rate"].append(
                {"configured_mbps": r, "measured_mbps": w, "rel_error": w / r - 1, "goal_ok": abs(w / r - 1) <= 0.05}
            )
        out["burst"] = []
        for r in BURST_RATES:
            sizes = [100, 100, *BURST_SIZES]
            m = measure_messages(net, f"r{r}", "cloud0", sizes, idle_s=0.4)
            ms = [x / 1e3 for x in m["rtt_us"]]
            base = min(ms[:2])
            sim_base = idle_transfer_s(sc, f"r{r}", "cloud0", wire.wire_bytes(100 + 4))
            for n, x in zip(BURST_SIZES, ms[2:]):
                exp = (idle_transfer_s(sc, f"r{r}", "cloud0", wire.wire_bytes(n + 4)) - sim_base) * 1e3
                out["burst"].append(
                    {
                        "mbps": r,
                        "bytes": n,
                        "expected_ms": exp,
                        "measured_ms": x - base,
                        "error_ms": x - base - exp,
                        "goal_ok": abs(x - base - exp) <= max(1.0, 0.1 * exp),
                    }
                )
        xs, lost = rtt_ms(net, "l5", 200 if quick else 1000, 0.002)
        exp = 1 - (1 - LOSS / 100) ** 2
        out["loss"].append(
            {
                "configured_pct": LOSS,
                "expected_rtt_loss_pct": 100 * exp,
                "measured_rtt_loss_pct": 100 * lost / max(1, lost + len(xs)),
            }
        )
        out["shaping_detail"] = None
    out["shaping_detail"] = {k: v for k, v in net.shaping.describe().items() if k != "delayline_stats"}
    return out


def scale(sizes: list[int], backend: str, tmp: Path) -> list[dict]:
    rows = []
    for n in sizes:
        sc = load(star_yaml(n), tmp, f"star{n}")
        before = inventory()
        net = make_network(sc, "mininet", shaping=backend, verify="off")
        t0 = time.monotonic()
        try:
            net.build()
            t_build = time.monotonic() - t0
            during = inventory()
        finally:
            t1 = time.monotonic()
            net.teardown()
            t_down = time.monotonic() - t1
        after = inventory()
        leftovers = {k: after[k] - before[k] for k in after if after[k] != before[k]}
        rows.append(
            {
                "edges": n,
                "build_s": t_build,
                "teardown_s": t_down,
                "objects_while_up": sum(during.values()) - sum(before.values()),
                "leftovers": sum(max(0, v) for v in leftovers.values()),
                "leftover_detail": leftovers,
                "timings": dict(net.timings),
            }
        )
    return rows


def table(title: str, header: list[str], rows: list[list]) -> None:
    print(f"\n{title}")
    w = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(header)]
    print("  " + "  ".join(str(h).rjust(w[i]) for i, h in enumerate(header)))
    for r in rows:
        print("  " + "  ".join(str(c).rjust(w[i]) for i, c in enumerate(r)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backends", default=None, help="comma-separated (default: every backend that works here)")
    ap.add_argument("--scale", default="4,16,64")
    ap.add_argument("--quick", action="store_true", help="fewer samples, shorter transfers")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    require_root("bench-net")
    support = shaping_support()
    backends = a.backends.split(",") if a.backends else [b for b, (ok, _) in support.items() if ok]
    for b, (ok, detail) in support.items():
        if not ok:
            print(f"backend {b}: not available here ({detail})")
    results: dict = {"accuracy": {}, "scale": {}}
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        for b in backends:
            acc = accuracy(b, tmp, a.quick)
            results["accuracy"][b] = acc
            f = lambda x, p=3: f"{x:.{p}f}"  # noqa: E731
            table(
                f"[{b}] one-way delay (unshaped path RTT p50 {acc['base_rtt_p50_ms']:.3f} ms subtracted)",
                ["configured ms", "measured ms", "error ms", "error %", "RTT p99 ms", "goal"],
                [
                    [
                        r["configured_ms"],
                        f(r["measured_ms"]),
                        f(r["error_ms"]),
                        f(100 * r["error_ms"] / r["configured_ms"], 1),
                        f(r["rtt_p99_ms"]),
                        "ok" if r["goal_ok"] else "MISS",
                    ]
                    for r in acc["delay"]
                ],
            )
            table(
                f"[{b}] jitter at 20 ms",
                ["configured std ms", "expected RTT std", "measured RTT std", "error %", "goal"],
                [
                    [
                        r["configured_std_ms"],
                        f(r["expected_rtt_std_ms"]),
                        f(r["measured_rtt_std_ms"]),
                        f(100 * r["rel_error"], 1),
                        "ok" if r["goal_ok"] else "MISS",
                    ]
                    for r in acc["jitter"]
                ],
            )
            table(
                f"[{b}] rate (1 ms delay)",
                ["configured Mbit/s", "measured Mbit/s", "error %", "goal"],
                [
                    [
                        r["configured_mbps"],
                        f(r["measured_mbps"], 2),
                        f(100 * r["rel_error"], 1),
                        "ok" if r["goal_ok"] else "MISS",
                    ]
                    for r in acc["rate"]
                ],
            )
            table(
                f"[{b}] a message after 0.4 s idle (round trip minus a 100-byte message's)",
                ["Mbit/s", "bytes", "expected ms", "measured ms", "error ms", "goal"],
                [
                    [r["mbps"], r["bytes"], f(r["expected_ms"], 2), f(r["measured_ms"], 2), f(r["error_ms"], 2)]
                    + ["ok" if r["goal_ok"] else "MISS"]
                    for r in acc["burst"]
                ],
            )
            table(
                f"[{b}] loss",
                ["configured %", "expected RTT loss %", "measured RTT loss %"],
                [
                    [r["configured_pct"], f(r["expected_rtt_loss_pct"], 1), f(r["measured_rtt_loss_pct"], 1)]
                    for r in acc["loss"]
                ],
            )
        sizes = [int(x) for x in a.scale.split(",") if x]
        if sizes and backends:
            rows = scale(sizes, backends[0], tmp)
            results["scale"][backends[0]] = rows
            table(
                f"[{backends[0]}] star-N build/teardown (goal: 64 edges up < 20 s, down < 10 s, nothing left)",
                ["edges", "build s", "teardown s", "objects while up", "leftovers"],
                [
                    [r["edges"], f"{r['build_s']:.2f}", f"{r['teardown_s']:.2f}", r["objects_while_up"], r["leftovers"]]
                    for r in rows
                ],
            )
    if a.json:
        a.json.write_text(json.dumps(results, indent=1, default=str))
    missed = [
        f"{b} {kind} {r}"
        for b, acc in results["accuracy"].items()
        for kind in ("delay", "jitter", "rate", "burst")
        for r in acc[kind]
        if not r["goal_ok"]
    ] + [
        f"star-{r['edges']}: build {r['build_s']:.1f} s, teardown {r['teardown_s']:.1f} s, {r['leftovers']} left"
        for rows in results["scale"].values()
        for r in rows
        if (r["edges"] == 64 and (r["build_s"] >= 20 or r["teardown_s"] >= 10)) or r["leftovers"]
    ]
    for m in missed:
        print(f"goal missed: {m}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
