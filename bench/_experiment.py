"""What the fidelity benchmarks share: run `python -m testbed run` once and read its compare.json."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_experiment(
    topology: Path, out: Path, sets: list[str], net: str, extra: tuple[str, ...] = ()
) -> tuple[dict[str, dict] | None, subprocess.CompletedProcess]:
    """One `testbed run` (quiet; `extra`: more of its options); returns ({metric: compare.json row} or None when no
    comparison was written, the finished process)."""
    cmd = [sys.executable, "-m", "testbed", "run", str(topology), "--net", net, "--out", str(out), "--quiet", *extra]
    for s in sets:
        cmd += ["--set", s]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    doc_path = out / "compare.json"
    if not doc_path.is_file():
        print(f"   failed (exit {r.returncode}): {r.stderr.strip().splitlines()[-1:]}", flush=True)
        return None, r
    return {m["metric"]: m for m in json.loads(doc_path.read_text())["metrics"]}, r
