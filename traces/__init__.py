"""Request traces: loaders for the public LLM request-trace formats (Azure 2023/2024, BurstGPT, Mooncake),
the project's native JSONL, a synthetic generator, and request-to-edge mapping. Formats: FORMATS.md."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable

from . import azure, burstgpt, mooncake, native
from .errors import TraceError
from .formats import detect_format
from .locate import find_trace
from .mapping import assign_edges
from .model import ParsedRows, Trace, Window, build_trace
from .synthetic import generate_synthetic, synthetic_rows

__all__ = ["FORMATS", "Trace", "TraceError", "assign_edges", "find_trace", "generate_synthetic", "load_trace"]

FORMATS = ("azure", "burstgpt", "mooncake", "native", "synthetic")
_PARSERS: dict[str, Callable[[str, bool], ParsedRows]] = {
    "azure": azure.parse,
    "burstgpt": burstgpt.parse,
    "mooncake": mooncake.parse,
    "native": native.parse,
}


def load_trace(
    path: str | os.PathLike[str] | None,
    fmt: str = "auto",
    *,
    start_s: float = 0.0,
    duration_s: float | None = None,
    max_requests: int | None = None,
    time_scale: float = 1.0,
    rate_scale: float = 1.0,
    skip_bad_rows: bool = False,
    synthetic: dict | None = None,
    seed: int = 0,
) -> Trace:
    """Load a trace file (a path, file name or alias found by :func:`find_trace`) or generate one
    (``fmt="synthetic"``, parameters of :func:`generate_synthetic` in ``synthetic``, ``seed`` as default seed).

    Keeps requests with ``start_s <= t - t0 < start_s + duration_s`` (original trace time, t0 = earliest
    request of the file), then the first ``max_requests``; re-bases arrivals to 0 and multiplies them by
    ``time_scale / rate_scale``. Malformed rows raise TraceError with the line, or are skipped and counted.
    """
    window = Window(start_s, duration_s, max_requests, time_scale, rate_scale)
    if fmt == "synthetic":
        params = dict(synthetic or {})
        unknown = sorted(set(params) - set(inspect.signature(synthetic_rows).parameters))
        if unknown:
            raise TraceError(f"synthetic: unknown parameter(s) {', '.join(unknown)}")
        params.setdefault("seed", seed)
        missing = [k for k in ("n_requests", "rate_rps", "prompt_mean", "output_mean") if k not in params]
        if missing:
            raise TraceError(f"synthetic: missing parameter(s) {', '.join(missing)}")
        window.check("synthetic")
        rows, source = synthetic_rows(**params)
        return build_trace(rows, source, window)
    if fmt != "auto" and fmt not in _PARSERS:
        raise TraceError(f"{path}: unknown trace format {fmt!r} (one of auto, {', '.join(FORMATS)})")
    if path is None:
        raise TraceError("None: a trace path is needed unless fmt='synthetic'")
    source = str(find_trace(path))
    window.check(source)
    fmt = detect_format(source) if fmt == "auto" else fmt
    return build_trace(_PARSERS[fmt](source, skip_bad_rows), source, window)
