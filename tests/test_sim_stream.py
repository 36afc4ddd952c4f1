"""Streamed tables: a run written in chunks during the simulation equals the in-memory run, row for row;
its summary (a second pass over the files) equals the in-memory summary; quantiles beyond the exact limit
stay within their stated error."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from testbed import metrics
from testbed.metrics import Quantiles, summarize, summarize_dir
from testbed.sim import run as sim_run
from testbed.sim import simulate
from testbed.spec import load_scenario
from testbed.tables import read_tables

ROOT = Path(__file__).resolve().parent.parent
SYNTH = ["workload.trace=synthetic", "workload.synthetic.n_requests=300", "workload.synthetic.rate_rps=6"]


def assert_close(a, b, path="summary"):
    if isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            assert_close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, float) and isinstance(b, float):
        assert math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12), (path, a, b)
    else:
        assert a == b, (path, a, b)


@pytest.mark.parametrize(
    "topology, extra",
    [
        ("star-4edge", []),
        ("star-4edge", ["run.mode=fused", "models.temperature=0.8"]),
        ("two-tier", ["policy.window=hf", "policy.routing=round_robin"]),
        ("verifier-restart", []),
    ],
)
def test_streamed_tables_equal_the_in_memory_run(topology, extra, tmp_path, monkeypatch):
    sc = load_scenario(ROOT / f"topologies/{topology}.yaml", SYNTH + extra)
    mem = simulate(sc)
    monkeypatch.setattr(sim_run, "CHUNK_ROWS", 64)  # many chunks, requests held back behind the oldest in flight
    monkeypatch.setattr(sim_run, "STEP_EVENTS", 256)
    flushes = []
    monkeypatch.setattr(sim_run.ParquetSink, "write", _counting(sim_run.ParquetSink.write, flushes))
    streamed = simulate(sc, out=tmp_path)
    assert streamed.requests is None and streamed.events == mem.events
    req, rounds, batches = read_tables(tmp_path)
    pd.testing.assert_frame_equal(req, mem.requests, check_exact=True)
    pd.testing.assert_frame_equal(rounds, mem.rounds, check_exact=True)
    pd.testing.assert_frame_equal(batches, mem.batches, check_exact=True)
    assert len(rounds) > 10 * 64
    assert flushes.count("requests.parquet") > 2 and flushes.count("rounds.parquet") > 10
    assert_close(streamed.summary, mem.summary)
    assert not list(tmp_path.glob(".*tmp"))


def _counting(write, log):
    def counted(self, rows):
        if rows:
            log.append(self.path.name)
        return write(self, rows)

    return counted


def test_summary_of_files_in_small_batches_equals_summarize(tmp_path):
    sc = load_scenario(ROOT / "topologies/star-4edge.yaml", SYNTH)
    mem = simulate(sc)
    simulate(sc, out=tmp_path)
    assert_close(summarize_dir(tmp_path, batch_rows=37), summarize(mem.requests, mem.rounds, mem.batches))


def test_failed_run_leaves_no_table(tmp_path, monkeypatch):
    sc = load_scenario(ROOT / "topologies/star-4edge.yaml", SYNTH)

    def boom(self, rec, final=False):
        raise RuntimeError("disk full")

    monkeypatch.setattr(sim_run._Sinks, "flush", boom)
    with pytest.raises(RuntimeError):
        simulate(sc, out=tmp_path)
    assert not list(tmp_path.glob("*.parquet")) and not list(tmp_path.glob(".*tmp"))


def test_quantiles_exact_then_within_their_stated_error(monkeypatch):
    rng = np.random.default_rng(3)
    x = rng.lognormal(4.0, 1.2, 200_000)
    x[::1000] = 0.0
    q = Quantiles()
    q.add(x[:100_000])
    q.add(np.append(x[100_000:], np.nan))
    exact = metrics.dist(x)
    assert q.result() == exact  # below the limit: numpy's percentiles of every value
    monkeypatch.setattr(Quantiles, "EXACT_LIMIT", 50_000)
    h = Quantiles()
    for chunk in np.array_split(x, 7):
        h.add(chunk)
    assert h.bins is not None and not h.chunks
    r = h.result()
    assert r["mean"] == pytest.approx(exact["mean"], rel=1e-12)
    for k in ("p50", "p90", "p99"):
        assert abs(r[k] - exact[k]) <= 1.5 * Quantiles.RELATIVE_ERROR * exact[k], k
