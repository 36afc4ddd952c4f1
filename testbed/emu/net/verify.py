"""Verified as built: measure every draft -> target path and compare with the configuration (emu/links.json).

RTT: UDP echo (measure.py) from every draft to each target it reaches, many samples (p50, p99, std), all
drafts at once (in batches, the machine is small). Rate: a TCP bulk transfer draft -> target for one path
per distinct (bottleneck rate, delay, loss) class, one at a time (shared links would otherwise be shared),
converted from goodput to the L2 rate tbf enforces ((MSS + 66) / MSS). A path outside tolerance gets a
warning (printed and recorded), not an error: the numbers are in the report either way.

After the run, `probe_after` measures the RTTs once more (no rate test: nothing queues behind it), so a residual
seen only in one of the two probes is known for a moment of contention, not a property of the network
(testbed/spec/asbuilt.py uses both), and the report shows the spread before vs after.

mode: "quick" (100 RTT samples 20 ms apart, 1.5 s rate runs, a representative path per class), "full" (200 samples,
3 s rate runs), "off".
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from testbed import wire
from testbed.emu.net.shaping import path_params
from testbed.spec.asbuilt import median_se_ms, rtt_tolerance_ms
from testbed.errors import EmulationError

if TYPE_CHECKING:
    from testbed.emu.net.mininet_net import MininetNetwork

MEASURE = str(Path(__file__).with_name("measure.py"))
PROBE_WIRE_BYTES = 64 + 8 + 20 + 14  # UDP payload + UDP + IP + Ethernet
ECHO_PORT = 7900
RATE_PORT = 7901
MSG_PORT = 7902
BATCH = 8


RATE_TOLERANCE = 0.10
JITTER_TOLERANCE = {"quick": 0.25, "full": 0.15}


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = (len(s) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def std(xs: list[float]) -> float:
    if len(xs) < 2:
        return 0.0
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def expected_path(net: "MininetNetwork", src: str, dst: str) -> dict[str, Any]:
    sc = net.scenario
    d_fwd, j_fwd, l_fwd = path_params(sc, src, dst)
    d_rev, j_rev, l_rev = path_params(sc, dst, src)
    # probes are tiny and 10-20 ms apart: a shaped hop's token bucket refills between them and passes each whole
    ser_ms = 1e3 * sum(
        wire.idle_serialisation_s(PROBE_WIRE_BYTES, sc.links[h.link].bw_mbps)
        for h in sc.paths[(src, dst)] + sc.paths[(dst, src)]
    )
    bws = [sc.links[h.link].bw_mbps for h in sc.paths[(src, dst)] if sc.links[h.link].bw_mbps]
    return {
        "one_way_delay_ms": d_fwd,
        "rtt_ms": d_fwd + d_rev + ser_ms,
        "rtt_std_ms": math.sqrt(j_fwd**2 + j_rev**2),
        "loss_pct": 100 * l_fwd,
        "rtt_loss_pct": 100 * (1 - (1 - l_fwd) * (1 - l_rev)),
        "rate_mbps": min(bws) if bws else None,
    }


def measure_rtts(
    net: "MininetNetwork", pairs: dict[str, list[str]], count: int, interval: float
) -> dict[tuple[str, str], dict]:
    addr = net.plan.addresses
    targets = sorted({t for ts in pairs.values() for t in ts})
    servers = []
    out: dict[tuple[str, str], dict] = {}
    try:
        for t in targets:
            p = net.popen_raw(
                t,
                [sys.executable, MEASURE, "echo-server", "--bind", addr[t], "--port", str(ECHO_PORT)],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            servers.append(p)
        for p in servers:
            p.stdout.readline()
        drafts = sorted(pairs)
        for i in range(0, len(drafts), BATCH):
            clients = {}
            for d in drafts[i : i + BATCH]:
                clients[d] = net.popen_raw(
                    d,
                    [
                        sys.executable,
                        MEASURE,
                        "rtt",
                        "--port",
                        str(ECHO_PORT),
                        "--count",
                        str(count),
                        "--interval",
                        str(interval),
                        *[addr[t] for t in pairs[d]],
                    ],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            for d, c in clients.items():
                so, se = c.communicate(timeout=60 + count * interval * 20)
                try:
                    res = json.loads(so)
                except ValueError:
                    for t in pairs[d]:
                        out[(d, t)] = {"error": (se or so).strip()[-300:]}
                    continue
                for t in pairs[d]:
                    out[(d, t)] = {"rtt_us": res["rtt_us"][addr[t]], "lost": res["lost"][addr[t]]}
    finally:
        for p in servers:
            p.kill()
            p.wait()
    return out


def measure_rate(net: "MininetNetwork", src: str, dst: str, duration: float, warmup: float = 0.5) -> dict[str, Any]:
    addr = net.plan.addresses
    sink = net.popen_raw(
        dst,
        [
            sys.executable,
            MEASURE,
            "sink",
            "--bind",
            addr[dst],
            "--port",
            str(RATE_PORT),
            "--duration",
            str(duration),
            "--warmup",
            str(warmup),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    src_p = None
    try:
        sink.stdout.readline()
        src_p = net.popen_raw(
            src,
            [
                sys.executable,
                MEASURE,
                "source",
                "--to",
                addr[dst],
                "--port",
                str(RATE_PORT),
                "--duration",
                str(duration + warmup + 2),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        so, se = sink.communicate(timeout=duration + warmup + 30)
        res = json.loads(so)
    except (ValueError, subprocess.TimeoutExpired) as e:
        return {"error": str(e)}
    finally:
        for p in (src_p, sink):
            if p and p.poll() is None:
                p.kill()
                p.wait()
    mss = res.get("mss") or 1448
    res["wire_mbps"] = res["goodput_mbps"] * (mss + 66) / mss
    return res


def measure_messages(
    net: "MininetNetwork", src: str, dst: str, sizes: list[int], idle_s: float = 0.5
) -> dict[str, Any]:
    """Round trip of TCP messages of `sizes` bytes (each after idle_s without traffic, a 1-byte reply): what a prompt
    upload after a quiet moment meets, a shaped link's token bucket included (testbed.wire.link_burst_bytes)."""
    addr = net.plan.addresses
    server = net.popen_raw(
        dst,
        [sys.executable, MEASURE, "msg-server", "--bind", addr[dst], "--port", str(MSG_PORT)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        server.stdout.readline()
        r = net.run_in(
            src,
            [sys.executable, MEASURE, "msg", "--to", addr[dst], "--port", str(MSG_PORT), "--idle", str(idle_s)]
            + [str(n) for n in sizes],
            timeout=30 + len(sizes) * (idle_s + 5),
        )
        return json.loads(r.stdout)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def _stop_on_dead_paths(paths: list[dict[str, Any]]) -> None:
    """A path that returned no probe at all (and is not configured to lose nearly everything) cannot carry a run:
    stop before any node starts, with the likeliest cause."""
    dead = [e for e in paths if not e["measured"].get("samples") and e["configured"]["rtt_loss_pct"] < 90]
    if not dead:
        return
    from testbed.emu.runtime.engine import filtering_problem

    names = ", ".join(f"{e['src']}->{e['dst']}" for e in dead[:4]) + (
        f" and {len(dead) - 4} more" if len(dead) > 4 else ""
    )
    cause = filtering_problem() or "check `python -m testbed doctor` and the host's iptables FORWARD chain"
    raise EmulationError(
        f"path verification: {len(dead)} of {len(paths)} paths dead (every probe lost: {names}); "
        f"nothing was started. Likely cause: {cause}"
    )


def _probe_plan(sc, mode: str) -> tuple[dict[str, list[str]], int, float, float]:
    """(draft -> targets, RTT probes per path, probe interval, rate-test seconds) of a verification mode."""
    count, interval, rate_s = (200, 0.01, 3.0) if mode == "full" else (100, 0.02, 1.5)
    pairs = {d: list(sc.reachable.get(d, ())) for d in sc.drafts if sc.reachable.get(d)}
    # Probes of one path far apart compared with its jitter: jitter never reorders, so close probes would queue
    # behind each other and shrink the measured spread.
    max_jitter_s = max((path_params(sc, d, t)[1] / 1e3 for d, ts in pairs.items() for t in ts), default=0.0)
    return pairs, count, max(interval, 8 * max_jitter_s), rate_s


def rtt_stats(m: dict[str, Any]) -> dict[str, Any]:
    """p50 / p99 / mean / std (ms), samples and loss of one path's probes (measure_rtts' entry)."""
    xs = [x / 1e3 for x in m["rtt_us"]]
    return {
        "rtt_p50_ms": pct(xs, 0.5),
        "rtt_p99_ms": pct(xs, 0.99),
        "rtt_mean_ms": sum(xs) / len(xs) if xs else None,
        "rtt_std_ms": std(xs),
        "samples": len(xs),
        "lost": m["lost"],
        "loss_pct": 100 * m["lost"] / max(1, m["lost"] + len(xs)),
    }


def probe_after(net: "MininetNetwork", mode: str = "quick") -> dict[str, Any]:
    """The RTT probes of `verify` once more (after the run): {"paths": [{src, dst, measured, rtt_error_ms}], ...}."""
    sc = net.scenario
    pairs, count, interval, _ = _probe_plan(sc, mode)
    t0 = time.monotonic()
    rtts = measure_rtts(net, pairs, count, interval)
    paths = []
    for (d, t), m in sorted(rtts.items()):
        if "error" in m or not m.get("rtt_us"):
            paths.append({"src": d, "dst": t, "measured": {}, "error": m.get("error", "no RTT sample came back")})
            continue
        meas = rtt_stats(m)
        paths.append(
            {
                "src": d,
                "dst": t,
                "measured": meas,
                "rtt_error_ms": meas["rtt_p50_ms"] - expected_path(net, d, t)["rtt_ms"],
            }
        )
    return {"paths": paths, "probe_s": time.monotonic() - t0}


def verify(net: "MininetNetwork", mode: str = "quick", rate: bool = True) -> dict[str, Any]:
    sc = net.scenario
    pairs, count, interval, rate_s = _probe_plan(sc, mode)
    t0 = time.monotonic()
    rtts = measure_rtts(net, pairs, count, interval)
    warnings: list[str] = []
    paths: list[dict[str, Any]] = []
    for d, ts in pairs.items():
        for t in ts:
            exp = expected_path(net, d, t)
            m = rtts.get((d, t), {"error": "not measured"})
            entry: dict[str, Any] = {"src": d, "dst": t, "hops": [h.link for h in sc.paths[(d, t)]], "configured": exp}
            problems: list[str] = []
            if "error" in m:
                problems.append(f"RTT measurement failed: {m['error']}")
                entry["measured"] = {}
            else:
                meas = rtt_stats(m)
                entry["measured"] = meas
                if not meas["samples"]:
                    problems.append("no RTT sample came back")
                else:
                    err = meas["rtt_p50_ms"] - exp["rtt_ms"]
                    entry["rtt_error_ms"] = err
                    if abs(err) > rtt_tolerance_ms(exp["rtt_ms"], median_se_ms(meas["rtt_std_ms"], meas["samples"])):
                        problems.append(f"RTT p50 {meas['rtt_p50_ms']:.3f} ms vs configured {exp['rtt_ms']:.3f} ms")
                    if exp["rtt_std_ms"] > 0:
                        rel = (meas["rtt_std_ms"] - exp["rtt_std_ms"]) / exp["rtt_std_ms"]
                        entry["jitter_rel_error"] = rel
                        if abs(rel) > JITTER_TOLERANCE.get(mode, 0.25):
                            problems.append(
                                f"RTT std {meas['rtt_std_ms']:.3f} ms vs configured {exp['rtt_std_ms']:.3f} ms"
                            )
            entry["problems"] = problems
            paths.append(entry)
    t_rtt = time.monotonic() - t0
    _stop_on_dead_paths(paths)
    if rate:
        classes: dict[tuple, dict[str, Any]] = {}
        for e in paths:
            c = e["configured"]
            key = (
                c["rate_mbps"],
                round(c["one_way_delay_ms"], 3),
                round(c["loss_pct"], 6),
                e["dst"] if mode == "full" else "",
            )
            if mode == "full" or key not in classes:
                classes.setdefault(key, e)
        for key, e in classes.items():
            r = measure_rate(net, e["src"], e["dst"], rate_s)
            e["measured"]["rate"] = r
            if "error" in r:
                e["problems"].append(f"rate measurement failed: {r['error']}")
                continue
            e["measured"]["rate_mbps"] = r["wire_mbps"]
            exp_rate = e["configured"]["rate_mbps"]
            if exp_rate and e["configured"]["loss_pct"] == 0:
                rel = (r["wire_mbps"] - exp_rate) / exp_rate
                e["rate_rel_error"] = rel
                if abs(rel) > RATE_TOLERANCE:
                    e["problems"].append(f"rate {r['wire_mbps']:.1f} Mbit/s vs configured {exp_rate:g} Mbit/s")
    for e in paths:
        e["ok"] = not e["problems"]
        for p in e["problems"]:
            warnings.append(f"path {e['src']}->{e['dst']}: {p}")
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    links = []
    for i, l in enumerate(sc.links):
        ia, ib = net.plan.link_intfs[i]
        links.append({"index": i, **l.model_dump(), "intf_a": ia, "intf_b": ib})
    return {
        "backends": net.backends,
        "mode": mode,
        "tolerance": {
            "rtt_ms": "max(0.6, 3% of configured RTT, 2 x the standard error of the measured median)",
            "rate": RATE_TOLERANCE,
            "jitter_std": JITTER_TOLERANCE.get(mode, 0.25),
        },
        "addresses": dict(net.plan.addresses),
        "links": links,
        "paths": paths,
        "warnings": warnings,
        "verify_s": {"rtt": t_rtt, "total": time.monotonic() - t0},
    }
