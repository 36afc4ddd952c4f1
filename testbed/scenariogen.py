"""A seeded generator of random scenarios (topology + workload + policy) for validating fidelity on what users
bring, not only on the shipped topologies (`make validate-random`, bench/validate_random.py).

    python -m testbed.scenariogen --seed 1 --n 30 --out runs/random-scenarios [--duration 20] [--min-requests 0]

Scenario k of seed s is a function of (s, k) and of the trace families available (the Azure files may be absent). What
varies, each drawn independently:
- path length 1-4 hops from every edge to every target: 1 = edges linked straight to one target; 2-4 = edges ->
  access switch -> 0-2 aggregation links (shared by every edge: shared shaped links) -> a core switch -> targets;
- every link: rate 1-1000 Mbit/s (log-uniform; unshaped target links beyond the core), one-way delay 1-100 ms
  (log-uniform), jitter (a third of the links, up to a quarter of the delay, at most 5 ms), loss (a fifth of the
  links, 0.1-1 %);
- 1-3 edge groups of 1-4 edges (edge-cpu / edge-npu / edge-slow), 1-3 targets (cloud-gpu / cloud-gpu-large:
  heterogeneous verifiers), routing jsq / round_robin / random;
- trace family: azure-conv, azure-code (the Azure 2023 files, when found), burstgpt and mooncake (files in
  those formats written next to the topology, Poisson arrivals, lognormal lengths), synthetic;
- window policy: static:1-8, hf, specdec, awc; acceptance iid 0.6-0.9 or position decay;
- load: light or saturating (arrival rate relative to the verifiers' rough capacity).
Each scenario is written as DIR/rNNN/topology.yaml (valid: loaded through testbed.spec before it is kept) with
its trace file when it has one, and described in DIR/scenarios.json. Output lengths are clipped at 256 tokens
(workload.max_output_tokens) so a scenario drains within its budget.
"""

from __future__ import annotations

import argparse
import json
import math
import random
from pathlib import Path
from typing import Any

import yaml

TRACE_FAMILIES = ("azure-conv", "azure-code", "burstgpt", "mooncake", "synthetic")
WINDOW_POLICIES = ("static", "hf", "specdec", "awc")
LOADS = ("light", "saturating")
EDGE_PROFILES = ("edge-cpu", "edge-npu", "edge-slow")
TARGET_PROFILES = ("cloud-gpu", "cloud-gpu-large")
MAX_OUTPUT_TOKENS = 256


def _log_uniform(rng: random.Random, lo: float, hi: float) -> float:
    return math.exp(rng.uniform(math.log(lo), math.log(hi)))


def _link(rng: random.Random, shaped: bool = True) -> dict[str, Any]:
    d = round(_log_uniform(rng, 1.0, 100.0), 2)
    out: dict[str, Any] = {"delay_ms": d}
    if shaped:
        out["bw_mbps"] = round(_log_uniform(rng, 1.0, 1000.0), 1)
    if rng.random() < 1 / 3:
        out["jitter_ms"] = round(min(5.0, rng.uniform(0.05, 0.25) * d), 2)
    if rng.random() < 0.2:
        out["loss_pct"] = round(rng.uniform(0.1, 1.0), 2)
    return out


def _arrivals(rng: random.Random, rate: float, duration: float) -> list[float]:
    t, out = 0.0, []
    while True:
        t += rng.expovariate(rate)
        if t >= duration:
            return out
        out.append(t)


def _lengths(rng: random.Random) -> tuple[int, int]:
    return max(1, int(rng.lognormvariate(math.log(400), 0.8))), max(2, int(rng.lognormvariate(math.log(120), 0.7)))


def _trace_text(family: str, rng: random.Random, rate: float, duration: float) -> str:
    ts = _arrivals(rng, rate, duration)
    while len(ts) < 3:  # a scenario of fewer requests says nothing
        ts = _arrivals(rng, rate, duration)
    if family == "burstgpt":
        lines = ["Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type"]
        for t in ts:
            p, o = _lengths(rng)
            lines.append(f"{t:.3f},ChatGPT,{p},{o},{p + o},Conversation log")
        return "\n".join(lines) + "\n"
    else:  # mooncake
        rows = []
        for t in ts:
            p, o = _lengths(rng)
            rows.append(json.dumps({"timestamp": int(t * 1000), "input_length": p, "output_length": o, "hash_ids": []}))
        return "\n".join(rows) + "\n"


def generate(
    seed: int,
    k: int,
    out_dir: Path,
    duration_s: float = 20.0,
    families: tuple[str, ...] = TRACE_FAMILIES,
    min_requests: int = 0,
) -> dict[str, Any]:
    """Write scenario k of `seed` into out_dir (topology.yaml and its trace file); returns its description.

    min_requests > 0 lengthens the arrival window of a scenario whose rate would give fewer requests than that in
    duration_s (to min_requests / rate seconds): a light scenario of 20 s holds 6-30 requests, and with loss on its
    path one retransmission timeout moves its mean TTFT by tens of percent (sampling noise, not model error). The
    topology, policies and acceptance stay those of the scenario at duration_s (its own trace file is drawn from a
    generator of its own)."""
    rng = random.Random(f"dsd-scenariogen/{seed}/{k}")
    out_dir.mkdir(parents=True, exist_ok=True)
    hops = rng.randint(1, 4)
    n_targets = 1 if hops == 1 else rng.randint(1, 3)
    targets = [
        {"name": f"cloud{i}", "role": "target", "profile": rng.choice(TARGET_PROFILES)} for i in range(n_targets)
    ]
    nodes: list[dict[str, Any]] = list(targets)
    links: list[dict[str, Any]] = []
    if hops == 1:
        attach = "cloud0"
    else:
        chain = ["acc0"] + [f"agg{i}" for i in range(hops - 2)]
        core = chain[-1]  # the switch the targets hang off
        nodes += [{"name": s, "role": "switch"} for s in chain]
        for a, b in zip(chain, chain[1:]):
            links.append({"a": a, "b": b, **_link(rng)})  # shared by every edge
        for t in targets:
            links.append({"a": core, "b": t["name"], "delay_ms": round(rng.uniform(0.2, 2.0), 2)})
        attach = "acc0"
    groups = []
    for g in range(rng.randint(1, 3)):
        groups.append(
            {
                "prefix": f"e{g}x",
                "count": rng.randint(1, 4),
                "profile": rng.choice(EDGE_PROFILES),
                "link": {"to": attach, **_link(rng)},
            }
        )
    family = rng.choice(families)
    window = rng.choice(WINDOW_POLICIES)
    if window == "static":
        window = f"static:{rng.randint(1, 8)}"
    load = rng.choice(LOADS)
    # capacity is rough: a verifier serves a few requests per second at these lengths; saturating = well above it
    rate = (rng.uniform(0.3, 0.8) if load == "light" else rng.uniform(2.0, 4.0)) * n_targets
    base_s = duration_s
    duration_s = max(duration_s, round(min_requests / rate, 1))
    workload: dict[str, Any] = {
        "duration_s": duration_s,
        "max_output_tokens": MAX_OUTPUT_TOKENS,
        "max_requests": max(3, int(1.5 * rate * duration_s)),  # a burst of a real trace, capped
        "mapping": rng.choice(["round_robin", "random"]),
    }
    if family in ("azure-conv", "azure-code"):
        # a window of duration_s * rate_scale trace seconds replays in duration_s (arrivals are divided by the scale)
        scale = round(rate / (5.4 if family == "azure-conv" else 2.5), 3)
        workload.update(
            trace=family,
            start_s=round(rng.uniform(0, 3000), 1),
            rate_scale=scale,
            duration_s=round(duration_s * scale, 2),
        )
    elif family == "synthetic":
        workload.update(
            trace="synthetic",
            synthetic={
                "n_requests": max(3, int(rate * duration_s)),
                "rate_rps": round(rate, 3),
                "prompt_mean": 400,
                "output_mean": 120,
            },
        )
    else:
        name = "trace.csv" if family == "burstgpt" else "trace.jsonl"
        text = _trace_text(family, rng, rate, base_s)  # drawn even when lengthened: the rest of the scenario follows
        if duration_s > base_s:  # lengthened: a longer trace from a generator of its own, the main one left as is
            text = _trace_text(family, random.Random(f"dsd-scenariogen/{seed}/{k}/trace"), rate, duration_s)
        (out_dir / name).write_text(text)
        workload.update(trace=str((out_dir / name).resolve()), format=family)
    acc = (
        {"kind": "iid", "alpha": round(rng.uniform(0.6, 0.9), 2)}
        if rng.random() < 0.7
        else {
            "kind": "position_decay",
            "alpha": round(rng.uniform(0.8, 0.95), 2),
            "alpha_end": round(rng.uniform(0.5, 0.7), 2),
            "decay_tokens": 100.0,
        }
    )
    spec = {
        "name": f"random-s{seed}-{k:03d}",
        "description": f"scenariogen seed {seed} scenario {k}",
        "seed": seed * 1000 + k,
        "nodes": nodes,
        "edges": groups,
        "links": links,
        "workload": workload,
        "policy": {"window": window, "routing": rng.choice(["jsq", "round_robin", "random"])},
        "models": {"acceptance": acc},
    }
    path = out_dir / "topology.yaml"
    from testbed.errors import InputError
    from testbed.spec import load_scenario
    from testbed.workload import build_workload

    for _ in range(20):  # the Azure traces are bursty: a window with too few requests is drawn again
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        try:
            if len(build_workload(load_scenario(path))) >= 3:  # invalid spec -> InputError here, not in a run
                break
        except InputError as e:
            if "no requests in window" not in str(e):
                raise
        workload["start_s"] = round(rng.uniform(0, 3000), 1)
    else:
        raise RuntimeError(f"{path}: no window of the {family} trace with 3 requests found")
    return {
        "id": k,
        "seed": seed,
        "path": str(path),
        "hops": hops,
        "targets": n_targets,
        "edges": sum(g["count"] for g in groups),
        "trace": family,
        "window": window,
        "load": load,
        "rate_rps": round(rate, 3),
        "duration_s": duration_s,
        "routing": spec["policy"]["routing"],
        "shared_links": max(0, hops - 2),
        "jitter": any("jitter_ms" in (l.get("link") or l) for l in groups + links),
        "loss": any("loss_pct" in (l.get("link") or l) for l in groups + links),
    }


def generate_set(
    seed: int,
    n: int,
    out: Path,
    duration_s: float = 20.0,
    available: tuple[str, ...] | None = None,
    min_requests: int = 0,
) -> list[dict[str, Any]]:
    """Scenarios 0..n-1 of `seed` into out/rNNN/, and out/scenarios.json. `available`: trace families that can be
    used here (default: every family whose files are found; azure-* need the trace files)."""
    from traces import find_trace

    if available is None:
        ok = []
        for f in TRACE_FAMILIES:
            try:
                if f.startswith("azure"):
                    find_trace(f)
                ok.append(f)
            except Exception:  # noqa: BLE001 - a missing trace file only narrows the families
                pass
        available = tuple(ok)
    out.mkdir(parents=True, exist_ok=True)
    scen = [generate(seed, k, out / f"r{k:03d}", duration_s, available, min_requests) for k in range(n)]
    (out / "scenarios.json").write_text(json.dumps(scen, indent=1) + "\n")
    return scen


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of trace per scenario")
    ap.add_argument("--min-requests", type=int, default=0, help="lengthen a scenario to about this many requests")
    ap.add_argument("--out", type=Path, default=Path("runs/random-scenarios"))
    a = ap.parse_args(argv)
    for s in generate_set(a.seed, a.n, a.out, a.duration, min_requests=a.min_requests):
        print(
            f"{s['path']}: {s['hops']} hops, {s['edges']} edges, {s['targets']} targets, {s['trace']}, {s['window']}, "
            f"{s['load']} ({s['rate_rps']} req/s), routing {s['routing']}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
