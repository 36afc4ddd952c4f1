"""Model backends of the node programs: what a draft step, a target prefill batch and a target verify
batch compute, and how long they take.

A backend is chosen by `models.backend` of the spec (`profiled`, later `hf`) and lives in
`nodes/backends/<name>.py`, which defines `make_target(scenario, node) -> TargetBackend` and
`make_draft(scenario, node) -> DraftBackend`.

Time: a backend call returns an outcome with `wait_s`, the time the node must still let pass before the
results are ready, counted from the call. A real backend computes synchronously and returns wait_s = 0
(it already spent the time); the `profiled` backend computes nothing and returns the compute model's
latency, which the node then waits precisely (nodes/clock.py) while it keeps receiving messages.

Tokens are little-endian int32 arrays as `bytes` (as they travel on the wire); `tokens_array` views them
as numpy without copying.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from nodes.protocol import TOKEN_DTYPE


def tokens_array(b: bytes) -> np.ndarray:
    return np.frombuffer(b, dtype=TOKEN_DTYPE)


class TargetRequest:
    """A request's state on a target node; the items backends receive in prefill / verify batches."""

    __slots__ = (
        "rid",
        "owner",
        "prompt",
        "prompt_tokens",
        "output_tokens",
        "produced",
        "draft",
        "t_recv",
        "queued",
        "topk",
        "probs",
    )

    def __init__(self, rid: int, owner: bytes, prompt: bytes, output_tokens: int, produced_before: int = 0):
        self.rid = rid
        self.owner = owner  # the draft's ZeroMQ identity
        self.prompt = prompt  # int32 bytes; dropped (b"") after the prefill
        self.prompt_tokens = len(prompt) // 4 - produced_before
        self.output_tokens = output_tokens
        self.produced = produced_before  # output tokens that exist (a re-routed request brings some: PREFILL.pd)
        self.draft = b""  # the pending VERIFY's draft tokens (int32 bytes)
        self.t_recv = 0.0  # when the pending job's message arrived
        self.queued = False  # a job of this request is queued or running
        self.topk = 0
        self.probs: bytes | None = None

    @property
    def gamma(self) -> int:
        return len(self.draft) >> 2

    @property
    def ctx(self) -> int:
        return self.prompt_tokens + self.produced


@dataclass(slots=True)
class TargetOutcome:
    tokens: list[int]  # per item: the first token (prefill) or the next target token (verify)
    accepted: list[int] = field(default_factory=list)  # verify: accepted draft tokens per item
    wait_s: float = 0.0


@dataclass(slots=True)
class DraftItem:
    rid: int
    position: int  # output tokens that exist (the first drafted token is at this position)
    gamma: int
    ctx: int  # context tokens (prompt + produced)


@dataclass(slots=True)
class DraftOutcome:
    tokens: list[bytes]  # per item: gamma int32 token ids
    wait_s: float = 0.0
    topk: int = 0
    probs: list[bytes] | None = None  # sampling mode: gamma * topk (int32 id, float16 prob) per item


class TargetBackend(ABC):
    name = "?"
    blocking = False  # True: the batch calls compute for real (the node runs them on a worker thread)

    @abstractmethod
    def prefill_batch(self, items: list[TargetRequest]) -> TargetOutcome:
        """Prefill the prompts (items[i].prompt); return each request's first token."""

    @abstractmethod
    def verify_batch(self, items: list[TargetRequest]) -> TargetOutcome:
        """Verify items[i].draft at output position items[i].produced: accepted counts and next tokens."""

    def release(self, rid: int) -> None:
        """Free the request's model state (KV cache)."""

    def close(self) -> None:
        pass


class DraftBackend(ABC):
    name = "?"
    blocking = False  # True: draft() computes for real inside the call (the node runs it on a worker thread)

    def start(self, rid: int, prompt: bytes, output_tokens: int) -> None:
        """A new request (prompt as int32 bytes)."""

    @abstractmethod
    def draft(self, items: list[DraftItem]) -> DraftOutcome:
        """Draft items[i].gamma tokens for each request."""

    def observe(self, rid: int, accepted: int, token: int) -> None:
        """The target's verdict on the last draft: keep `accepted` tokens, then append `token`."""

    def prompt(self, rid: int, prompt_tokens: int) -> bytes:
        """The prompt sent for a trace request that has only a length (int32 bytes)."""
        return synthetic_tokens(rid, 0, prompt_tokens)

    def release(self, rid: int) -> None:
        pass

    def close(self) -> None:
        pass


_POOL_TOKENS = 1 << 16
_POOL = ((np.arange(2 * _POOL_TOKENS, dtype=np.int64) * 2654435761) % 32000).astype(TOKEN_DTYPE).tobytes()


def synthetic_tokens(rid: int, position: int, n: int) -> bytes:
    """n deterministic pseudo token ids (int32 bytes) for traces that carry lengths only."""
    if n > _POOL_TOKENS:
        reps = -(-n // _POOL_TOKENS)
        return (_POOL[: 4 * _POOL_TOKENS] * reps)[: 4 * n]
    start = (rid * 7919 + position) % _POOL_TOKENS
    return _POOL[4 * start : 4 * (start + n)]


def load_backend(name: str):
    """The backend module `nodes.backends.<name>`; ValueError with a clear message if it does not exist."""
    try:
        return importlib.import_module(f"nodes.backends.{name}")
    except ModuleNotFoundError as e:
        if e.name == f"nodes.backends.{name}":
            raise ValueError(f"model backend {name!r} is not available in this version (known: profiled)") from None
        raise ValueError(f"model backend {name!r} needs a missing package: {e.name}") from None
