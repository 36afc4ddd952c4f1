"""The simulator's compiled core (testbed/compiled.py): a stale or unrecorded build is never imported, DSD_PURE=1
forces the pure modules, and a compiled run's tables equal the pure reference's exactly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from testbed import compiled
from testbed.sim import simulate
from testbed.spec import load_scenario

ROOT = Path(__file__).resolve().parent.parent
# a synthetic workload (6 req/s), so the comparison runs wherever the suite does, traces or not
WORKLOAD = ["workload.trace=synthetic", "workload.synthetic.rate_rps=6", "workload.duration_s=30"]
SCENARIOS = [  # distributed with hf windows; jitter + loss + two edge groups; fused sampling; a crash schedule
    ("star-4edge", [*WORKLOAD, "policy.window=hf"]),
    ("hetero-edge", WORKLOAD),
    ("star-4edge", [*WORKLOAD, "run.mode=fused", "models.temperature=0.7"]),
    ("verifier-restart", WORKLOAD),
]
PURE_RUN = """
import sys
from pathlib import Path
import testbed.rounds, testbed.sim.engine
assert testbed.rounds.__file__.endswith(".py") and testbed.sim.engine.__file__.endswith(".py")
from testbed.sim import simulate
from testbed.spec import load_scenario
r = simulate(load_scenario(sys.argv[1], sys.argv[3:]))
out = Path(sys.argv[2])
for name in ("requests", "rounds", "batches"):
    getattr(r, name).to_parquet(out / f"{name}.parquet")
"""


def test_pure_finder_loads_sources():
    spec = compiled._PureFinder().find_spec("testbed.rounds")
    assert spec is not None and spec.origin == str(ROOT / "testbed" / "rounds.py")
    assert compiled._PureFinder().find_spec("numpy") is None
    assert compiled._PureFinder().find_spec("testbed.sim") is None  # packages: the default finder


def test_stale_or_missing_record_is_not_usable(tmp_path, monkeypatch):
    monkeypatch.setattr(compiled, "built", lambda: True)
    monkeypatch.setattr(compiled, "RECORD", tmp_path / "_compiled.json")
    assert not compiled.usable()  # no record
    good = compiled.record()
    compiled.RECORD.write_text(json.dumps(good))
    assert compiled.usable()
    compiled.RECORD.write_text(json.dumps(dict(good, source_sha256="0" * 64)))  # a source changed since the build
    assert not compiled.usable()
    compiled.RECORD.write_text(json.dumps(dict(good, extensions=good["extensions"] + ["testbed/x.so"])))
    assert not compiled.usable()
    compiled.RECORD.write_text(json.dumps(good))
    monkeypatch.setenv(compiled.PURE_ENV, "1")
    assert not compiled.usable()


def test_source_hash_follows_the_sources(tmp_path, monkeypatch):
    for m in compiled.MODULES:
        dst = tmp_path.joinpath(*m.split(".")).with_suffix(".py")
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(compiled.source_path(m).read_bytes())
    monkeypatch.setattr(compiled, "ROOT", tmp_path)
    h = compiled.source_hash()
    assert h == compiled.source_hash()
    p = compiled.source_path(compiled.MODULES[-1])
    p.write_text(p.read_text() + "\n# edited\n")
    assert compiled.source_hash() != h


@pytest.mark.slow
@pytest.mark.skipif(
    not compiled.active(), reason="the compiled core is not built (python -m testbed.compile_core build)"
)
@pytest.mark.parametrize("topology, sets", SCENARIOS)
def test_compiled_run_equals_pure_run(tmp_path, topology, sets):
    path = str(ROOT / "topologies" / f"{topology}.yaml")
    env = dict(os.environ, **{compiled.PURE_ENV: "1"})
    subprocess.run(
        [sys.executable, "-c", PURE_RUN, path, str(tmp_path), *sets], check=True, env=env, cwd=ROOT, timeout=600
    )
    r = simulate(load_scenario(path, sets))
    assert len(r.rounds) > 100
    for name in ("requests", "rounds", "batches"):
        pd.testing.assert_frame_equal(getattr(r, name), pd.read_parquet(tmp_path / f"{name}.parquet"), check_exact=True)
