"""One trial of a sweep: the existing `sim` / `emulate` / `run` command on the trial's run directory, then its
metrics read back from the run directory's files.

Simulation trials call the CLI in the worker's process (no interpreter start per trial); emulation trials
(`emulate`, `run`) start `python -m testbed ...` as a child process, so that a trial that hangs can be stopped
(SIGINT first: the command tears its network down) and a crash cannot take the worker with it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed.sweep.file import Trial

SUMMARY_SKIP = ("slo", "targets", "per_node", "nodes")  # nested tables: kept in the run directory, not the sweep table
STOP_GRACE_S = 60.0


@dataclass(frozen=True)
class TrialJob:
    """What a worker needs to run one trial (picklable; paths absolute)."""

    trial: Trial
    run_dir: str
    cwd: str
    timeout_s: float


def argv_of(job: TrialJob) -> list[str]:
    t = job.trial
    argv = [t.mode, t.topology_path, "--out", job.run_dir, "--quiet"]
    if t.mode != "sim":
        argv += ["--net", t.net, "--timeout-s", f"{job.timeout_s:g}"]
    for s in t.overrides:
        argv += ["--set", s]
    return argv


def run_trial(job: TrialJob) -> dict[str, Any]:
    """Run the trial; a record {id, status (ok | partial | failed), error, metrics, wall_s, host, run_dir}.
    Never raises for a trial's own failure: that is recorded."""
    import socket

    t0 = time.perf_counter()
    run_dir = Path(job.run_dir)
    if run_dir.exists():
        shutil.rmtree(run_dir)  # a retried trial starts clean
    run_dir.mkdir(parents=True)
    if os.path.isdir(job.cwd):
        os.chdir(job.cwd)  # relative paths of the sweep's --set values mean what they mean on the command line
    argv = argv_of(job)
    try:
        if job.trial.mode == "sim":
            rc, err = _in_process(argv, run_dir / "trial.log")
        else:
            rc, err = _child(argv, run_dir / "trial.log", job.timeout_s)
    except Exception as e:  # noqa: BLE001 - a bug in a command: recorded with its traceback in trial.log
        with open(run_dir / "trial.log", "a") as f:
            traceback.print_exc(file=f)
        rc, err = -1, f"{type(e).__name__}: {e}"
    metrics = collect_metrics(run_dir)
    status = "ok" if rc == 0 else ("partial" if rc == 1 and metrics else "failed")
    if rc != 0 and not err:
        err = f"exit status {rc}"
    return {
        "id": job.trial.id,
        "status": status,
        "error": None if rc == 0 else err,
        "exit_code": rc,
        "metrics": metrics,
        "wall_s": round(time.perf_counter() - t0, 3),
        "host": socket.gethostname(),
        "run_dir": job.run_dir,
        "argv": ["python", "-m", "testbed", *argv],
    }


def _in_process(argv: list[str], log: Path) -> tuple[int, str | None]:
    from testbed.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as e:  # argparse
            rc = e.code if isinstance(e.code, int) else 2
    log.write_text(out.getvalue() + err.getvalue())
    return rc, _last_error(err.getvalue())


def _child(argv: list[str], log: Path, timeout_s: float) -> tuple[int, str | None]:
    with open(log, "w") as f:
        p = subprocess.Popen(
            [sys.executable, "-m", "testbed", *argv], stdout=f, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            rc = p.wait(timeout=timeout_s + STOP_GRACE_S)  # the command's own --timeout-s stops it first
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(p.pid, signal.SIGINT)  # the commands tear down what they built on Ctrl-C
            try:
                p.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
            rc = p.returncode
    text = log.read_text(errors="replace")
    if timed_out:
        return (rc if rc not in (0, None) else 1), f"trial timed out after {timeout_s + STOP_GRACE_S:g} s"
    return rc, _last_error(text)


def _last_error(text: str) -> str | None:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ln.startswith(("error:", "Traceback")) or "Error" in ln.split(":")[0]:
            return ln.removeprefix("error: ")
    for ln in reversed(lines):
        if ln.startswith("partial results"):
            return ln
    return lines[-1] if lines else None


def collect_metrics(run_dir: Path) -> dict[str, float]:
    """Flat metrics of a run directory: `sim.<metric>` / `emu.<metric>` from summary.json (statistics as
    `ttft_ms.mean`, ...), and `err.<metric>` (relative error emu vs sim) from compare.json."""
    out: dict[str, float] = {}
    for side in ("sim", "emu"):
        p = run_dir / side / "summary.json"
        if p.is_file():
            out.update(flatten(_read(p), f"{side}."))
    p = run_dir / "compare.json"
    if p.is_file():
        for row in _read(p).get("metrics", []):
            if isinstance(row.get("rel_error"), (int, float)):
                out[f"err.{row['metric']}"] = float(row["rel_error"])
    return out


def flatten(summary: dict[str, Any], prefix: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in summary.items():
        if k in SUMMARY_SKIP:
            continue
        if isinstance(v, (bool, int, float)):
            out[prefix + k] = float(v)
        elif isinstance(v, dict) and v and all(isinstance(x, (int, float)) or x is None for x in v.values()):
            for s, x in v.items():
                if x is not None:
                    out[f"{prefix}{k}.{s}"] = float(x)
    return out


def _read(p: Path) -> dict[str, Any]:
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return {}
