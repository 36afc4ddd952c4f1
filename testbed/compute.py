"""Compute-latency model shared by the simulator and the profiled node backend.

A profile gives three linear cost terms (units: milliseconds; context in thousands of tokens):

    cost(n_req, n_tokens, ctx_tokens) = base_ms + per_req_ms*n_req + per_token_ms*n_tokens + per_kctx_ms*ctx_tokens/1000
                                        + multi_token_ms * (n_tokens > 1)

(multi_token_ms: a CPU runs one token's matrix-vector products on a faster path than several tokens' matrices.)

- draft_step: one draft token for one request with the given context (drafting gamma tokens = gamma steps);
- draft_prefill: the first draft step of a request's first round (n_req 1, n_tokens = its context then, the
              prompt + the prefill's token), which feeds the whole context into the draft's KV cache; when a
              profile leaves it all zero, that step costs draft_step like any other;
- prefill:    one target prefill batch; n_tokens = prompt tokens summed over the batch;
- verify:     one target verify batch; n_tokens = sum of (gamma + 1) over the batch, ctx = summed context.

Profiles live in `testbed/profiles/<name>.yaml` (a `ProfileSpec`) or inline in a topology's `profiles:`.
All functions return seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import ValidationError

from testbed.errors import InputError
from testbed.spec.schema import CostSpec, ProfileSpec

PROFILE_DIR = Path(__file__).parent / "profiles"
CALIBRATED = "Calibrated on "  # how `testbed calibrate` starts a profile's description (see is_calibrated)


def is_calibrated(p: ProfileSpec) -> bool:
    """Was this profile measured on real models by `python -m testbed calibrate`?"""
    return p.description.startswith(CALIBRATED)


@dataclass(frozen=True, slots=True)
class Cost:
    """A linear cost term in seconds (converted once from the profile's milliseconds)."""

    base: float
    per_req: float
    per_token: float
    per_kctx: float
    multi: float = 0.0  # added when more than one token is processed

    @classmethod
    def from_spec(cls, c: CostSpec) -> "Cost":
        return cls(
            c.base_ms / 1e3, c.per_req_ms / 1e3, c.per_token_ms / 1e3, c.per_kctx_ms / 1e6, c.multi_token_ms / 1e3
        )

    def __call__(self, n_req: int, n_tokens: int, ctx_tokens: int = 0) -> float:
        t = self.base + self.per_req * n_req + self.per_token * n_tokens + self.per_kctx * ctx_tokens
        return t + self.multi if n_tokens > 1 else t


@dataclass(frozen=True, slots=True)
class ComputeModel:
    """Latency functions of one node (seconds)."""

    name: str
    draft_step: Cost
    prefill: Cost
    verify: Cost
    draft_prefill: Cost | None = None  # None: the profile has no draft-prefill term

    @classmethod
    def from_spec(cls, name: str, p: ProfileSpec) -> "ComputeModel":
        dp = Cost.from_spec(p.draft_prefill)
        return cls(
            name,
            Cost.from_spec(p.draft_step),
            Cost.from_spec(p.prefill),
            Cost.from_spec(p.verify),
            dp if (dp.base or dp.per_req or dp.per_token or dp.per_kctx or dp.multi) else None,
        )

    def draft_time(self, gamma: int, ctx_tokens: int, position: int) -> float:
        """Time to draft `gamma` tokens for one request whose context is `ctx_tokens` long and which has
        `position` output tokens. Position 1 (only the prefill's token exists) is the request's first round:
        its first step also feeds the whole context into the draft's cache (draft_prefill)."""
        step = self.draft_step(1, 1, ctx_tokens)
        if position <= 1 and self.draft_prefill is not None and gamma > 0:
            return self.draft_prefill(1, ctx_tokens, 0) + (gamma - 1) * step
        return gamma * step

    def prefill_time(self, prompt_tokens: list[int] | tuple[int, ...]) -> float:
        return self.prefill(len(prompt_tokens), sum(prompt_tokens), 0)

    def verify_time(self, n_req: int, n_tokens: int, ctx_tokens: int) -> float:
        return self.verify(n_req, n_tokens, ctx_tokens)


def library_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def load_profile_file(path: Path) -> ProfileSpec:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise InputError(str(path), f"cannot read compute profile: {e}".replace("\n", " ")) from None
    try:
        return ProfileSpec.model_validate(data or {})
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        raise InputError(str(path), f"{loc}: {err['msg']}") from None


def resolve_profile(name: str, inline: dict[str, ProfileSpec]) -> ProfileSpec:
    """Find a profile: inline definitions first, then the library, then a path to a YAML file."""
    if name in inline:
        return inline[name]
    lib = PROFILE_DIR / f"{name}.yaml"
    if lib.is_file():
        return load_profile_file(lib)
    p = Path(name)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return load_profile_file(p)
    raise KeyError(
        f"unknown compute profile {name!r} (library: {', '.join(library_profiles())}; or define it under `profiles:`)"
    )
