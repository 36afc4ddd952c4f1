"""Mapping requests to edge devices: :func:`assign_edges`."""

from __future__ import annotations

import hashlib

import numpy as np

from .errors import TraceError
from .model import Trace

MODES = ("round_robin", "hashed", "by_field", "random")
_MASK64 = (1 << 64) - 1


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on uint64 arrays (wrapping arithmetic): a stable, well-spread hash."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def assign_edges(trace: Trace, n_edges: int, mode: str = "round_robin", seed: int = 0) -> np.ndarray:
    """Edge index (int32, 0..n_edges-1) of each request.

    round_robin: request_id mod n_edges. hashed: splitmix64 of (request_id, seed), stable across runs and
    platforms. by_field: blake2b of (seed, trace.field value), so equal values share an edge. random:
    numpy default_rng(seed) integers.
    """
    if isinstance(n_edges, bool) or not isinstance(n_edges, (int, np.integer)) or n_edges < 1:
        raise TraceError(f"{trace.source}: n_edges must be an integer >= 1, got {n_edges!r}")
    n = np.uint64(n_edges)
    ids = trace.request_id.astype(np.uint64)
    if mode == "round_robin":
        edges = ids % n
    elif mode == "hashed":
        salt = _mix64(np.array([int(seed) & _MASK64], dtype=np.uint64))[0]
        edges = _mix64(ids ^ salt) % n
    elif mode == "by_field":
        if trace.field is None:
            raise TraceError(f"{trace.source}: edge mode 'by_field' needs a per-request field, and this trace has none")
        values, inverse = np.unique(np.asarray(trace.field, dtype=str), return_inverse=True)
        key = (int(seed) & _MASK64).to_bytes(8, "little")
        hashes = np.array(
            [int.from_bytes(hashlib.blake2b(v.encode(), digest_size=8, key=key).digest(), "little") for v in values],
            dtype=np.uint64,
        )
        edges = hashes[inverse.reshape(-1)] % n
    elif mode == "random":
        edges = np.random.default_rng(seed).integers(0, n_edges, size=len(trace))
    else:
        raise TraceError(f"{trace.source}: unknown edge mode {mode!r} (one of {', '.join(MODES)})")
    return np.asarray(edges).astype(np.int32)
