"""The `profiled` backend: no model; compute times from the shared compute model (testbed.compute) and
acceptance from the shared per-request acceptance sequences (testbed.acceptance, testbed.rounds.verify),
so the simulator and the emulator see identical token-level behaviour."""

from __future__ import annotations

from testbed import wire
from testbed.acceptance import AcceptanceModel
from testbed.compute import ComputeModel
from testbed.policies.batching import verify_cost_inputs, verify_job
from testbed.rounds import verify

from nodes.backends import (
    DraftBackend,
    DraftItem,
    DraftOutcome,
    TargetBackend,
    TargetOutcome,
    TargetRequest,
    synthetic_tokens,
)


def _token(rid: int, position: int) -> int:
    return (rid * 40503 + position * 2654435761) % 32000


class ProfiledTarget(TargetBackend):
    name = "profiled"

    def __init__(self, compute: ComputeModel, acceptance: AcceptanceModel, seed: int):
        self.compute = compute
        self.acceptance = acceptance
        self.seed = seed
        self.runs: dict[int, list[int]] = {}

    def prefill_batch(self, items: list[TargetRequest]) -> TargetOutcome:
        runs = self.runs
        acc, seed = self.acceptance, self.seed
        for r in items:
            runs[r.rid] = acc.runs(seed, r.rid, r.output_tokens)
        wait = self.compute.prefill_time([r.prompt_tokens + r.produced for r in items])  # (re-routed: + pd)
        return TargetOutcome([_token(r.rid, 0) for r in items], [], wait)

    def verify_batch(self, items: list[TargetRequest]) -> TargetOutcome:
        runs = self.runs
        accepted = []
        tokens = []
        jobs = []
        for r in items:
            g = len(r.draft) >> 2
            a = verify(runs[r.rid], r.produced, g)
            accepted.append(a)
            tokens.append(_token(r.rid, r.produced + a))
            jobs.append(verify_job(g, r.prompt_tokens + r.produced, 0.0, r))
        return TargetOutcome(tokens, accepted, self.compute.verify_time(*verify_cost_inputs(jobs)))

    def release(self, rid: int) -> None:
        self.runs.pop(rid, None)


class ProfiledDraft(DraftBackend):
    name = "profiled"

    def __init__(self, compute: ComputeModel, topk: int = 0):
        self.compute = compute
        self.topk = topk  # sampling mode: same-size placeholder probabilities, so links carry the real bytes

    def draft(self, items: list[DraftItem]) -> DraftOutcome:
        # One draft step per token; requests of one call draft one after the other (a node drafting in
        # parallel calls once per request).
        wait = 0.0
        toks = []
        for it in items:
            wait += self.compute.draft_time(it.gamma, it.ctx, it.position)
            toks.append(synthetic_tokens(it.rid, it.position, it.gamma))
        if self.topk:
            probs = [bytes(it.gamma * self.topk * wire.TOPK_ENTRY_BYTES) for it in items]
            return DraftOutcome(toks, wait, self.topk, probs)
        return DraftOutcome(toks, wait)


def make_target(scenario, node: str) -> ProfiledTarget:
    spec = scenario.spec
    return ProfiledTarget(scenario.compute[node], AcceptanceModel(spec.models.acceptance), spec.seed)


def make_draft(scenario, node: str) -> ProfiledDraft:
    return ProfiledDraft(scenario.compute[node], wire.verify_topk(scenario.spec.models.temperature))
