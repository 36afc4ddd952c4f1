"""Adaptive Window Control (AWC): a learned window policy, the WC-DNN of the DSD paper.

A small MLP (features -> hidden ReLU layers -> one logit per candidate window) picks gamma **per round**
for each request: the controller refreshes its features from every round's `RoundFeedback`
(`testbed.policies.features`, shared by simulator and draft nodes) and runs one forward pass in
`next_gamma()`. Per round rather than per request because what decides the best window — acceptance of
the current text, RTT, the target's queue — changes within a request; one decision costs a few
microseconds next to rounds of tens of milliseconds.

Weights are trained with torch (`python -m testbed awc train`, `testbed/awc/train.py`) and exported to a
small `.npz` (`save_weights`); inference here is numpy only, so nodes and the simulator need no torch.
The default weights ship as `testbed/policies/awc_weights.npz`; `awc:PATH` loads others.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from testbed.policies.features import FEATURE_NAMES, FeatureState
from testbed.policies.window import RoundFeedback

DEFAULT_WEIGHTS = Path(__file__).with_name("awc_weights.npz")


@dataclass(frozen=True, eq=False)
class AWCNet:
    """Normalisation + MLP layers; `decide(x)` returns a candidate window."""

    mu: np.ndarray
    sigma: np.ndarray
    layers: tuple[tuple[np.ndarray, np.ndarray], ...]  # (W [out, in], b [out]); ReLU between layers
    candidates: tuple[int, ...]
    meta: dict = field(default_factory=dict)

    @property
    def n_params(self) -> int:
        return sum(w.size + b.size for w, b in self.layers)

    def __post_init__(self) -> None:
        # Fold the input standardisation into the first layer: W0 (x - mu) / sigma + b0 = (W0 / sigma) x + b0'.
        (w0, b0), rest = self.layers[0], self.layers[1:]
        w0f = w0 / self.sigma
        fast = ((np.ascontiguousarray(w0f), b0 - w0f @ self.mu), *rest)
        object.__setattr__(self, "_hidden", fast[:-1])
        object.__setattr__(self, "_out", fast[-1])

    def logits(self, x: list[float] | np.ndarray) -> np.ndarray:
        h = np.asarray(x, dtype=np.float64)
        for w, b in self._hidden:  # type: ignore[attr-defined]
            h = w @ h
            h += b
            np.maximum(h, 0.0, out=h)
        w, b = self._out  # type: ignore[attr-defined]
        return w @ h + b

    def decide(self, x: list[float] | np.ndarray) -> int:
        return self.candidates[int(np.argmax(self.logits(x)))]


def save_weights(path: str | Path, net: AWCNet) -> None:
    arrays: dict[str, np.ndarray] = {
        "mu": net.mu,
        "sigma": net.sigma,
        "candidates": np.asarray(net.candidates, np.int32),
        "feature_names": np.asarray(FEATURE_NAMES),
    }
    for i, (w, b) in enumerate(net.layers):
        arrays[f"W{i}"] = w.astype(np.float32)
        arrays[f"b{i}"] = b.astype(np.float32)
    for k, v in net.meta.items():
        arrays[f"meta_{k}"] = np.asarray(v)
    np.savez_compressed(path, **arrays)


def load_weights(path: str | Path) -> AWCNet:
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ValueError(f"window policy 'awc': cannot read weights {str(path)!r}: {e}") from None
    with z:
        names = tuple(str(s) for s in z["feature_names"])
        if names != FEATURE_NAMES:
            raise ValueError(
                f"window policy 'awc': weights {str(path)!r} were trained on other features "
                f"({', '.join(names)}); retrain with `python -m testbed awc train`"
            )
        layers = []
        i = 0
        while f"W{i}" in z:
            layers.append((z[f"W{i}"].astype(np.float64), z[f"b{i}"].astype(np.float64)))
            i += 1
        meta = {k[5:]: z[k].tolist() for k in z.files if k.startswith("meta_")}
        return AWCNet(
            z["mu"].astype(np.float64),
            z["sigma"].astype(np.float64),
            tuple(layers),
            tuple(int(c) for c in z["candidates"]),
            meta,
        )


class AWCController:
    __slots__ = ("net", "state", "gamma_max", "gamma", "dirty")

    def __init__(self, net: AWCNet, context_tokens: int, gamma_max: int):
        self.net = net
        self.state = FeatureState(context_tokens, gamma_max)
        self.gamma_max = gamma_max
        self.gamma = 1
        self.dirty = True

    def next_gamma(self) -> int:
        if self.dirty:  # one forward pass per round
            g = self.net.decide(self.state.vector())
            self.gamma = 1 if g < 1 else (self.gamma_max if g > self.gamma_max else g)
            self.dirty = False
        return self.gamma

    def observe(self, fb: RoundFeedback) -> None:
        self.state.update(fb)
        self.dirty = True


@dataclass(frozen=True, eq=False)
class AWCPolicy:
    net: AWCNet
    source: str = ""
    name: str = "awc"
    observes: bool = True

    def controller(self, context_tokens: int, gamma_max: int) -> AWCController:
        return AWCController(self.net, context_tokens, gamma_max)


_CACHE: dict[str, AWCNet] = {}  # read-only after load: the same file gives the same network


def load_awc_policy(path: str | None = None) -> AWCPolicy:
    """The AWC policy with weights from `path` (default: the shipped testbed/policies/awc_weights.npz)."""
    p = Path(path) if path else DEFAULT_WEIGHTS
    try:
        key = f"{p.resolve()}:{p.stat().st_mtime_ns}"
    except OSError:
        key = str(p)
    net = _CACHE.get(key)
    if net is None:
        net = _CACHE[key] = load_weights(p)
    return AWCPolicy(net, str(p))
