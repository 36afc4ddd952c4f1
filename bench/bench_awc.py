"""AWC benchmark (`make awc-eval`): AWC vs static gamma in {2, 4, 6, 8}, hf and specdec in DSD-Sim over
RTT 5-100 ms, light / saturating load, fast / slow drafts, iid acceptance 0.6 / 0.8 / 0.95 (48 scenarios);
mean ± 95 % CI over seeds; gap to the hindsight-best static gamma per scenario, and the goals' summary
(scenarios within 3 %, gain over static:4 where the best window is not 4) over all and per alpha; and the
per-decision cost of the policy (an absolute figure on a shared machine: read it as an order of magnitude).

    python bench/bench_awc.py [--seeds 3] [--workers 0] [--alphas 0.6 0.8 0.95] [--quick] [--out DIR] [--executor
    sim|emu]

With --changing-links TOPOLOGY (e.g. topologies/cellular-edge.yaml, links that change during the run): simulates
static gamma 1..8, hf, specdec and AWC on it and prints each one's goodput and its gap to the best static window,
next to an upper bound on the goodput of ANY window policy (bench/awc_bound.py: per request, the earliest first
token and finish and the smallest TPOT an oracle that knows every acceptance in advance could reach with no other
request in the system), i.e. the largest gain over the best static window that any window policy could have; each
one's goodput over the arrival window (SLO-meeting completions between the first and the last arrival, per second);
and, for the request that sets the duration, what a causal policy (not knowing future acceptances) can expect.

    python bench/bench_awc.py --changing-links topologies/cellular-edge.yaml
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from testbed.cli import main as cli_main  # noqa: E402


def decision_cost_us(repeats: int = 5, n: int = 5000) -> tuple[float, float]:
    """Median µs per round of (observe + next_gamma) and of the forward pass alone."""
    from testbed.policies.awc import load_awc_policy
    from testbed.policies.window import RoundFeedback

    pol = load_awc_policy(None)
    fb = RoundFeedback(4, 2, 0.03, 0.015, 3, 0.05)
    per_round, fwd = [], []
    for _ in range(repeats):
        c = pol.controller(500, 16)
        t = time.perf_counter()
        for _ in range(n):
            c.observe(fb)
            c.next_gamma()
        per_round.append((time.perf_counter() - t) / n * 1e6)
        v = c.state.vector()
        t = time.perf_counter()
        for _ in range(n):
            pol.net.decide(v)
        fwd.append((time.perf_counter() - t) / n * 1e6)
    return statistics.median(per_round), statistics.median(fwd)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="3")
    p.add_argument("--workers", default="0")
    p.add_argument("--alphas", nargs="+", default=None, help="iid acceptance values (default 0.6 0.8 0.95)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--executor", default="sim")
    p.add_argument("--out", default="runs/awc-eval")
    p.add_argument("--changing-links", metavar="TOPOLOGY", help="the window policies and their bound on one topology")
    a = p.parse_args()
    if a.changing_links:
        from awc_bound import changing_links

        return changing_links(Path(a.changing_links))
    from testbed.policies.awc import load_awc_policy

    pol = load_awc_policy(None)
    r, f = decision_cost_us()
    print(
        f"AWC model: MLP {len(pol.net.mu)}-{'-'.join(str(w.shape[0]) for w, _ in pol.net.layers)}, "
        f"{pol.net.n_params} parameters, weights {Path(pol.source).stat().st_size} bytes; "
        f"decision cost: {r:.1f} us per round (features + forward), forward {f:.1f} us"
    )
    argv = ["awc", "eval", "--seeds", a.seeds, "--workers", a.workers, "--executor", a.executor, "--out", a.out]
    if a.alphas:
        argv += ["--alphas", *a.alphas]
    if a.quick:
        argv.append("--quick")
    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
