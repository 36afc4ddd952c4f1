"""The topology / scenario schema (pydantic): what a topology YAML may say, with a help string per field.

A topology file is pure data. `testbed.spec.resolve` validates the cross-references (links to known nodes,
reachable targets), expands edge groups and fills defaults into a `Scenario`, which both the simulator and
the emulator read.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

NAME_PATTERN = r"^[a-z][a-z0-9]{0,9}$"  # short: Mininet interface names are '<node>-eth<N>' (15 chars max)


class Frozen(BaseModel):
    """Base: unknown keys are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class LinkParams(Frozen):
    bw_mbps: float | None = Field(None, gt=0, le=100_000, description="Rate in Mbit/s, each direction; null = unshaped")
    delay_ms: float = Field(
        0.0,
        ge=0,
        le=10_000,
        description="One-way propagation delay in ms, applied in each direction (as Mininet's TCLink)",
    )
    jitter_ms: float = Field(
        0.0,
        ge=0,
        le=10_000,
        description="Standard deviation of the per-packet delay variation in ms (normal, no reordering)",
    )
    loss_pct: float = Field(0.0, ge=0, lt=100, description="Per-packet loss probability in percent, each direction")
    queue_pkts: int = Field(1000, ge=1, le=1_000_000, description="Queue limit of the link in packets, each direction")


class LinkSpec(LinkParams):
    a: str = Field(description="Name of one end (a node)")
    b: str = Field(description="Name of the other end (a node)")


class EdgeLinkSpec(LinkParams):
    to: str = Field(description="The node every edge of the group is linked to (a switch or a target)")


class NodeSpec(Frozen):
    name: str = Field(
        pattern=NAME_PATTERN, description="Unique node name: lowercase letter then up to 9 lowercase letters/digits"
    )
    role: Literal["draft", "target", "switch"] = Field(
        description="draft (edge device running the draft model), target (cloud verifier) or switch"
    )
    profile: str | None = Field(
        None,
        description="Compute profile name (testbed/profiles/*.yaml or the spec's `profiles`); default: edge-cpu for "
        "drafts, cloud-gpu for targets",
    )
    model: str | None = Field(
        None, description="Model this node runs (hf backend); default: models.draft / models.target"
    )
    cpu_share: float | None = Field(
        None,
        gt=0,
        le=64,
        description="CPU limit in cores for the node's process or container (emulation); null = no limit",
    )
    memory_mb: int | None = Field(
        None,
        ge=16,
        le=4_194_304,
        description="Memory limit in MB of the node's container (runtime docker; no swap, a node over it is "
        "OOM-killed and reported); null = no limit",
    )
    draft_slots: int = Field(
        0,
        ge=0,
        le=4096,
        description="Drafting jobs a draft node runs at once (0 = one per request, no contention; with a real-model "
        "backend 0 resolves to 1: one model computes one draft at a time)",
    )


class EdgeGroupSpec(Frozen):
    prefix: str = Field(
        pattern=r"^[a-z][a-z0-9]{0,6}$", description="Name prefix; nodes are named <prefix>0 .. <prefix>N-1"
    )
    count: int = Field(
        ge=1, le=100_000, description="Number of similar edge nodes (names <prefix>0 .. must stay within 10 characters)"
    )
    role: Literal["draft"] = Field("draft", description="Role of the generated nodes (draft)")
    profile: str | None = Field(None, description="Compute profile of each generated node")
    model: str | None = Field(None, description="Model of each generated node")
    cpu_share: float | None = Field(None, gt=0, le=64, description="CPU limit in cores of each generated node")
    memory_mb: int | None = Field(
        None, ge=16, le=4_194_304, description="Memory limit in MB of each generated node's container (runtime docker)"
    )
    draft_slots: int = Field(
        0,
        ge=0,
        le=4096,
        description="Drafting jobs each node runs at once (0 = unlimited; with a real-model backend 0 resolves to 1)",
    )
    link: EdgeLinkSpec = Field(description="The link from each generated node to `link.to`")


class SyntheticSpec(Frozen):
    n_requests: int = Field(200, ge=1, le=10_000_000, description="Number of requests generated")
    rate_rps: float = Field(2.0, gt=0, description="Mean arrival rate in requests per second")
    arrival: Literal["poisson", "uniform"] = Field("poisson", description="Inter-arrival process")
    prompt_mean: int = Field(512, ge=1, description="Mean prompt length in tokens (lognormal)")
    output_mean: int = Field(128, ge=1, description="Mean output length in tokens (lognormal)")


class WorkloadSpec(Frozen):
    trace: str = Field("azure-conv", description="Trace name (azure-conv, azure-code), a path, or 'synthetic'")
    format: Literal["auto", "azure", "burstgpt", "mooncake", "native", "synthetic"] = Field(
        "auto", description="Trace file format"
    )
    start_s: float = Field(0.0, ge=0, description="Offset into the trace, seconds from its first request")
    duration_s: float | None = Field(
        60.0, gt=0, description="Length of the replayed window in trace seconds; null = to the end"
    )
    max_requests: int | None = Field(None, ge=1, description="Replay at most this many requests of the window")
    rate_scale: float = Field(1.0, gt=0, description="Arrival-rate multiplier (2 = twice the requests per second)")
    time_scale: float = Field(1.0, gt=0, description="Stretch of inter-arrival times (applied after rate_scale)")
    tile_s: float | None = Field(
        None,
        gt=0,
        description="Time-tiling: repeat the (scaled) window back to back until this many seconds are covered, e.g. "
        "86400 for a day from an hour-long trace (every copy repeats the same requests: no diurnal cycle; see README)",
    )
    mapping: Literal["round_robin", "hashed", "by_field", "random"] = Field(
        "round_robin", description="How requests are assigned to draft (edge) nodes"
    )
    skip_bad_rows: bool = Field(False, description="Skip malformed trace rows (counted) instead of failing")
    max_output_tokens: int | None = Field(
        None, ge=1, description="Clip output lengths to this many tokens (documented approximation)"
    )
    synthetic: SyntheticSpec = Field(
        default_factory=SyntheticSpec, description="Generator settings when trace = synthetic"
    )


class BatchingSpec(Frozen):
    kind: Literal["fifo", "length_aware"] = Field(
        "fifo", description="fifo: arrival order; length_aware: shortest jobs first within the head job's kind"
    )
    max_batch_reqs: int = Field(32, ge=1, le=4096, description="Most requests in one target batch")
    max_batch_tokens: int = Field(
        8192, ge=1, description="Most tokens (prompt tokens for prefill, gamma+1 per verify) in one batch"
    )
    max_wait_ms: float = Field(
        0.0, ge=0, description="How long a non-full batch may wait for more jobs after its oldest job arrived"
    )


class PolicySpec(Frozen):
    window: str = Field(
        "static:4", description="Window policy: static:G | hf[:G0] | specdec[:THRESHOLD] | awc[:WEIGHTS]"
    )
    gamma_max: int = Field(16, ge=1, le=64, description="Upper bound of the window for every policy")
    routing: Literal["random", "round_robin", "jsq"] = Field(
        "jsq", description="How a draft picks the target of a new request"
    )
    batching: BatchingSpec = Field(default_factory=BatchingSpec, description="Target batching policy")

    @field_validator("window")
    @classmethod
    def _known_window(cls, v: str) -> str:
        from testbed.policies.window import parse_window_policy

        parse_window_policy(v)  # raises ValueError with the accepted forms
        return v


class AcceptanceSpec(Frozen):
    kind: Literal["iid", "position_decay", "empirical", "recorded"] = Field(
        "iid",
        description="iid: alpha at every position; position_decay: alpha_end + (alpha - alpha_end) exp(-j / "
        "decay_tokens); empirical: per-position table; recorded: sequences recorded from real models (path)",
    )
    alpha: float = Field(
        0.8, ge=0, le=1, description="Per-token acceptance probability (at position 0 for position_decay)"
    )
    alpha_end: float = Field(0.6, ge=0, le=1, description="Asymptotic acceptance for position_decay")
    decay_tokens: float = Field(200.0, gt=0, description="Decay length in output positions for position_decay")
    table: list[float] | None = Field(
        None, description="empirical: acceptance probability per output position; the last value repeats"
    )
    path: str | None = Field(
        None,
        description="recorded: the .acceptance.npz written by `python -m testbed calibrate` (relative to the topology "
        "file)",
    )


class ModelsSpec(Frozen):
    backend: Literal["profiled", "hf"] = Field(
        "profiled",
        description="profiled: compute times from profiles, acceptance from the model below; hf: real models",
    )
    draft: str = Field("smollm2-135m-draft", description="Draft model name or local path (hf backend)")
    target: str = Field("smollm2-135m", description="Target model name or local path (hf backend)")
    temperature: float = Field(0.0, ge=0, description="0 = greedy verification; > 0 = speculative sampling")
    lookup_ngram: int = Field(
        0,
        ge=0,
        le=16,
        description="hf draft, greedy only: draft the token that followed the most recent earlier occurrence of the "
        "last N tokens (prompt lookup, nodes/prompt_lookup.py), the model where there is none; 0 = model only",
    )
    acceptance: AcceptanceSpec = Field(
        default_factory=AcceptanceSpec, description="Acceptance model (profiled backend and simulator)"
    )

    @model_validator(mode="after")
    def _lookup_is_greedy(self) -> "ModelsSpec":
        if self.lookup_ngram and self.temperature > 0:
            raise ValueError("lookup_ngram drafts deterministic copies: it needs temperature 0 (greedy)")
        return self


class CostSpec(Frozen):
    base_ms: float = Field(0.0, ge=0, description="Fixed cost of one step / batch in ms")
    per_req_ms: float = Field(0.0, ge=0, description="Added cost per request in the batch, ms")
    per_token_ms: float = Field(0.0, ge=0, description="Added cost per token processed, ms")
    per_kctx_ms: float = Field(
        0.0, ge=0, description="Added cost per 1000 tokens of context (summed over the batch), ms"
    )
    multi_token_ms: float = Field(
        0.0,
        ge=0,
        description="Added when the step / batch processes more than one token, ms: on a CPU one token is a "
        "matrix-vector product, several a matrix-matrix one, which BLAS libraries run on a slower path per token "
        "(measured: SmolLM2-135M's LM head 15 ms for 1 row, 39-47 ms for 2-5)",
    )


class ProfileSpec(Frozen):
    description: str = Field("", description="What hardware / model pair this profile stands for")
    draft_step: CostSpec = Field(default_factory=CostSpec, description="One draft token for one request")
    draft_prefill: CostSpec = Field(
        default_factory=CostSpec,
        description="A request's first draft step, which also feeds its whole context (prompt + first token, tokens = "
        "that length) into the draft's cache; all zero = the first step costs draft_step like any other",
    )
    prefill: CostSpec = Field(default_factory=CostSpec, description="One target prefill batch (tokens = prompt tokens)")
    verify: CostSpec = Field(default_factory=CostSpec, description="One target verify batch (tokens = sum of gamma+1)")


class RunSpec(Frozen):
    runtime: Literal["process", "docker"] = Field(
        "process",
        description="How node programs run in emulation: process (a program on its emulated host) or docker (a "
        "container that is the emulated host); --runtime overrides",
    )
    mode: Literal["distributed", "autoregressive", "fused"] = Field(
        "distributed",
        description="distributed: DSD; autoregressive: target decodes alone; fused: draft co-located with the target",
    )
    request_timeout_s: float = Field(
        120.0,
        gt=0,
        description="A request with no reply from its target for this long is marked failed (testbed/faults.py)",
    )
    peer_timeout_s: float | None = Field(
        None,
        gt=0,
        description="A draft declares a target dead after this long without hearing from it, and re-routes its "
        "requests (testbed/faults.py); null = request_timeout_s",
    )
    drain_timeout_s: float = Field(
        300.0, gt=0, description="After the last arrival, how long the run waits for requests to finish"
    )


class LinkStepSpec(Frozen):
    at_s: float = Field(ge=0, description="When the step applies, seconds from the run's start (the trace's time 0)")
    delay_ms: float | None = Field(
        None, ge=0, le=10_000, description="New one-way delay in ms (each direction); null = unchanged"
    )
    jitter_ms: float | None = Field(
        None, ge=0, le=10_000, description="New jitter standard deviation in ms; null = unchanged"
    )
    loss_pct: float | None = Field(None, ge=0, lt=100, description="New loss probability in percent; null = unchanged")
    bw_mbps: float | None = Field(
        None, gt=0, le=100_000, description="New rate in Mbit/s (directions without a capacity trace); null = unchanged"
    )


class LinkScheduleSpec(Frozen):
    link: str = Field(
        description="The link, written 'X-Y' with the names of its two ends (either order; fnmatch wildcards "
        "allowed on each side, e.g. 'edge*-sw0' for every edge of a group); the order written "
        "defines the direction of trace_fwd (X -> Y) and trace_rev (Y -> X)"
    )
    trace_fwd: str | None = Field(
        None,
        description="Capacity trace of direction X -> Y: a Mahimahi packet-delivery file "
        "(name in $DSD_NET_TRACES_DIR or ../shared/net-traces/, or a path); "
        "replaces bw_mbps in that direction",
    )
    trace_rev: str | None = Field(None, description="Capacity trace of direction Y -> X (as trace_fwd)")
    trace_offset_s: float = Field(0.0, ge=0, description="Start the traces this many seconds into their loop")
    trace_stagger_s: float = Field(
        0.0,
        ge=0,
        description="With a wildcard: the k-th matched link (in link order) starts "
        "its traces k * trace_stagger_s later into the loop",
    )
    steps: list[LinkStepSpec] = Field(
        default_factory=list,
        description="Piecewise-constant changes of delay / jitter / loss / rate at given times (both directions)",
    )
    steps_csv: str | None = Field(
        None,
        description="The same steps from a CSV file (header: at_s and any of delay_ms, "
        "jitter_ms, loss_pct, bw_mbps; an empty cell = unchanged), relative "
        "to the topology file",
    )


class ScheduleEventSpec(Frozen):
    at_s: float = Field(ge=0, description="When it happens, seconds from the run's start")
    kind: Literal["link_down", "link_up", "partition", "heal", "crash", "restart"] = Field(
        description="link_down / link_up: a link fails / recovers (both directions); partition: every link between "
        "`nodes` and the rest goes down; heal: those links come back; crash: `node` (a draft or a target) "
        "is killed; restart: it starts again with no state"
    )
    link: str | None = Field(None, description="link_down / link_up: the link 'X-Y'")
    nodes: list[str] | None = Field(None, description="partition / heal: the set of nodes cut from the rest")
    node: str | None = Field(None, description="crash / restart: the node")
    until_s: float | None = Field(
        None,
        gt=0,
        description="link_down / partition / crash: when it ends (link_up / heal / "
        "restart at that time); null = lasts to the end or to an explicit event",
    )


class ScheduleSpec(Frozen):
    links: list[LinkScheduleSpec] = Field(default_factory=list, description="Per-link capacity traces and steps")
    events: list[ScheduleEventSpec] = Field(
        default_factory=list, description="Link failures, partitions, node crashes and restarts"
    )


class TopologySpec(Frozen):
    name: str = Field(pattern=r"^[A-Za-z0-9._-]+$", description="Scenario name")
    description: str = Field("", description="One paragraph on what this scenario stands for")
    seed: int = Field(0, ge=0, lt=2**63, description="Seed of every random choice (acceptance, routing, jitter, loss)")
    nodes: list[NodeSpec] = Field(default_factory=list, description="Explicit nodes")
    edges: list[EdgeGroupSpec] = Field(
        default_factory=list, description="Groups of similar edge (draft) nodes, each with its link"
    )
    links: list[LinkSpec] = Field(default_factory=list, description="Explicit links")
    workload: WorkloadSpec = Field(default_factory=WorkloadSpec, description="Requests to replay")
    policy: PolicySpec = Field(default_factory=PolicySpec, description="Window, routing and batching policies")
    models: ModelsSpec = Field(default_factory=ModelsSpec, description="Models, backend and acceptance")
    profiles: dict[str, ProfileSpec] = Field(
        default_factory=dict, description="Compute profiles defined inline (override the library's)"
    )
    run: RunSpec = Field(default_factory=RunSpec, description="Execution mode and timeouts")
    schedule: ScheduleSpec = Field(
        default_factory=ScheduleSpec,
        description="What changes during the run: capacity "
        "traces, steps of delay / jitter / loss / rate, link failures, partitions, node crashes",
    )
