"""Level 3: your own window policy, in the simulator and in the emulated node programs alike.

    python -m examples.custom_window [--net mininet|none] [--out DIR]

A window policy is a factory of per-request controllers (testbed/policies/window.py): `controller()` makes
one per request; the controller proposes the next gamma (`next_gamma`) and learns from each round
(`observe`, a RoundFeedback: gamma, accepted, RTT, verify time, queue depth, draft time). It is named in the
spec as `py:MODULE:FACTORY[:ARG]`; every process (this one, and each node program of an emulation) imports
MODULE itself, so it must be importable from the repository root (as this file is: examples.custom_window).

The policy below, "RTT-aware": drafts longer windows when a round trip is expensive compared with drafting a
token, shorter ones when drafts keep being rejected.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from testbed.policies.window import DecayedAcceptance, RoundFeedback

POLICY = "py:examples.custom_window:rtt_aware"


class RTTAwareController:
    def __init__(self, gamma_max: int, base: int):
        self.gamma_max = gamma_max
        self.gamma = min(base, gamma_max)
        self.acceptance = DecayedAcceptance()

    def next_gamma(self) -> int:
        return self.gamma

    def observe(self, fb: RoundFeedback) -> None:
        if fb.gamma <= 0:
            return  # a truncated final round says nothing about the draft
        self.acceptance.update(fb.gamma, fb.accepted)
        per_token = fb.draft_s / fb.gamma
        worth = fb.rtt_s / per_token if per_token > 0 else self.gamma_max  # draft tokens one RTT is worth
        g = round(min(worth, 1.0 / max(1e-3, 1.0 - self.acceptance.alpha)))
        self.gamma = max(1, min(self.gamma_max, g))


@dataclass(frozen=True)
class RTTAware:
    base: int = 4
    name: str = "rtt-aware"
    observes: bool = True

    def controller(self, context_tokens: int, gamma_max: int) -> RTTAwareController:
        return RTTAwareController(gamma_max, self.base)


def rtt_aware(arg: str | None) -> RTTAware:
    """The factory named in the spec: py:examples.custom_window:rtt_aware[:BASE]."""
    return RTTAware(int(arg) if arg else 4)


def main(argv: list[str] | None = None) -> tuple[dict, dict]:
    from examples.build_and_run import build, compare, run_both

    p = argparse.ArgumentParser(prog="python -m examples.custom_window")
    p.add_argument("--net", choices=("mininet", "none"), default="mininet")
    p.add_argument("--out", type=Path, default=Path("runs/example-custom-window"))
    p.add_argument("--requests", type=int, default=12)
    args = p.parse_args(argv)
    emu, sim = run_both(build(delay_ms=40.0, requests=args.requests, window=POLICY), args.out, args.net)
    print(f"window policy {POLICY}")
    compare(emu, sim)
    return emu, sim


if __name__ == "__main__":
    main()
