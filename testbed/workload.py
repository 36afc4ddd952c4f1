"""The requests a scenario replays: the trace window of its `workload` section, assigned to draft nodes.

Both executors call `build_workload(scenario)` and so replay exactly the same requests at the same times
on the same edges.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from testbed.errors import InputError
from testbed.spec import Scenario
from traces import Trace, TraceError, assign_edges, find_trace, load_trace
from traces.model import tile_trace


@dataclass(frozen=True)
class Workload:
    trace: Trace
    edge_index: np.ndarray  # int32 index into scenario.drafts, per request
    output_tokens: np.ndarray  # int32, after max_output_tokens clipping

    def __len__(self) -> int:
        return len(self.trace)

    def for_edge(self, i: int) -> np.ndarray:
        """Indices (into the trace arrays) of the requests of draft number i, in arrival order."""
        return np.flatnonzero(self.edge_index == i)


def build_workload(scenario: Scenario) -> Workload:
    w = scenario.spec.workload
    try:
        if w.trace == "synthetic" or w.format == "synthetic":
            trace = load_trace(
                None,
                "synthetic",
                synthetic=w.synthetic.model_dump(),
                seed=scenario.spec.seed,
                start_s=w.start_s,
                duration_s=w.duration_s,
                max_requests=w.max_requests,
                time_scale=w.time_scale,
                rate_scale=w.rate_scale,
            )
        else:
            path = find_trace(w.trace)
            trace = load_trace(
                str(path),
                w.format,
                start_s=w.start_s,
                duration_s=w.duration_s,
                max_requests=w.max_requests,
                time_scale=w.time_scale,
                rate_scale=w.rate_scale,
                skip_bad_rows=w.skip_bad_rows,
                seed=scenario.spec.seed,
            )
    except TraceError as e:
        raise InputError("", f"{e} (workload of {scenario.source})") from None
    if w.tile_s is not None:
        trace = _tile(trace, w, scenario.source)
    try:
        edges = assign_edges(trace, len(scenario.drafts), w.mapping, seed=scenario.spec.seed)
    except (TraceError, ValueError) as e:
        raise InputError(scenario.source, f"workload.mapping: {e}") from None
    out = trace.output_tokens
    if w.max_output_tokens is not None:
        out = np.minimum(out, w.max_output_tokens).astype(np.int32)
    return Workload(trace=trace, edge_index=np.asarray(edges, dtype=np.int32), output_tokens=out)


def _tile(trace: Trace, w, source: str) -> Trace:
    """workload.tile_s: copies one window length apart (duration_s scaled like the arrivals; without a duration,
    the last arrival plus one mean inter-arrival gap)."""
    n = len(trace)
    if w.duration_s is not None:
        period = w.duration_s * w.time_scale / w.rate_scale
    elif n > 1:
        period = float(trace.arrival_s[-1]) * n / (n - 1)
    else:
        raise InputError(source, "workload.tile_s: a one-request window needs workload.duration_s to tile")
    try:
        return tile_trace(trace, period, w.tile_s)
    except TraceError as e:
        raise InputError(source, f"workload.tile_s: {e}") from None
