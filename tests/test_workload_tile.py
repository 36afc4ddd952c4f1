"""Time-tiling of a trace window (workload.tile_s): copies one window apart, ids renumbered, cut at the span."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from testbed.errors import InputError
from testbed.spec import load_scenario
from testbed.workload import build_workload

ROOT = Path(__file__).resolve().parent.parent
SYNTH = ["workload.trace=synthetic", "workload.synthetic.n_requests=50", "workload.synthetic.rate_rps=5"]


def test_tiles_repeat_the_window_one_period_apart():
    base = build_workload(load_scenario(ROOT / "topologies/star-4edge.yaml", SYNTH + ["workload.duration_s=8"]))
    wl = build_workload(
        load_scenario(
            ROOT / "topologies/star-4edge.yaml",
            SYNTH + ["workload.duration_s=8", "workload.rate_scale=2", "workload.tile_s=30"],
        )
    )
    b, t = base.trace, wl.trace
    n = len(b)
    assert np.all(np.diff(t.arrival_s) >= 0) and t.arrival_s[-1] < 30
    period = 8 / 2  # the window's length, scaled like the arrivals
    assert len(t) == sum(int(np.sum(b.arrival_s / 2 + k * period < 30)) for k in range(8))
    np.testing.assert_array_equal(t.request_id, np.arange(len(t)))
    np.testing.assert_allclose(t.arrival_s[n : 2 * n], b.arrival_s / 2 + period)
    np.testing.assert_array_equal(t.output_tokens[n : 2 * n], b.output_tokens)
    np.testing.assert_array_equal(t.prompt_tokens[:n], b.prompt_tokens)
    assert len(wl.edge_index) == len(t)


def test_without_duration_the_period_is_the_last_arrival_plus_a_mean_gap():
    wl = build_workload(
        load_scenario(ROOT / "topologies/star-4edge.yaml", SYNTH + ["workload.duration_s=null", "workload.tile_s=1000"])
    )
    t = wl.trace
    first = t.arrival_s[:50]
    period = first[-1] * 50 / 49
    assert t.arrival_s[50] == pytest.approx(period)


def test_one_request_without_duration_cannot_tile():
    with pytest.raises(InputError, match="tile_s"):
        build_workload(
            load_scenario(
                ROOT / "topologies/star-4edge.yaml",
                SYNTH + ["workload.duration_s=null", "workload.max_requests=1", "workload.tile_s=10"],
            )
        )
