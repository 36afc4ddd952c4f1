"""Ctrl-C of a whole experiment: nodes stopped, partial results kept and marked, a report of what completed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a whole experiment, interrupted

ROOT = Path(__file__).resolve().parent.parent


def test_ctrl_c_during_run_keeps_partial_results_and_reports(tmp_path):
    out = tmp_path / "run"
    args = [
        sys.executable,
        "-m",
        "testbed",
        "run",
        "topologies/star-4edge.yaml",
        "--net",
        "none",
        "--out",
        str(out),
        "--quiet",
        "--set",
        "workload.trace=synthetic",
        "--set",
        "workload.synthetic.n_requests=400",
        "--set",
        "workload.synthetic.rate_rps=5",
        "--set",
        "workload.duration_s=null",
    ]
    p = subprocess.Popen(
        args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 120
        t0_file = out / "emu" / "t0"
        while not t0_file.exists() and time.monotonic() < deadline and p.poll() is None:
            time.sleep(0.2)
        assert t0_file.exists(), "the emulation never started"
        time.sleep(4.0)  # some requests complete, most are still to come
        os.killpg(p.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group
        _, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert p.returncode == 130, err
    s = json.loads((out / "emu" / "summary.json").read_text())
    assert s["partial"] is True and s["requests_completed"] < 400
    assert (out / "sim" / "summary.json").is_file() and (out / "report.html").is_file()
    assert "Partial run" in (out / "report.html").read_text()
    # no node program survived
    pids = subprocess.run(
        ["pgrep", "-f", f"nodes\\.(draft|target) .*{out}"], capture_output=True, text=True
    ).stdout.split()
    assert pids == []
