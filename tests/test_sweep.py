"""Sweeps: the sweep file (expansion, strict errors), and a small sweep on a real local Ray cluster (a head and a
worker node on 127.0.0.1) with simulation trials, one emulation trial (`run --net none`) and one failing trial;
then a rerun that resumes (nothing redone)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from testbed.errors import InputError
from testbed.sweep.file import load_sweep

ROOT = Path(__file__).resolve().parent.parent
STAR = ROOT / "topologies" / "star-4edge.yaml"
SMALL = {"workload.trace": "synthetic", "workload.synthetic.n_requests": 12, "workload.synthetic.rate_rps": 6}


def _write(p: Path, text: str) -> Path:
    p.write_text(text)
    return p


def _set_block() -> str:
    return "set:\n" + "".join(f"  {k}: {v}\n" for k, v in SMALL.items())


def test_grid_and_random_expansion(tmp_path):
    s = load_sweep(
        _write(
            tmp_path / "g.yaml",
            f"topology: {STAR}\nseeds: 2\n{_set_block()}"
            "vary:\n  policy.window: [static:2, hf]\n  edges.0.link.delay_ms: [1, 5, 20]\n",
        )
    )
    assert len(s.trials) == 2 * 3 * 2 and s.dims == ("policy.window", "edges.0.link.delay_ms")
    assert len({t.id for t in s.trials}) == len(s.trials)
    assert all("seed=1" in t.overrides or "seed=2" in t.overrides for t in s.trials)
    again = load_sweep(tmp_path / "g.yaml")
    assert [t.id for t in again.trials] == [t.id for t in s.trials]  # stable ids: what makes resuming work
    r = load_sweep(
        _write(
            tmp_path / "r.yaml",
            f"topology: {STAR}\nsearch: random\nsamples: 5\nsampler_seed: 3\n"
            "vary:\n  edges.0.link.delay_ms: {loguniform: [1, 100]}\n  policy.window: [static:2, hf]\n",
        )
    )
    vals = [t.param_dict()["edges.0.link.delay_ms"] for t in r.trials]
    assert len(r.trials) == 5 and all(1 <= v <= 100 for v in vals) and len(set(vals)) == 5


@pytest.mark.parametrize(
    "body, where, what",
    [
        ("vary:\n  policy.window: [static:2, bogus]\n", ":3", "unknown window policy"),
        ("vary:\n  policy.nope: [1]\n", ":3", "unknown key"),
        ("search: random\nsamples: 2\nvary:\n  links.0.delay_ms: {uniform: [5]}\n", ":5", "lo < hi"),
        ("vary:\n  links.0.delay_ms: {uniform: [1, 5]}\n", ":3", "only with search: random"),
        ("mode: simulate\n", ":2", "mode"),
        ("seedz: 3\n", ":2", "unknown key"),
    ],
)
def test_bad_sweep_files_name_the_line(tmp_path, body, where, what):
    p = _write(tmp_path / "bad.yaml", f"topology: {STAR}\n{body}")
    with pytest.raises(InputError) as e:
        load_sweep(p)
    assert str(e.value).startswith(f"{p}{where}:") and what in str(e.value)


def test_missing_topology_exits_2(tmp_path):
    p = _write(tmp_path / "bad.yaml", "topology: nowhere.yaml\n")
    r = subprocess.run(
        [sys.executable, "-m", "testbed", "sweep", str(p)], cwd=ROOT, check=False, capture_output=True, text=True
    )
    assert (
        r.returncode == 2
        and f"{p}:1: topology 'nowhere.yaml'" in r.stderr
        and not (ROOT / "runs" / "sweep-bad").exists()
    )


def _descendants(pid: int) -> set[int]:
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        try:
            kids = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        for k in map(int, kids):
            if k not in out:
                out.add(k)
                todo.append(k)
    return out


def _listening(pids: set[int]) -> list[str]:
    r = subprocess.run(["ss", "-Hltnp"], check=False, capture_output=True, text=True)
    return [ln for ln in r.stdout.splitlines() if any(f"pid={p}," in ln for p in pids)]


@pytest.fixture
def ray_cluster(tmp_path_factory):
    """A head and a worker Ray node (separate processes, 127.0.0.1); shut down at teardown, also on failure."""
    temp = tmp_path_factory.mktemp("ray", numbered=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "ray_cluster.py"), str(temp)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        address = p.stdout.readline().strip()
        assert address.startswith("127.0.0.1:"), f"cluster did not start ({address!r})"
        yield address, p.pid
    finally:
        p.stdin.close()  # the helper shuts its nodes down
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@pytest.mark.slow
def test_sweep_on_local_ray_cluster(tmp_path, ray_cluster):
    address, helper = ray_cluster
    listening = _listening(_descendants(helper))
    hosts = {ln.split()[3].rsplit(":", 1)[0].strip("[]").removeprefix("::ffff:") for ln in listening}
    assert listening and hosts == {"127.0.0.1"}, "\n".join(listening)  # nothing listens off loopback
    sweep = _write(
        tmp_path / "s.yaml",
        f"name: t\ntopology: {STAR}\nseeds: [1, 2]\n{_set_block()}"
        "vary:\n"
        "  - policy.window: [static:2, static:4]\n"
        "  - {mode: run, net: none, seed: [1], policy.window: [static:4]}\n"
        "  - {workload.trace: [/nonexistent/trace.csv], seed: [1]}\n",
    )
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "testbed",
        "sweep",
        str(sweep),
        "--address",
        address,
        "--out",
        str(out),
        "--progress-every",
        "0",
    ]
    r = subprocess.run(
        cmd,
        cwd=ROOT,
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert r.returncode == 1, r.stdout + r.stderr  # one trial failed, the others completed
    assert f"ray cluster {address} (2 nodes, 2 CPUs, 1 emulation slots)" in r.stdout
    assert "sweep: 6/6 trials (1 failed)" in r.stderr and "ETA" in r.stderr  # progress lines without a terminal
    df = pd.read_parquet(out / "trials.parquet")
    assert len(df) == 6 and df["status"].value_counts().to_dict() == {"ok": 5, "failed": 1}
    bad = df[df["status"] == "failed"].iloc[0]
    assert "nonexistent" in bad["error"]
    sims = df[(df["mode"] == "sim") & (df["status"] == "ok")]
    assert len(sims) == 4 and sims["sim.requests_completed"].eq(12).all()
    emu = df[df["mode"] == "run"].iloc[0]
    assert emu["status"] == "ok" and emu["emu.requests_completed"] == 12 and emu["sim.requests_completed"] == 12
    assert pd.notna(emu["err.ttft_ms.mean"]) and pd.notna(emu["err.tpot_ms.mean"])  # fidelity errors
    assert (out / "trials" / emu["trial"] / "compare.json").is_file() and (out / "summary.html").is_file()
    html = (out / "summary.html").read_text()
    assert "policy.window" in html and "nonexistent" in html

    before = {p.name: p.stat().st_mtime_ns for p in (out / "records").iterdir()}
    r2 = subprocess.run([*cmd, "--workers", "0"], cwd=ROOT, check=False, capture_output=True, text=True, timeout=300)
    assert "6 finished earlier, 0 to run" in r2.stdout, r2.stdout + r2.stderr  # resumed: nothing redone
    assert {p.name: p.stat().st_mtime_ns for p in (out / "records").iterdir()} == before


def test_summary_follows_the_swept_dimensions(tmp_path):
    """Two swept dimensions (one numeric with many values: binned) -> a line plot per dimension and one heatmap;
    a failed trial is listed with its error."""
    import json

    import numpy as np

    from analysis.sweep_report import build

    rng = np.random.default_rng(0)
    rows = []
    for i in range(24):
        delay, window = float(rng.uniform(1, 100)), ["static:2", "static:4", "hf"][i % 3]
        rows.append(
            {
                "trial": f"t{i}",
                "status": "ok",
                "error": None,
                "seed": i % 2 + 1,
                "policy.window": window,
                "links.0.delay_ms": delay,
                "sim.ttft_ms.mean": 20 + delay + rng.normal(),
                "sim.output_token_throughput_tps": 300 - delay,
            }
        )
    rows.append(
        {
            "trial": "bad",
            "status": "failed",
            "error": "trace not found: x.csv",
            "seed": 1,
            "policy.window": "hf",
            "links.0.delay_ms": 5.0,
        }
    )
    pd.DataFrame(rows).to_parquet(tmp_path / "trials.parquet")
    (tmp_path / "sweep.json").write_text(
        json.dumps(
            {
                "name": "t",
                "source": "s.yaml",
                "search": "random",
                "dims": ["policy.window", "links.0.delay_ms"],
                "runner": "serial",
                "trials": [{"id": r["trial"]} for r in rows],
            }
        )
    )
    html = build(tmp_path).read_text()
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "sweep-heat-0.png",
        "sweep-line-0.png",
        "sweep-line-1.png",
    ]
    assert html.count("<figure") == 3 and "trace not found: x.csv" in html and "sim.ttft_ms.mean" in html
