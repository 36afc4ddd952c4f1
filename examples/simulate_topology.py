"""Level 1: load a topology file and simulate it.

    python -m examples.simulate_topology [TOPOLOGY] [--set KEY=VALUE ...]

`load_scenario` reads, validates and resolves the file (with the same `--set` overrides as the CLI);
`simulate` runs DSD-Sim on it and returns its tables (pandas) and summary; nothing is written to disk.
"""

from __future__ import annotations

import argparse

from testbed.sim import simulate
from testbed.spec import load_scenario


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m examples.simulate_topology")
    p.add_argument("topology", nargs="?", default="topologies/star-4edge.yaml")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)

    scenario = load_scenario(args.topology, args.set)
    result = simulate(scenario)

    s = result.summary
    print(
        f"{scenario.spec.name}: {len(scenario.drafts)} drafts, {len(scenario.targets)} targets, "
        f"window {scenario.spec.policy.window}"
    )
    print(
        f"  {s['requests_completed']} requests in {s['duration_s']:.1f} s simulated "
        f"({result.events} events, {result.wall_s:.2f} s wall)"
    )
    print(
        f"  throughput {s['output_token_throughput_tps']:.1f} tok/s, TTFT p50 {s['ttft_ms']['p50']:.1f} ms, "
        f"TPOT p50 {s['tpot_ms']['p50']:.1f} ms, acceptance {s['acceptance_rate']:.3f}"
    )
    per_edge = result.requests.groupby("edge")["tokens_out"].sum()
    print("  tokens per edge: " + ", ".join(f"{e} {n}" for e, n in per_edge.items()))
    return s


if __name__ == "__main__":
    main()
