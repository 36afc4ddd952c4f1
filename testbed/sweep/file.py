"""The sweep file: what to vary, over which topologies, modes and seeds; strict loading (`path:line` errors).

    name: rtt-vs-window            # default: the file's stem
    topology: topologies/star-4edge.yaml      # or a list (a swept dimension)
    mode: sim                      # sim | emulate | run, or a list; per trial
    net: none                      # emulate / run: none | mininet, or a list
    seeds: 3                       # replicates: seed = 1..3 (or a list of seeds); CIs are over these
    set:                           # fixed --set overrides of every trial
      workload.trace: synthetic
    search: grid                   # grid (every combination) | random (`samples` draws)
    samples: 20                    # random only
    sampler_seed: 0                # random only
    vary:                          # --set paths (and topology / mode / net / seed) -> values
      policy.window: [static:2, static:4, hf]
      links.0.delay_ms: [1, 10, 50]
    # random search also takes {uniform: [lo, hi]}, {loguniform: [lo, hi]}, {randint: [lo, hi]}
    # vary may be a list of such mappings: the union of their grids (e.g. a few emulation trials)

Every value is checked against every topology before anything runs: a bad path or value stops here.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field

from testbed.errors import InputError, SpecError
from testbed.spec.loader import format_loc, locator, read_yaml, validate

MODES = ("sim", "emulate", "run")
NETS = ("none", "mininet")
SPECIAL = ("topology", "mode", "net", "seed")  # dimensions that are not (only) --set paths
DISTRIBUTIONS = ("uniform", "loguniform", "randint")

Scalar = str | int | float | bool | None


class SweepFile(BaseModel):
    """A sweep: trials = topologies x modes x nets x seeds x (grid or random draws of `vary`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(None, description="Name of the sweep (default: the file's stem)")
    topology: str | list[str] = Field(
        description="Topology YAML(s), relative to the current directory or the sweep file"
    )
    mode: Literal["sim", "emulate", "run"] | list[Literal["sim", "emulate", "run"]] = Field(
        "sim", description="Per trial: sim (DSD-Sim), emulate, or run (emulate + simulate + compare)"
    )
    net: Literal["none", "mininet"] | list[Literal["none", "mininet"]] = Field(
        "none", description="Network of emulate / run trials: none (loopback, no shaping) or mininet (needs root)"
    )
    seeds: int | list[int] | None = Field(
        None, description="Replicates: N (seeds 1..N) or a list; default: the spec's seed"
    )
    set: dict[str, Any] = Field(default_factory=dict, description="Fixed --set overrides of every trial")
    search: Literal["grid", "random"] = Field("grid", description="grid: every combination; random: `samples` draws")
    samples: int | None = Field(None, ge=1, le=100_000, description="Random search: number of draws of `vary`")
    sampler_seed: int = Field(0, ge=0, description="Random search: seed of the draws")
    vary: dict[str, Any] | list[dict[str, Any]] = Field(default_factory=dict, description="Swept dimensions")
    trial_timeout_s: float = Field(1800.0, gt=0, description="An emulation trial running longer is stopped and failed")


@dataclass(frozen=True)
class Trial:
    """One point of the sweep. `overrides` are the --set items (fixed ones first); `params` its coordinates."""

    id: str
    topology: str  # as written in the sweep file
    topology_path: str  # absolute
    mode: str
    net: str
    overrides: tuple[str, ...]
    params: tuple[tuple[str, Any], ...]  # (dimension, value), including topology / mode / net / seed

    def param_dict(self) -> dict[str, Any]:
        return dict(self.params)


@dataclass(frozen=True)
class Sweep:
    name: str
    source: str
    spec: SweepFile
    trials: tuple[Trial, ...]
    dims: tuple[str, ...]  # dimensions that take more than one value (seed excluded)
    trial_timeout_s: float


def set_item(path: str, value: Any) -> str:
    """`path=value` whose value `--set` parses back to `value` (YAML)."""
    if isinstance(value, str):
        try:
            if yaml.safe_load(value) == value:
                return f"{path}={value}"
        except yaml.YAMLError:
            pass
    return f"{path}={json.dumps(value)}"


def load_sweep(path: str | Path, check: bool = True) -> Sweep:
    path = Path(path)
    data, tree = read_yaml(path, "sweep file", "topology, vary, seeds, ...")

    where = locator(tree, path)
    spec = validate(SweepFile, data, where, "testbed/sweep/file.py")

    topos = _as_list(spec.topology)
    blocks = (spec.vary if isinstance(spec.vary, list) else [spec.vary]) or [{}]
    block_loc = (lambda i: ("vary", i)) if isinstance(spec.vary, list) else (lambda i: ("vary",))
    if spec.search == "random" and spec.samples is None:
        raise SpecError(where(("search",)), "search: random needs `samples: N`")
    if spec.search == "grid" and spec.samples is not None:
        raise SpecError(where(("samples",)), "samples: only with search: random")
    if spec.search == "random" and not any(blocks):
        raise SpecError(where(("vary",)), "random search needs dimensions under `vary`")
    seeds = list(range(1, spec.seeds + 1)) if isinstance(spec.seeds, int) else spec.seeds
    if isinstance(spec.seeds, int) and spec.seeds < 1:
        raise SpecError(where(("seeds",)), "seeds: at least 1")

    resolved_topos: dict[str, Path] = {}
    for i, t in enumerate(topos):
        p = _find(t, path)
        if p is None:
            loc = ("topology", i) if isinstance(spec.topology, list) else ("topology",)
            raise SpecError(
                where(loc), f"topology {t!r}: no such file (relative to the current directory or {path.parent})"
            )
        resolved_topos[t] = p
    for b_i, block in enumerate(blocks):
        for t_i, t in enumerate(_as_list(block.get("topology", []))):
            p = _find(str(t), path)
            if p is None:
                loc = (*block_loc(b_i), "topology") + ((t_i,) if isinstance(block["topology"], list) else ())
                raise SpecError(
                    where(loc), f"topology {t!r}: no such file (relative to the current directory or {path.parent})"
                )
            resolved_topos[str(t)] = p

    base = [set_item(k, v) for k, v in spec.set.items()]
    rng = np.random.default_rng(spec.sampler_seed)
    trials: dict[str, Trial] = {}
    for b_i, block in enumerate(blocks):
        dims = _block_dims(spec, block, topos, seeds, where, block_loc(b_i))
        for params in _points(spec, dims, block, rng):
            t = _trial(params, resolved_topos, base)
            trials.setdefault(t.id, t)
    if not trials:
        raise SpecError(where(("vary",)), "the sweep has no trials")
    if check:
        _check_values(spec, blocks, block_loc, topos, resolved_topos, base, where)
    values: dict[str, set] = {}
    for t in trials.values():
        for k, v in t.params:
            values.setdefault(k, set()).add(json.dumps(v, sort_keys=True))
    swept = tuple(k for k in values if len(values[k]) > 1 and k != "seed")
    return Sweep(spec.name or path.stem, str(path), spec, tuple(trials.values()), swept, spec.trial_timeout_s)


def _as_list(x: Any) -> list[Any]:
    return x if isinstance(x, list) else [x]


def _find(topology: str, sweep_path: Path) -> Path | None:
    for p in (Path(topology), sweep_path.parent / topology):
        if p.is_file():
            return p.resolve()
    return None


def _block_dims(spec: SweepFile, block: dict[str, Any], topos, seeds, where, loc0) -> dict[str, list[Any] | dict]:
    """Dimensions of one vary block in order: its own keys, then topology, mode, net, seed (unless given)."""
    dims: dict[str, Any] = {}
    for key, vals in block.items():
        if not isinstance(key, str) or not key or key.startswith(".") or key.endswith("."):
            raise SpecError(
                where((*loc0, key)), f"{format_loc((*loc0, key))}: a dimension is a --set path like policy.window"
            )
        if key in ("mode", "net"):
            allowed = MODES if key == "mode" else NETS
            for v in _as_list(vals):
                if v not in allowed:
                    raise SpecError(
                        where((*loc0, key)), f"{format_loc((*loc0, key))}: {v!r} is not one of {', '.join(allowed)}"
                    )
        if isinstance(vals, dict):
            if spec.search == "grid":
                raise SpecError(
                    where((*loc0, key)),
                    f"{format_loc((*loc0, key))}: distributions ({', '.join(DISTRIBUTIONS)}) "
                    "only with search: random; a grid takes a list of values",
                )
            _check_distribution(vals, where, (*loc0, key))
        elif isinstance(vals, list) and not vals:
            raise SpecError(where((*loc0, key)), f"{format_loc((*loc0, key))}: an empty list of values")
        dims[key] = vals if isinstance(vals, (list, dict)) else [vals]
    dims.setdefault("topology", topos)
    dims.setdefault("mode", _as_list(spec.mode))
    dims.setdefault("net", _as_list(spec.net))
    if seeds is not None:
        dims.setdefault("seed", seeds)
    return dims


def _check_distribution(d: dict, where, loc) -> None:
    if len(d) != 1 or next(iter(d)) not in DISTRIBUTIONS:
        raise SpecError(
            where(loc),
            f"{format_loc(loc)}: a distribution is one of " + ", ".join(f"{{{k}: [lo, hi]}}" for k in DISTRIBUTIONS),
        )
    kind, b = next(iter(d.items()))
    ok = isinstance(b, list) and len(b) == 2 and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in b)
    if (
        not ok
        or not b[0] < b[1]
        or (kind == "loguniform" and b[0] <= 0)
        or (kind == "randint" and not all(isinstance(x, int) for x in b))
    ):
        raise SpecError(
            where((*loc, kind)),
            f"{format_loc((*loc, kind))}: expected [lo, hi] with lo < hi"
            + (" and lo > 0" if kind == "loguniform" else "")
            + (", integers" if kind == "randint" else ""),
        )


def _draw(d: dict, rng: np.random.Generator) -> Any:
    kind, (lo, hi) = next(iter(d.items()))
    if kind == "uniform":
        return float(rng.uniform(lo, hi))
    if kind == "loguniform":
        return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    return int(rng.integers(lo, hi + 1))


def _points(spec: SweepFile, dims: dict[str, Any], block: dict, rng) -> list[dict[str, Any]]:
    if spec.search == "grid":
        keys = list(dims)
        return [dict(zip(keys, combo)) for combo in itertools.product(*(dims[k] for k in keys))]
    drawn = [k for k in block]  # sampled per draw
    crossed = [k for k in dims if k not in block]  # topology / mode / net / seed lists: crossed with every draw
    out = []
    for _ in range(spec.samples):
        point = {
            k: (_draw(dims[k], rng) if isinstance(dims[k], dict) else dims[k][int(rng.integers(len(dims[k])))])
            for k in drawn
        }
        for combo in itertools.product(*(dims[k] for k in crossed)):
            out.append({**point, **dict(zip(crossed, combo))})
    return out


def _trial(params: dict[str, Any], topos: dict[str, Path], base: list[str]) -> Trial:
    topo = params["topology"]
    tpath = topos[topo]
    sets = tuple(base + [set_item(k, v) for k, v in params.items() if k not in ("topology", "mode", "net")])
    key = json.dumps(
        {
            "topology": topo,
            "topology_sha": hashlib.sha1(tpath.read_bytes()).hexdigest(),
            "mode": params["mode"],
            "net": params["net"] if params["mode"] != "sim" else None,
            "set": sorted(sets),
        },
        sort_keys=True,
    )
    tid = hashlib.sha1(key.encode()).hexdigest()[:12]
    return Trial(tid, topo, str(tpath), params["mode"], params["net"], sets, tuple(params.items()))


def _check_values(spec: SweepFile, blocks, block_loc, topos, resolved, base, where) -> None:
    """Resolve every topology with the fixed overrides, and with each value of each dimension: a bad path or value
    is reported at its line of the sweep file."""
    from testbed.spec import load_scenario

    def attempt(topo: str, extra: list[str], loc: tuple[Any, ...]) -> None:
        try:
            load_scenario(resolved[topo], [*base, *extra])
        except InputError as e:
            raise SpecError(where(loc), f"{format_loc(loc)}: {e.message} (checking {e.where})") from None

    for topo in topos:
        attempt(topo, [], ("set",) if spec.set else ("topology",))
    for b_i, block in enumerate(blocks):
        b_topos = [str(t) for t in _as_list(block.get("topology", topos))]
        for key, vals in block.items():
            if key in ("topology", "mode", "net"):
                continue
            if isinstance(vals, dict):
                _kind, (lo, hi) = next(iter(vals.items()))
                candidates = [lo, hi]
            else:
                candidates = _as_list(vals)
            for v_i, v in enumerate(candidates):
                loc = (*block_loc(b_i), key, v_i) if isinstance(vals, list) else (*block_loc(b_i), key)
                for t in b_topos:
                    attempt(t, [set_item(key, v)], loc)
