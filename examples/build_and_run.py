"""Level 2: build a topology in Python, run it emulated (real node programs over ZeroMQ) and simulated, and
compare the two.

    python -m examples.build_and_run [--net mininet|none] [--out DIR] [--requests N]

The topology is a `TopologySpec` (the schema of topology files, testbed/spec/schema.py) built from Python
values: one target, an edge group of drafts on a shaped link, a synthetic workload. `resolve` turns it into
the Scenario both executors read. Emulation needs a network backend (`--net mininet`: an emulated network
with the links shaped, root needed; `--net none`: loopback, links not shaped) and writes its run directory
(spec.yaml, meta.json, emu/) under --out.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from testbed.emu.emulator import make_emulator
from testbed.emu.orchestrate import EmulateOptions, emulate, emulation_backends
from testbed.rundir import prepare
from testbed.sim import simulate
from testbed.spec import TopologySpec, resolve
from testbed.workload import build_workload


def build(n_drafts: int = 2, delay_ms: float = 10.0, requests: int = 12, window: str = "static:4") -> TopologySpec:
    return TopologySpec.model_validate(
        {
            "name": "example-python",
            "nodes": [{"name": "cloud0", "role": "target", "profile": "cloud-gpu"}],
            "edges": [
                {
                    "prefix": "edge",
                    "count": n_drafts,
                    "profile": "edge-cpu",
                    "link": {"to": "cloud0", "delay_ms": delay_ms, "bw_mbps": 50},
                }
            ],
            "workload": {
                "trace": "synthetic",
                "duration_s": None,
                "max_output_tokens": 48,
                "synthetic": {"n_requests": requests, "rate_rps": 4.0},
            },
            "policy": {"window": window},
            "seed": 7,
        }
    )


def run_both(spec: TopologySpec, out: Path, net: str = "mininet") -> tuple[dict, dict]:
    """(emulated summary, simulated summary) of one spec."""
    scenario = resolve(spec, source="<examples.build_and_run>")
    sim = simulate(scenario)
    workload = build_workload(scenario)
    with make_emulator(scenario, net) as em:
        prepare(out, scenario, "emulate", workload, backends=emulation_backends(scenario, em.net, em.runtime))
        emu = emulate(
            scenario, em.net, out, out / "spec.yaml", EmulateOptions(progress=False), workload, runtime=em.runtime
        )
    if emu.exit_code != 0:
        raise SystemExit(f"emulation ended with exit code {emu.exit_code}: {emu.summary['partial_reason']}")
    return emu.summary, sim.summary


def compare(emu: dict, sim: dict) -> None:
    print(f"{'metric':<32}{'emulated':>12}{'simulated':>12}{'diff':>9}")
    for label, key in (
        ("requests completed", "requests_completed"),
        ("throughput (tok/s)", "output_token_throughput_tps"),
        ("TTFT p50 (ms)", ("ttft_ms", "p50")),
        ("TPOT p50 (ms)", ("tpot_ms", "p50")),
        ("acceptance rate", "acceptance_rate"),
        ("mean gamma", "mean_gamma"),
    ):
        e, s = (emu[key[0]][key[1]], sim[key[0]][key[1]]) if isinstance(key, tuple) else (emu[key], sim[key])
        diff = f"{100 * (e - s) / s:+.1f} %" if s else ""
        print(f"{label:<32}{e:>12.3f}{s:>12.3f}{diff:>9}")


def main(argv: list[str] | None = None) -> tuple[dict, dict]:
    p = argparse.ArgumentParser(prog="python -m examples.build_and_run")
    p.add_argument("--net", choices=("mininet", "none"), default="mininet")
    p.add_argument("--out", type=Path, default=Path("runs/example-python"))
    p.add_argument("--requests", type=int, default=12)
    args = p.parse_args(argv)
    emu, sim = run_both(build(requests=args.requests), args.out, args.net)
    compare(emu, sim)
    print(f"emulation run directory: {args.out}")
    return emu, sim


if __name__ == "__main__":
    main()
