"""The examples of the Python API run as documented (`python -m examples.NAME` from the repository root);
emulations on loopback (--net none) to stay short."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str, timeout: float = 300) -> str:
    r = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def _row(out: str, label: str) -> tuple[float, float]:
    m = re.search(rf"^{re.escape(label)}\s+(\S+)\s+(\S+)", out, re.M)
    assert m, out
    return float(m.group(1)), float(m.group(2))


def test_simulate_a_topology_file():
    out = _run(
        "examples.simulate_topology",
        "topologies/star-4edge.yaml",
        "--set",
        "workload.trace=synthetic",
        "--set",
        "workload.duration_s=10",
    )
    assert out.startswith("star-4edge: 4 drafts, 1 targets, window static:4")
    m = re.search(r"(\d+) requests in", out)
    assert m and int(m.group(1)) > 0
    assert "tokens per edge: edge0" in out


@pytest.mark.slow
def test_build_in_python_run_emulated_and_simulated(tmp_path):
    out = _run("examples.build_and_run", "--net", "none", "--out", str(tmp_path / "run"), "--requests", "8")
    assert _row(out, "requests completed") == (8.0, 8.0)
    emu_acc, sim_acc = _row(out, "acceptance rate")
    assert emu_acc == pytest.approx(sim_acc, abs=1e-3)  # same acceptance sequences on both sides (profiled)
    assert (tmp_path / "run" / "emu" / "requests.parquet").is_file()


@pytest.mark.slow
def test_custom_window_policy_in_both_executors(tmp_path):
    import pandas as pd

    out = _run("examples.custom_window", "--net", "none", "--out", str(tmp_path / "run"), "--requests", "8")
    assert "window policy py:examples.custom_window:rtt_aware" in out
    assert _row(out, "requests completed") == (8.0, 8.0)
    # the node programs ran the policy: windows vary (static:4 would draft 4, clamped only at the end)
    rounds = pd.read_parquet(tmp_path / "run" / "emu" / "rounds.parquet")
    assert rounds["gamma"].nunique() > 2
    emu_gamma, sim_gamma = _row(out, "mean gamma")
    assert emu_gamma != 4.0 and sim_gamma != 4.0
